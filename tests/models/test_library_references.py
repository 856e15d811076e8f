"""timm and Hugging Face checkpoints, as the libraries save them, compute here
what the libraries computed, with numpy and JAX alone (where CI runs).

The files are tiny random ViTs (width 16, 2 blocks) that
`scripts/make_library_references.py` wrote with the libraries (their
versions are in cases.json): each import case is the library's own save of
a published architecture (timm's hub directory, transformers'
`save_pretrained`) with its outputs on three images; each export case is our
parameters, our export of them, and the library's logits of that export.
Outputs are compared by their max relative difference, max |a - b| / max |b|.
"""
import json
import os

import jax
import numpy as np
import pytest

from vit_jax import models
from vit_jax.models import build, hf_format, npz, pretrained, timm_format, vit

REFERENCES = os.path.join(os.path.dirname(__file__), "library_references")
with open(os.path.join(REFERENCES, "cases.json")) as f:
  MANIFEST = json.load(f)
CASES = MANIFEST["cases"]
# They agree to 4e-7; the tanh GELU for the exact one, or CLIP's epsilon for
# ours, moves them by 7e-5.
RELATIVE_TOLERANCE = 1e-5
REGENERATE = ("if the change is meant, check it against the libraries with "
              "`python scripts/make_library_references.py` and commit its files")


def cases(direction):
  return sorted(name for name, case in CASES.items() if case["direction"] == direction)


def model_of(settings):
  return models.get_model("Ti/4", num_classes=MANIFEST["num_classes"], **MANIFEST["shape"],
                          **settings)


def reference(case):
  with np.load(os.path.join(REFERENCES, case, "reference.npz")) as stored:
    return stored["images"], stored["outputs"]


def outputs(model, params, images, kind):
  """Logits, or the pooled features (pre_logits' input) of a headless checkpoint."""
  if kind == "logits":
    return np.asarray(model.apply({"params": params}, images, train=False))
  width = MANIFEST["shape"]["hidden_size"]
  flat = npz.flatten(params)
  flat.update({"head/kernel": np.zeros((width, MANIFEST["num_classes"]), np.float32),
               "head/bias": np.zeros(MANIFEST["num_classes"], np.float32)})
  _, state = model.apply({"params": npz.unflatten(flat)}, images, train=False,
                         mutable=["intermediates"])
  return np.asarray(state["intermediates"]["features"][0])


def relative_difference(ours, theirs):
  assert np.abs(theirs).max() > 0.1  # a meaningful comparison, not of zeros
  return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def test_the_references_cover_every_layout_we_read_and_write():
  libraries = {(case["library"], case["direction"]) for case in CASES.values()}
  assert libraries == {("timm", "import"), ("transformers", "import"), ("timm", "export"),
                       ("hf", "export")}
  read = {case.get("architecture") for case in CASES.values()}
  assert {"Dinov2Model", "Dinov2WithRegistersModel", "CLIPModel",
          "ViTForImageClassification", "deit3_base_patch16_224", "vit_base_patch32_siglip_256",
          "vit_base_patch14_reg4_dinov2", "vit_base_patch16_clip_quickgelu_224",
          "deit_base_distilled_patch16_224", "DeiTForImageClassificationWithTeacher"} <= read


@pytest.mark.parametrize("case", cases("import"))
def test_a_library_checkpoint_computes_here_what_it_computed_there(case):
  """Read as `config.init` reads it: its config.json states the GELU and the
  LayerNorm epsilon, the tensors the rest, and the model of the settings
  docs/checkpoints.md gives computes the library's outputs."""
  spec = CASES[case]
  directory = os.path.join(REFERENCES, case, "model")
  stated = pretrained.stated_function(directory)
  assert stated == spec["stated"]
  model = model_of({**spec["model"], **stated})
  assert pretrained.check_function(directory, model)
  params = pretrained.read_params(directory)
  images, theirs = reference(case)
  difference = relative_difference(outputs(model, params, images, spec["outputs"]), theirs)
  print(f"{spec['library']} {spec['architecture']} -> ours: max relative "
        f"{spec['outputs']} difference {difference:.2g}")
  assert difference < RELATIVE_TOLERANCE


@pytest.mark.parametrize("case", cases("import"))
def test_a_library_checkpoint_fine_tunes_with_the_settings_it_needs(case):
  """`load_pretrained` takes every tensor but the head into a new model of
  the same settings at a new grid, and names the setting a model without
  one of its parts lacks."""
  spec = CASES[case]
  directory = os.path.join(REFERENCES, case, "model")
  model = model_of({**spec["model"], **pretrained.stated_function(directory)})
  fresh = build.abstract_params(model, 24)
  fresh = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), fresh)
  num_prefix_tokens = vit.num_prefix_tokens(model)
  fitted = npz.flatten(pretrained.load_pretrained(
      directory, fresh, new_grid=(6, 6), num_prefix_tokens=num_prefix_tokens, model=model))
  read = npz.flatten(pretrained.read_params(directory))
  for name, value in fitted.items():
    if name.startswith(pretrained.HEAD_PREFIXES):
      assert not value.any(), name
    elif name != npz.POSEMB:
      np.testing.assert_array_equal(value, read[name], err_msg=name)
  assert fitted[npz.POSEMB].shape[1] == num_prefix_tokens + 36

  parts = [("layer_scale_init", None, "model.layer_scale_init=1e-5"),
           ("num_registers", 0, f"model.num_registers={spec['model'].get('num_registers')}"),
           ("pre_norm", False, "model.pre_norm=True"), ("fc_norm", False, "model.fc_norm=True"),
           ("distillation_token", False, "model.distillation_token=True")]
  for field, off, setting in parts:
    if spec["model"].get(field):
      lacking = model_of({**spec["model"], field: off})
      with pytest.raises(ValueError, match=f"fine-tune it with --config.{setting}$"):
        pretrained.load_pretrained(
            directory, build.abstract_params(lacking, 16), new_grid=(4, 4),
            num_prefix_tokens=num_prefix_tokens)


def read_directory(directory):
  """{file: tensors by name, or the parsed JSON} of an export directory."""
  files = {}
  for name in sorted(os.listdir(directory)):
    path = os.path.join(directory, name)
    files[name] = (timm_format.read_state_dict(path) if name.endswith(".safetensors")
                   else timm_format.read_json(path))
  return files


@pytest.mark.parametrize("case", cases("export"))
def test_our_export_is_still_the_files_the_library_computed_our_logits_with(case, tmp_path):
  spec = CASES[case]
  settings = spec["model"]
  model = model_of(settings)
  params = npz.load_npz(os.path.join(REFERENCES, case, "params.npz"))
  function = {key: settings[key] for key in ("gelu", "layer_norm_epsilon") if key in settings}
  save = timm_format.save if spec["library"] == "timm" else hf_format.save
  save(params, str(tmp_path), image_size=MANIFEST["image_size"], mean=0.5, std=0.5, **function)
  stored, written = (read_directory(directory) for directory in
                     (os.path.join(REFERENCES, case, "model"), str(tmp_path)))
  assert sorted(written) == sorted(stored), REGENERATE
  for name, content in stored.items():
    if isinstance(content, dict) and all(isinstance(v, np.ndarray) for v in content.values()):
      assert sorted(written[name]) == sorted(content), f"{name}: {REGENERATE}"
      for tensor, value in content.items():
        np.testing.assert_array_equal(written[name][tensor], value,
                                      err_msg=f"{name} {tensor}: {REGENERATE}")
    else:
      assert written[name] == content, f"{name}: {REGENERATE}"

  images, theirs = reference(case)
  difference = relative_difference(outputs(model, params, images, "logits"), theirs)
  print(f"ours -> {spec['library']} ({settings}): max relative logit difference "
        f"{difference:.2g}")
  assert difference < RELATIVE_TOLERANCE
  assert pretrained.check_function(str(tmp_path), model)
