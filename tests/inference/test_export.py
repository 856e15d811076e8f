"""vit_jax/inference/export.py through scripts/export.py: each format of a run's
classifier, read back and run."""
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_config
from scripts import export as export_command
from fake_params import random_flat
from vit_jax import models
from vit_jax.data.builders import fashion_mnist_local
from vit_jax.data.preprocess import general_ops
from vit_jax.inference import export, serving
from vit_jax.models import build, npz, timm_format
from vit_jax.runtime import cli
from vit_jax.train import checkpoints, workdir_files
from repo_root import REPO
from torch_libraries import library

TOLERANCE = 1e-5


def run_export(*flags):
  """scripts/export.py with ``flags``, run in this process."""
  cli.call(export_command.main, export_command.FLAGS, ["export.py", *flags])


def write_run(workdir, config, steps=(7,)):
  """A workdir as a finished run leaves it: config.json and orbax checkpoints.

  Every parameter gets a random value (a fresh head would be all zeros), the
  EMA other ones than the raw parameters. Returns the parameters the run
  evaluates with, by step, and its model.
  """
  os.makedirs(workdir)
  with open(os.path.join(workdir, workdir_files.CONFIG_FILE), "w") as f:
    f.write(config.to_json_best_effort())
  model = build.model_from_config(config)
  abstract = build.abstract_params(model, config.image_size)
  manager = checkpoints.make_manager(workdir)
  evaluated = {}
  for step in steps:
    params = npz.unflatten(random_flat(abstract, seed=step))
    state = {"step": np.int32(step), "params": params, "opt_state": np.zeros(())}
    if config.ema_decay:
      state["ema_params"] = npz.unflatten(random_flat(abstract, seed=100 + step))
    checkpoints.save(manager, step, state, {"examples_seen": 0})
    evaluated[step] = state.get("ema_params", params)
  manager.wait_until_finished()
  return model, evaluated


def make_run(data_dir, workdir, *, classifier="token", representation_size=None,
             ema=False, steps=(7,)):
  config = tiny_config(data_dir, ema_decay=0.999 if ema else 0.0, **{
      "model.classifier": classifier, "model.representation_size": representation_size})
  model, evaluated = write_run(str(workdir), config, steps)
  return config, model, evaluated


def images(config, batch, seed=0):
  size = config.image_size
  return np.random.default_rng(seed).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)


def logits_of(model, params, batch):
  """The model's logits, compiled as a whole like every exported function."""
  apply = jax.jit(model.apply, static_argnames="train")
  return np.asarray(apply({"params": params}, batch, train=False))


@pytest.mark.parametrize("classifier,representation_size,ema", [
    ("token", None, False), ("token", 16, True), ("gap", None, True), ("gap", 16, False)])
def test_npz_export_loads_back_to_identical_params_and_logits(
    fashion_data_dir, tmp_path, capsys, classifier, representation_size, ema):
  config, model, evaluated = make_run(
      fashion_data_dir, tmp_path / "run", classifier=classifier,
      representation_size=representation_size, ema=ema)
  out = str(tmp_path / "params.npz")
  run_export(f"--workdir={tmp_path / 'run'}", "--format=npz", f"--out={out}")
  assert "read back bit for bit" in capsys.readouterr().out

  loaded, params = npz.load_npz(out), evaluated[7]  # the EMA where kept
  assert jax.tree.structure(loaded) == jax.tree.structure(params)
  for (name, a), b in zip(npz.flatten(loaded).items(), jax.tree.leaves(params)):
    assert a.dtype == b.dtype, name
    np.testing.assert_array_equal(a, b, err_msg=name)
  batch = images(config, 4)
  logits = logits_of(model, params, batch)
  assert np.abs(logits).max() > 0.1  # a meaningful comparison, not of zeros
  np.testing.assert_array_equal(logits_of(model, loaded, batch), logits)


def test_npz_export_of_an_earlier_step(fashion_data_dir, tmp_path, capsys):
  _, _, evaluated = make_run(fashion_data_dir, tmp_path / "run", steps=(3, 7))
  out = str(tmp_path / "step3.npz")
  run_export(f"--workdir={tmp_path / 'run'}", "--step=3", "--format=npz", f"--out={out}")
  jax.tree.map(np.testing.assert_array_equal, npz.load_npz(out), evaluated[3])
  with pytest.raises(SystemExit, match=r"^error: no committed checkpoint of step 5 .* "
                                       r"it has steps \[3, 7\]"):
    run_export(f"--workdir={tmp_path / 'run'}", "--step=5", "--format=npz", f"--out={out}")



def test_npz_export_refuses_a_name_without_npz_and_makes_its_directory(
    fashion_data_dir, tmp_path, capsys):
  """Only a name ending in .npz is read back by config.init and --checkpoint."""
  _, _, evaluated = make_run(fashion_data_dir, tmp_path / "run")
  with pytest.raises(SystemExit, match=r"^error: --out=.*/vit: an npz export is a file "
                                       r"whose name ends in \.npz \(e\.g\. vit\.npz\)"):
    run_export(f"--workdir={tmp_path / 'run'}", "--format=npz", f"--out={tmp_path / 'vit'}")
  assert not os.path.exists(tmp_path / "vit")
  out = str(tmp_path / "exports" / "vit.npz")
  run_export(f"--workdir={tmp_path / 'run'}", "--format=npz", f"--out={out}")
  jax.tree.map(np.testing.assert_array_equal, npz.load_npz(out), evaluated[7])


@pytest.mark.parametrize("export_format", ["serving", "timm"])
def test_directory_formats_refuse_an_existing_file_in_one_line(
    fashion_data_dir, tmp_path, export_format):
  make_run(fashion_data_dir, tmp_path / "run")
  out = tmp_path / "vit.npz"
  out.write_bytes(b"an earlier export")
  with pytest.raises(SystemExit, match=rf"^error: --out=.*/vit\.npz is an existing file; "
                                       rf"the {export_format} format writes a directory"):
    run_export(f"--workdir={tmp_path / 'run'}", f"--format={export_format}", f"--out={out}")
  assert out.read_bytes() == b"an earlier export"


def files_under(directory):
  """{path: bytes} of every file under ``directory``."""
  return {path: path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("export_format", ["hf", "timm", "serving", "saved_model"])
def test_an_export_into_a_runs_workdir_is_refused_and_leaves_the_run_as_it_was(
    fashion_data_dir, tmp_path, export_format):
  """--out=WORKDIR once replaced the run's config.json with the export's."""
  make_run(fashion_data_dir, tmp_path / "run")
  before = files_under(tmp_path / "run")
  with pytest.raises(SystemExit, match=rf"^error: --out=.*/run holds a vit_jax run "
                                       rf"\(.*/run/config\.json\), whose files an export "
                                       rf"must neither replace nor mix with: name a new "
                                       rf"directory, or an earlier {export_format} export's$"):
    run_export(f"--workdir={tmp_path / 'run'}", f"--format={export_format}",
               f"--out={tmp_path / 'run'}")
  assert files_under(tmp_path / "run") == before
  assert workdir_files.read_config(str(tmp_path / "run")).variant  # evaluate reads it
  (tmp_path / "metrics_only").mkdir()  # a run is known by any of its files
  (tmp_path / "metrics_only" / "metrics.jsonl").write_text("{}\n")
  with pytest.raises(SystemExit, match=r"holds a vit_jax run \(.*/metrics_only/metrics\.jsonl\)"):
    run_export(f"--workdir={tmp_path / 'run'}", f"--format={export_format}",
               f"--out={tmp_path / 'metrics_only'}")
  assert sorted(os.listdir(tmp_path / "metrics_only")) == ["metrics.jsonl"]


def test_a_directory_export_replaces_an_earlier_one_of_its_format_and_no_other_file(
    fashion_data_dir, tmp_path, monkeypatch):
  """Re-exporting replaces an earlier export's files; a file of the same name
  that no export of the format wrote (another format's, a user's) is refused
  by name before anything is written."""
  make_run(fashion_data_dir, tmp_path / "run")
  monkeypatch.setitem(sys.modules, "timm", None)  # the weights alone are checked
  monkeypatch.setitem(sys.modules, "transformers", None)
  timm_out, mine = tmp_path / "timm", tmp_path / "mine"
  run_export(f"--workdir={tmp_path / 'run'}", "--format=timm", f"--out={timm_out}")
  mine.mkdir()
  (mine / "config.json").write_text('{"a user\'s": "own file"}')
  earlier = {**files_under(timm_out), **files_under(mine)}
  for export_format, out, held in (("hf", timm_out, "config.json of Hugging Face's, "
                                    "with 'model_type'"),
                                   ("timm", mine, "config.json of timm's, with 'architecture'")):
    path = re.escape(str(out))
    with pytest.raises(SystemExit, match=rf"^error: --out={path}: the {export_format} export "
                                         rf"would replace {path}/config\.json, and {path} holds "
                                         rf"no earlier {export_format} export \(its {held}\)"):
      run_export(f"--workdir={tmp_path / 'run'}", f"--format={export_format}", f"--out={out}")
  assert {**files_under(timm_out), **files_under(mine)} == earlier
  (timm_out / "model.safetensors").write_bytes(b"a damaged earlier export")
  run_export(f"--workdir={tmp_path / 'run'}", "--format=timm", f"--out={timm_out}")
  assert files_under(timm_out) == {path: data for path, data in earlier.items()
                                   if path.parent == timm_out}


def test_a_file_a_saved_model_writes_is_checked_before_it_replaces_anything(tmp_path):
  """A SavedModel's names are TensorFlow's: `staged` checks those written."""
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "saved_model.pb").write_bytes(b"someone else's")
  with pytest.raises(ValueError, match=r"the saved_model export would replace "
                                       r".*/out/saved_model\.pb, and .*/out holds no earlier "
                                       r"saved_model export"):
    with export.staged(str(tmp_path / "out"), "saved_model") as staging:
      with open(os.path.join(staging, "saved_model.pb"), "wb") as f:
        f.write(b"a new model")
  assert files_under(tmp_path) == {tmp_path / "out" / "saved_model.pb": b"someone else's"}
  assert os.listdir(tmp_path / "out") == ["saved_model.pb"]  # no staging left


@pytest.mark.parametrize("export_format, name", [
    ("npz", "x.npz"), ("npz", "deeper/x.npz"), ("serving", "serving")])
def test_an_out_inside_an_existing_file_is_refused_in_one_line(
    fashion_data_dir, tmp_path, export_format, name):
  make_run(fashion_data_dir, tmp_path / "run")
  (tmp_path / "vit.npz").write_bytes(b"an earlier export")
  out = tmp_path / "vit.npz" / name
  with pytest.raises(SystemExit, match=rf"^error: --out={re.escape(str(out))}: "
                                       rf"{re.escape(str(tmp_path))}/vit\.npz is a "
                                       rf"file, so nothing can be written inside it; name a "
                                       rf"path in a directory, new or existing$"):
    run_export(f"--workdir={tmp_path / 'run'}", f"--format={export_format}", f"--out={out}")
  assert (tmp_path / "vit.npz").read_bytes() == b"an earlier export"


def test_a_failed_export_leaves_the_earlier_one_whole(fashion_data_dir, tmp_path, monkeypatch):
  """Written beside --out and moved there once read back: a failure (here a
  full disk while writing the parameters) leaves no new contract beside the
  old function, nor a truncated .npz, and no partial files."""
  make_run(fashion_data_dir, tmp_path / "run")
  serving_out, npz_out = tmp_path / "exports" / "serving", tmp_path / "exports" / "vit.npz"
  run_export(f"--workdir={tmp_path / 'run'}", "--format=serving", f"--out={serving_out}")
  run_export(f"--workdir={tmp_path / 'run'}", "--format=npz", f"--out={npz_out}")
  (serving_out / "notes.txt").write_text("a user's own file")
  before = {path: path.read_bytes() for path in sorted((tmp_path / "exports").rglob("*"))
            if path.is_file()}

  def full_disk(params, path):
    with open(path, "wb") as f:
      f.write(b"PK\x03\x04 half an npz")
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(npz, "save_npz", full_disk)
  for export_format, out in (("serving", serving_out), ("npz", npz_out)):
    with pytest.raises(OSError, match="No space left on device"):
      run_export(f"--workdir={tmp_path / 'run'}", f"--format={export_format}", f"--out={out}")
  after = {path: path.read_bytes() for path in sorted((tmp_path / "exports").rglob("*"))
           if path.is_file()}
  assert after == before
  assert sorted(os.listdir(tmp_path / "exports")) == ["serving", "vit.npz"]


def test_an_npz_export_writes_through_a_link_with_the_umasks_mode(fashion_data_dir, tmp_path):
  """Replaced by a rename once read back, yet as a plain write would leave it:
  a link to the file stays a link to the new one, readable as umask says."""
  _, _, evaluated = make_run(fashion_data_dir, tmp_path / "run")
  (tmp_path / "store").mkdir()
  (tmp_path / "store" / "vit.npz").write_bytes(b"an earlier export")
  os.symlink(tmp_path / "store" / "vit.npz", tmp_path / "current.npz")
  umask = os.umask(0o022)
  try:
    run_export(f"--workdir={tmp_path / 'run'}", "--format=npz",
               f"--out={tmp_path / 'current.npz'}")
  finally:
    os.umask(umask)
  assert os.path.islink(tmp_path / "current.npz")
  assert os.stat(tmp_path / "store" / "vit.npz").st_mode & 0o777 == 0o644
  jax.tree.map(np.testing.assert_array_equal, npz.load_npz(str(tmp_path / "current.npz")),
               evaluated[7])
  assert sorted(os.listdir(tmp_path / "store")) == ["vit.npz"]


def test_platforms_are_checked_and_a_foreign_ones_export_is_not_run_here(
    fashion_data_dir, tmp_path, capsys):
  make_run(fashion_data_dir, tmp_path / "run")
  out = tmp_path / "serving"
  for platforms, named in (("gpu", ", not gpu"), ("", "")):
    with pytest.raises(SystemExit, match=rf"^error: --platforms={platforms}: the serving "
                                         rf"format is lowered for one or more of cpu, cuda, "
                                         rf"rocm, tpu{named}$"):
      run_export(f"--workdir={tmp_path / 'run'}", "--format=serving", f"--out={out}",
                 f"--platforms={platforms}")
  assert not out.exists()
  run_export(f"--workdir={tmp_path / 'run'}", "--format=serving", f"--out={out}",
             "--platforms=tpu")
  assert capsys.readouterr().out.endswith(
      "its logits are not checked: this host's platform is none of tpu\n")
  with open(out / serving.CONTRACT_FILE) as f:
    assert json.load(f)["platforms"] == ["tpu"]
  assert sorted(os.listdir(tmp_path)) == ["run", "serving"]  # no partial directory left


# Runs in a fresh interpreter that imports vit_jax/inference/serving.py by its path and
# reports which modules of the training code (or flax, TF) got imported.
LOAD_BY_PATH = """
import importlib.util, json, sys
import numpy as np
spec = importlib.util.spec_from_file_location("serving", sys.argv[1])
serving = importlib.util.module_from_spec(spec)
spec.loader.exec_module(serving)
images = np.load(sys.argv[2])
for directory in sys.argv[3:]:
  classifier = serving.load(directory)
  np.save(directory + "/logits.npy", classifier(images))
  np.save(directory + "/logits_1.npy", classifier(images[:1]))
print(json.dumps(sorted(m for m in sys.modules
                        if m.split(".")[0] in ("vit_jax", "configs", "flax", "tensorflow"))))
"""


def test_serving_artefact_in_a_fresh_process_gives_the_model_logits(
    fashion_data_dir, tmp_path, capsys):
  runs = {}
  for classifier, representation_size in (("token", 16), ("gap", None)):
    name = f"{classifier}_{representation_size}"
    config, model, evaluated = make_run(
        fashion_data_dir, tmp_path / name, classifier=classifier,
        representation_size=representation_size)
    out = str(tmp_path / f"{name}_serving")
    run_export(f"--workdir={tmp_path / name}", "--format=serving", f"--out={out}")
    assert "max |logit difference| to the model" in capsys.readouterr().out
    runs[out] = (config, model, evaluated[7])

  batch = images(config, 5)
  np.save(tmp_path / "images.npy", batch)
  result = subprocess.run(
      [sys.executable, "-c", LOAD_BY_PATH, os.path.join(REPO, "vit_jax", "inference", "serving.py"),
       str(tmp_path / "images.npy"), *runs],
      cwd=tmp_path, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout.splitlines()[-1]) == []

  for out, (config, model, params) in runs.items():
    expected = logits_of(model, params, batch)
    served = np.load(os.path.join(out, "logits.npy"))
    assert served.shape == (5, 10)
    np.testing.assert_allclose(served, expected, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(np.load(os.path.join(out, "logits_1.npy")), expected[:1],
                               rtol=0, atol=TOLERANCE)
    with open(os.path.join(out, serving.CONTRACT_FILE)) as f:
      contract = json.load(f)
    assert contract["image_size"] == 16 and contract["channels"] == 3
    assert contract["value_range"] == [-1.0, 1.0]
    assert contract["preprocessing"] == config.pp.eval
    assert contract["num_classes"] == 10
    assert contract["class_names"] == list(fashion_mnist_local.CLASS_NAMES)
    assert contract["probabilities"] == "softmax"


def test_serving_refuses_images_of_another_size(fashion_data_dir, tmp_path):
  make_run(fashion_data_dir, tmp_path / "run")
  out = str(tmp_path / "serving")
  run_export(f"--workdir={tmp_path / 'run'}", "--format=serving", f"--out={out}")
  with pytest.raises(ValueError, match=r"expected images of shape \(batch, 16, 16, 3\) "
                                       r"in \[-1.0, 1.0\], got \(2, 32, 32, 3\)"):
    serving.load(out)(np.zeros((2, 32, 32, 3)))


def test_saved_model_gives_the_model_logits(fashion_data_dir, tmp_path, capsys):
  config, model, evaluated = make_run(fashion_data_dir, tmp_path / "run", representation_size=16)
  out = str(tmp_path / "saved_model")
  run_export(f"--workdir={tmp_path / 'run'}", "--format=saved_model", f"--out={out}")
  assert "max |logit difference| to the model" in capsys.readouterr().out
  assert os.path.exists(os.path.join(out, serving.CONTRACT_FILE))
  signature = tf.saved_model.load(out).signatures["serving_default"]
  batch = images(config, 3)
  logits = signature(images=tf.constant(batch))["logits"].numpy()
  np.testing.assert_allclose(logits, logits_of(model, evaluated[7], batch),
                             rtol=0, atol=TOLERANCE)


def test_a_gpu_hosts_cudnn_attention_is_swapped_for_a_portable_one(monkeypatch):
  """cuDNN's kernel is a custom call jax.export refuses to serialise (its
  target has no compatibility guarantee), even for CUDA alone; XLA's
  attention lowers for every platform."""
  model = models.get_model("Ti/16", num_classes=10)
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # `auto` -> cudnn
  for asked in ("auto", "cudnn"):
    swapped = export.portable(model.clone(attention_implementation=asked))
    assert swapped.attention_implementation == "dot_product_attention"
  monkeypatch.setattr(jax, "default_backend", lambda: "cpu")  # `auto` -> head_major
  assert export.portable(model) is model


# timm and Hugging Face directories; the conversions themselves are tested in
# tests/models/test_torch_formats.py.
RELATIVE_TOLERANCE = 1e-4


def timm_model_as_documented(out):
  """docs/checkpoints.md's way to load a timm export with timm alone."""
  timm = library("timm")
  with open(os.path.join(out, "config.json")) as f:
    config = json.load(f)
  return timm.create_model(config["architecture"], pretrained=True, pretrained_cfg_overlay=dict(
      file=os.path.join(out, "model.safetensors"), num_classes=config["num_classes"]),
      **config["model_args"])


def hf_model_as_documented(out):
  transformers = library("transformers")
  return transformers.ViTForImageClassification.from_pretrained(out)


@pytest.mark.parametrize("export_format, classifier, library_model", [
    ("timm", "token", timm_model_as_documented), ("timm", "gap", timm_model_as_documented),
    ("hf", "token", hf_model_as_documented)])
def test_timm_and_hf_exports_give_the_model_logits_in_their_library(
    fashion_data_dir, tmp_path, capsys, export_format, classifier, library_model):
  library("torch")
  library(export.TORCH_FORMATS[export_format][2])  # the export checks its logits
  config, model, evaluated = make_run(fashion_data_dir, tmp_path / "run",
                                      classifier=classifier, ema=True)
  out = str(tmp_path / export_format)
  run_export(f"--workdir={tmp_path / 'run'}", f"--format={export_format}", f"--out={out}")
  assert "weights read back bit for bit; max |logit difference| under" in (
      capsys.readouterr().out)
  module = library_model(out).eval()
  batch = images(config, 4)
  expected = logits_of(model, evaluated[7], batch)  # the EMA
  logits = timm_format.torch_logits(module, batch)
  assert np.abs(logits - expected).max() < RELATIVE_TOLERANCE * np.abs(expected).max()
  if export_format == "hf":
    assert module.config.id2label[3] == fashion_mnist_local.CLASS_NAMES[3]
    assert module.config.hidden_act == "gelu_pytorch_tanh"


def test_timm_and_hf_refuse_what_they_cannot_hold_in_one_line(fashion_data_dir, tmp_path):
  make_run(fashion_data_dir, tmp_path / "run", classifier="gap", representation_size=16)
  with pytest.raises(SystemExit, match=r"^error: the 'gap' classifier .* DINOv2 classifiers "
                                       r"read the class token"):
    run_export(f"--workdir={tmp_path / 'run'}", "--format=hf", f"--out={tmp_path / 'hf'}")
  with pytest.raises(SystemExit, match=r"^error: parameter pre_logits/kernel: timm's "
                                       r"VisionTransformer has no representation layer"):
    run_export(f"--workdir={tmp_path / 'run'}", "--format=timm", f"--out={tmp_path / 'timm'}")
  assert not os.path.exists(tmp_path / "hf") and not os.path.exists(tmp_path / "timm")


def test_a_pre_norm_model_with_a_patch_bias_exports_to_timm(fashion_data_dir, tmp_path):
  """timm's patch embedding has no bias beside pre_norm (CLIP's): ours joins
  the position embeddings, and the file reads back as that."""
  config = tiny_config(fashion_data_dir)
  config.model.update(pre_norm=True, gelu="quick", layer_norm_epsilon=1e-5)
  model = build.model_from_config(config)
  params = npz.unflatten(random_flat(build.abstract_params(model, config.image_size)))
  assert np.abs(params["embedding"]["bias"]).max() > 0
  difference = export.export_torch_format(config, model, params, export_format="timm",
                                          out=str(tmp_path / "timm"))
  assert difference is None or difference < 1e-4  # None: timm is not installed here


@pytest.mark.parametrize("export_format", ["timm", "hf"])
def test_a_resnet_is_refused_by_the_torch_formats_by_name(fashion_data_dir, tmp_path,
                                                         export_format):
  config = tiny_config(fashion_data_dir)
  model = models.get_model("R26x1", num_classes=config.data.num_classes)
  params = npz.unflatten(random_flat(build.abstract_params(model, config.image_size)))
  with pytest.raises(ValueError, match=r"^these parameters are no plain ViT's \(no patch "
                                       r"embedding 'embedding/kernel'\)"):
    export.export_torch_format(config, model, params, export_format=export_format,
                               out=str(tmp_path / export_format))


def test_without_timm_an_export_checks_its_weights_alone(
    fashion_data_dir, tmp_path, capsys, monkeypatch):
  make_run(fashion_data_dir, tmp_path / "run")
  monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError
  run_export(f"--workdir={tmp_path / 'run'}", "--format=timm", f"--out={tmp_path / 'timm'}")
  assert ("weights read back bit for bit; timm is not installed, so its logits are not "
          "checked (pip install -e '.[interop]')") in capsys.readouterr().out


def test_a_timm_export_states_the_runs_per_channel_normalisation(
    fashion_data_dir, tmp_path, monkeypatch):
  config = tiny_config(fashion_data_dir)
  config.pp.eval = config.pp.eval.replace("value_range(-1,1)", "vgg_value_range")
  assert "vgg_value_range" in config.pp.eval
  write_run(str(tmp_path / "run"), config)
  monkeypatch.setitem(sys.modules, "timm", None)  # the weights alone are checked
  run_export(f"--workdir={tmp_path / 'run'}", "--format=timm", f"--out={tmp_path / 'timm'}")
  with open(tmp_path / "timm" / "config.json") as f:
    pretrained_cfg = json.load(f)["pretrained_cfg"]
  np.testing.assert_allclose(pretrained_cfg["mean"], general_ops.IMAGENET_MEAN, rtol=1e-5)
  np.testing.assert_allclose(pretrained_cfg["std"], general_ops.IMAGENET_STD, rtol=1e-5)


@pytest.mark.parametrize("pp_eval, timm_transform, processor", [
    ("decode|resize(16)|value_range(-1,1)", (1.0, "squash"),
     {"image_processor_type": "ViTImageProcessor", "size": {"height": 16, "width": 16}}),
    ("decode|resize(20)|central_crop(16)|value_range(-1,1)", (0.8, "squash"),
     {"image_processor_type": "DeiTImageProcessor", "size": {"height": 20, "width": 20},
      "crop_size": {"height": 16, "width": 16}}),
    ("decode|resize_small(20, 'bilinear')|central_crop(16)|value_range(-1,1)", (0.8, "center"),
     {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 20},
      "crop_size": {"height": 16, "width": 16}}),
])
def test_timm_and_hf_exports_state_the_runs_eval_resize_and_crop(
    fashion_data_dir, tmp_path, monkeypatch, pp_eval, timm_transform, processor):
  """A timm or transformers user evaluating the export resizes and crops as
  the run did: a pre-training run's resize_small and central_crop are
  timm's crop_pct and 'center' crop_mode, not its 'squash' resize."""
  config = tiny_config(fashion_data_dir)
  config.pp.eval = pp_eval
  write_run(str(tmp_path / "run"), config)
  monkeypatch.setitem(sys.modules, "timm", None)  # the weights alone are checked
  monkeypatch.setitem(sys.modules, "transformers", None)
  for export_format in ("timm", "hf"):
    run_export(f"--workdir={tmp_path / 'run'}", f"--format={export_format}",
               f"--out={tmp_path / export_format}")
  with open(tmp_path / "timm" / "config.json") as f:
    pretrained_cfg = json.load(f)["pretrained_cfg"]
  assert (pretrained_cfg["crop_pct"], pretrained_cfg["crop_mode"]) == timm_transform
  assert pretrained_cfg["interpolation"] == "bilinear"
  with open(tmp_path / "hf" / "preprocessor_config.json") as f:
    written = json.load(f)
  assert {key: written[key] for key in processor} == processor
  assert written["resample"] == 2  # bilinear


def test_the_libraries_eval_transforms_of_an_export_are_the_runs(tmp_path):
  """timm's create_transform and transformers' AutoImageProcessor of what the
  exports state give a photo-sized image as the run's preprocessing does,
  up to their resamplers (PIL's, torchvision's) against TensorFlow's."""
  torch, timm, transformers = (library(name) for name in ("torch", "timm", "transformers"))
  from PIL import Image

  from vit_jax.data import preprocess
  from vit_jax.data.preprocess import eval_resize
  from vit_jax.inference import predict
  from vit_jax.models import hf_format
  rows, columns = np.mgrid[0:300, 0:420]
  image = np.stack([(np.sin(columns / 23) + 1) * 120, (np.cos(rows / 17) + 1) * 120,
                    (rows + columns) % 255], -1).astype(np.uint8)
  for pp_eval, size in (
      ("decode|resize(224)|value_range(-1,1)", 224),
      ("decode|resize(256, 'bicubic')|central_crop(224)|value_range(-1,1)", 224),
      ("decode|resize_small(256)|central_crop(224)|value_range(-1,1)", 224),
      ("decode|resize_small(438, 'bicubic')|central_crop(384)|value_range(-1,1)", 384)):
    ours = predict.preprocess_image(preprocess.parse(pp_eval), tf.constant(image))
    ours = np.asarray(ours).reshape(size, size, 3)
    resize = eval_resize.of_preprocessing(pp_eval, size)
    model = models.get_model("Ti/16", num_classes=10)
    params = npz.unflatten(random_flat(build.abstract_params(model, size)))
    cfg = timm_format.hub_config(params, image_size=size, mean=0.5, std=0.5,
                                 eval_resize=resize)["pretrained_cfg"]
    transform = timm.data.create_transform(**timm.data.resolve_data_config(
        pretrained_cfg=cfg))
    theirs = transform(Image.fromarray(image)).numpy().transpose(1, 2, 0)
    assert np.abs(theirs - ours).mean() < 0.01, (pp_eval, "timm")
    with open(tmp_path / "preprocessor_config.json", "w") as f:
      json.dump(hf_format.preprocessor_config(image_size=size, mean=0.5, std=0.5,
                                              eval_resize=resize), f)
    processor = transformers.AutoImageProcessor.from_pretrained(str(tmp_path))
    theirs = processor(Image.fromarray(image), return_tensors="np")["pixel_values"][0]
    assert np.abs(theirs.transpose(1, 2, 0) - ours).mean() < 0.01, (pp_eval, "hf")
