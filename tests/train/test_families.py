"""BiT ResNets and hybrids through the same trainer as the ViT: training,
few-shot probes, FSDP layouts, fine-tuning from a checkpoint, export."""
import os

import numpy as np
import pytest

from configs import common
from conftest import tiny_config
from vit_jax import train
from vit_jax.inference import export, serving
from vit_jax.models import build, npz, pretrained
from vit_jax.runtime import cli
from scripts import export as export_command

pytestmark = pytest.mark.slow

# The smallest members of each family that still learn the tiny data: a BiT
# of two stages of a unit each (R26's widths, 512 features), and a hybrid
# with that stem (stride 8) feeding the tiny ViT: a 2x2 grid at 16 px.
RESNET = dict(variant="R26x1", model=dict(block_sizes=(1, 1)))
HYBRID = dict(variant="R26x1+Ti/8", model=dict(resnet_blocks=(1, 1)))


def family_config(data_dir, family, **overrides):
  config = tiny_config(data_dir, variant=family["variant"], **overrides)
  config.unlock()
  if family is RESNET:
    common.for_resnet(config)
  config.model.update(family["model"])
  config.lock()
  return config


@pytest.mark.parametrize("family", [RESNET, HYBRID], ids=["resnet", "hybrid"])
def test_a_family_trains_is_probed_fine_tunes_and_exports(family, fashion_data_dir,
                                                           tmp_path):
  """One run per family (its compilations dominate), then each use of it."""
  config = family_config(fashion_data_dir, family, total_steps=24, eval_every=24,
                         checkpoint_every=24,
                         **{"fewshot.every": 24, "fewshot.shots": (5,),
                            "fewshot.seeds": (0,), "mesh.data": 4, "mesh.fsdp": 2,
                            "mesh.fsdp_min_size": 2 ** 12})
  workdir = str(tmp_path / "run")
  summary = train.train_and_evaluate(config, workdir)
  assert summary["eval"]["test"]["top1"] >= 0.8, summary["eval"]  # chance: 0.1
  assert summary["fewshot"]["5shot"] >= 0.5, summary["fewshot"]
  assert summary["flops_per_example"] > 0
  model = build.model_from_config(config)
  params = pretrained.read_params(workdir)
  exported = check_exports(model, params, workdir, str(tmp_path))
  check_fine_tuning_start(family, model, exported, params)


def check_fine_tuning_start(family, model, exported_npz, params):
  """The run's exported .npz fitted to 32 px: a fresh head, the rest as trained."""
  fresh = build.init_params(model, 32, seed=1)
  loaded = npz.flatten(pretrained.load_pretrained(exported_npz, fresh, new_grid=(4, 4),
                                                  num_prefix_tokens=1))
  fresh, saved = npz.flatten(fresh), npz.flatten(params)
  head = [name for name in fresh if "head/" in name]
  assert head, sorted(fresh)
  for name in head:  # the new (zero) head, not the trained one
    np.testing.assert_array_equal(loaded[name], fresh[name])
    assert np.any(saved[name] != 0), name
  for name, value in loaded.items():
    if name not in head and name != npz.POSEMB:
      np.testing.assert_array_equal(value, saved[name])
  if family is HYBRID:  # 2x2 cells at 16 px, 4x4 at 32 px
    assert loaded[npz.POSEMB].shape == (1, 1 + 16, 32)


def check_exports(model, params, workdir, out_dir):
  """npz, the serving artefact and the SavedModel give the model's logits
  (scripts/export.py checks the last two as it writes them, too); returns
  the .npz's path."""
  import tensorflow as tf

  images = np.random.default_rng(0).uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
  expected = export.model_logits(model, params, images)
  path = os.path.join(out_dir, "params.npz")
  export.export_npz(params, path)
  np.testing.assert_array_equal(export.model_logits(model, npz.load_npz(path), images),
                                expected)
  for export_format in ("serving", "saved_model"):
    out = os.path.join(out_dir, export_format)
    cli.call(export_command.main, export_command.FLAGS,
             ["export.py", f"--workdir={workdir}", f"--format={export_format}",
              f"--out={out}"])
    if export_format == "serving":
      logits = serving.load(out)(images)
    else:
      signature = tf.saved_model.load(out).signatures["serving_default"]
      logits = signature(images=tf.constant(images))["logits"].numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
  return path
