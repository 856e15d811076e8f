"""Posemb resampling, the published .npz layout, and fitting pre-trained params."""
import json
import logging
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fake_params import random_flat
from vit_jax import models
from vit_jax.models import build, hf_format, npz, posemb, pretrained, timm_format


def test_resampling_to_the_same_grid_is_the_identity():
  table = np.random.RandomState(0).randn(1, 1 + 49, 8).astype(np.float32)
  out = posemb.resample_posemb(table, (7, 7), num_prefix_tokens=1)
  np.testing.assert_array_equal(out, table)


def test_resampling_224_to_384_keeps_the_class_token():
  table = np.random.RandomState(0).randn(1, 197, 16).astype(np.float32)
  out = posemb.resample_posemb(table, (24, 24), num_prefix_tokens=1)
  assert out.shape == (1, 577, 16)
  np.testing.assert_array_equal(out[:, :1], table[:, :1])


def test_bilinear_resampling_of_a_2x2_grid_gives_the_known_values():
  # A 2x2 grid with values a=0, b=1 (row 0) and c=2, d=3 (row 1), one channel.
  table = np.arange(4, dtype=np.float32).reshape(1, 4, 1)
  out = posemb.resample_posemb(table, (4, 4), num_prefix_tokens=0, method="bilinear")
  # Half-pixel centres: new samples sit at -0.25, 0.25, 0.75, 1.25 of the old
  # grid, clamped at the edges: weights 1, .75/.25, .25/.75, 1 per axis.
  axis = np.array([0.0, 0.25, 0.75, 1.0])
  expected = 2 * axis[:, None] + axis[None, :]
  np.testing.assert_allclose(out.reshape(4, 4), expected, atol=1e-6)


def keys_cubic_weights(old, new):
  """(new, old) weights of the Keys cubic kernel (a = -0.5, Pillow's and
  TensorFlow's bicubic) at half-pixel centres, renormalised over the taps that
  fall inside the grid."""
  distance = np.abs((np.arange(new) + 0.5) * old / new - 0.5 - np.arange(old)[:, None]).T
  weights = np.where(distance < 1, (1.5 * distance - 2.5) * distance**2 + 1,
                     np.where(distance < 2,
                              ((-0.5 * distance + 2.5) * distance - 4) * distance + 2, 0))
  return weights / weights.sum(axis=1, keepdims=True)


def test_bicubic_and_non_square_grids():
  table = np.random.RandomState(1).randn(1, 1 + 6, 4).astype(np.float32)
  out = posemb.resample_posemb(table, (4, 6), num_prefix_tokens=1,
                                   old_grid=(2, 3), method="bicubic")
  assert out.shape == (1, 1 + 24, 4)
  np.testing.assert_array_equal(out[:, :1], table[:, :1])
  expected = np.einsum("ih,hwc,jw->ijc", keys_cubic_weights(2, 4),
                       table[0, 1:].reshape(2, 3, 4).astype(np.float64),
                       keys_cubic_weights(3, 6))
  np.testing.assert_allclose(out[0, 1:], expected.reshape(24, 4), rtol=1e-5, atol=1e-5)


def linear_weights(old, new):
  """(new, old) weights of the linear (triangle) kernel at half-pixel centres,
  renormalised over the taps inside the grid; shrinking, the triangle is
  widened by old / new (antialiasing), so that every old row is read."""
  widen = max(old / new, 1.0)
  centres = (np.arange(new) + 0.5) * old / new - 0.5
  weights = np.maximum(0.0, 1.0 - np.abs(centres[:, None] - np.arange(old)) / widen)
  return weights / weights.sum(axis=1, keepdims=True)


def test_bilinear_shrinking_is_antialiased():
  """4x6 -> 2x3, as when fine-tuning below the pre-training resolution: each
  new row is 3/7, 3/7 and 1/7 of three old ones, where without antialiasing
  it would be half of each of the nearest two."""
  table = np.random.RandomState(2).randn(1, 1 + 24, 3).astype(np.float32)
  out = posemb.resample_posemb(table, (2, 3), num_prefix_tokens=1, old_grid=(4, 6),
                               method="bilinear")
  np.testing.assert_allclose(linear_weights(4, 2)[0], [3 / 7, 3 / 7, 1 / 7, 0])
  expected = np.einsum("ih,hwc,jw->ijc", linear_weights(4, 2),
                       table[0, 1:].reshape(4, 6, 3).astype(np.float64),
                       linear_weights(6, 3))
  np.testing.assert_allclose(out[0, 1:], expected.reshape(6, 3), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out[:, :1], table[:, :1])


def test_a_token_count_that_is_no_grid_is_refused():
  table = np.zeros((1, 1 + 50, 4), np.float32)
  with pytest.raises(ValueError, match="50 patch tokens form no square grid"):
    posemb.resample_posemb(table, (8, 8), num_prefix_tokens=1)
  with pytest.raises(ValueError, match="config.posemb_resample='nearest'"):
    posemb.resample_posemb(table, (8, 8), num_prefix_tokens=1, method="nearest")


def init(model, size):
  return build.init_params(model, size, seed=0)


TINY = dict(hidden_size=16, num_layers=2, mlp_dim=32, num_heads=2)


def test_npz_round_trip_is_exact(tmp_path):
  params = init(models.get_model("Ti/8", num_classes=5, representation_size=16, **TINY), 32)
  path = str(tmp_path / "params.npz")
  npz.save_npz(params, path)
  with np.load(path, allow_pickle=False) as data:
    assert "Transformer/encoderblock_1/MultiHeadDotProductAttention_1/query/kernel" in data.files
    assert "pre_logits/kernel" in data.files
  loaded = npz.load_npz(path)
  jax.tree.map(np.testing.assert_array_equal, loaded, jax.device_get(params))


def test_load_pretrained_resets_head_drops_pre_logits_and_resamples_posemb(tmp_path):
  old_model = models.get_model("Ti/8", num_classes=21, representation_size=16,
                               head_bias_init=-10.0, **TINY)
  old = jax.device_get(init(old_model, 32))  # 4x4 grid
  path = str(tmp_path / "pretrained.npz")
  npz.save_npz(old, path)
  new_model = models.get_model("Ti/8", num_classes=3, **TINY)
  fresh = jax.device_get(init(new_model, 48))  # 6x6 grid
  fitted = pretrained.load_pretrained(path, fresh, new_grid=(6, 6), num_prefix_tokens=1)
  assert "pre_logits" not in fitted
  np.testing.assert_array_equal(fitted["head"]["kernel"], np.zeros((16, 3)))
  np.testing.assert_array_equal(fitted["head"]["bias"], np.zeros(3))
  table = fitted["Transformer"]["posembed_input"]["pos_embedding"]
  assert table.shape == (1, 37, 16)
  old_posemb = old["Transformer"]["posembed_input"]["pos_embedding"]
  np.testing.assert_array_equal(table[:, 0], old_posemb[:, 0])
  np.testing.assert_array_equal(fitted["embedding"]["kernel"], old["embedding"]["kernel"])
  np.testing.assert_array_equal(
      fitted["Transformer"]["encoderblock_1"]["MlpBlock_3"]["Dense_0"]["kernel"],
      old["Transformer"]["encoderblock_1"]["MlpBlock_3"]["Dense_0"]["kernel"])
  logits = new_model.apply({"params": fitted}, jnp.zeros((2, 48, 48, 3)), train=False)
  np.testing.assert_array_equal(logits, np.zeros((2, 3)))


@pytest.mark.parametrize("method", ["bilinear", "bicubic"])
def test_load_pretrained_resamples_the_posemb_by_the_method_asked(tmp_path, method):
  """config.posemb_resample reaches the resample: the table is the method's,
  which here differs from the default zoom_linear's."""
  model = models.get_model("Ti/8", num_classes=3, **TINY)
  old = jax.device_get(init(model, 32))  # 4x4 grid
  path = str(tmp_path / "pretrained.npz")
  npz.save_npz(old, path)
  fresh = jax.device_get(init(model, 48))  # 6x6 grid
  fitted = pretrained.load_pretrained(path, fresh, new_grid=(6, 6), num_prefix_tokens=1,
                                      posemb_method=method)
  old_table = old["Transformer"]["posembed_input"]["pos_embedding"]
  want = posemb.resample_posemb(old_table, (6, 6), num_prefix_tokens=1, method=method)
  assert not np.allclose(want, posemb.resample_posemb(old_table, (6, 6), num_prefix_tokens=1))
  np.testing.assert_array_equal(fitted["Transformer"]["posembed_input"]["pos_embedding"], want)


def test_a_new_model_with_pre_logits_starts_from_the_checkpoints(tmp_path):
  """pre_logits is dropped only where the new model has none; one of the same
  size is fine-tuned from the trained layer, not from a fresh one."""
  old = jax.device_get(init(models.get_model("Ti/8", num_classes=21, representation_size=16,
                                             **TINY), 32))
  path = str(tmp_path / "pretrained.npz")
  npz.save_npz(old, path)
  new_model = models.get_model("Ti/8", num_classes=3, representation_size=16, **TINY)
  fresh = jax.device_get(build.init_params(new_model, 32, seed=1))
  assert not np.array_equal(fresh["pre_logits"]["kernel"], old["pre_logits"]["kernel"])
  fitted = pretrained.load_pretrained(path, fresh, new_grid=(4, 4), num_prefix_tokens=1)
  jax.tree.map(np.testing.assert_array_equal, fitted["pre_logits"], old["pre_logits"])
  np.testing.assert_array_equal(fitted["head"]["kernel"], np.zeros((16, 3)))


def test_fitted_parameters_take_the_new_models_dtype(tmp_path):
  """A float32 checkpoint fits a model of param_dtype bfloat16 as bfloat16
  throughout, as the model's own parameters would be, each value rounded."""
  old = jax.device_get(init(models.get_model("Ti/8", num_classes=3, **TINY), 32))
  path = str(tmp_path / "pretrained.npz")
  npz.save_npz(old, path)
  new_model = models.get_model("Ti/8", num_classes=3, param_dtype="bfloat16", **TINY)
  fresh = jax.device_get(init(new_model, 32))
  fitted = npz.flatten(pretrained.load_pretrained(path, fresh, new_grid=(4, 4),
                                                  num_prefix_tokens=1))
  assert {value.dtype for value in fitted.values()} == {np.dtype(jnp.bfloat16)}
  old = npz.flatten(old)
  for name in ("embedding/kernel", npz.POSEMB, "Transformer/encoder_norm/scale"):
    np.testing.assert_array_equal(fitted[name], old[name].astype(jnp.bfloat16), err_msg=name)


def test_every_head_of_the_new_model_starts_fresh_the_distillation_head_too(tmp_path):
  """A distilled checkpoint fine-tuned for as many classes as it had: neither
  trained head (head, head_dist) is carried over, though their shapes fit."""
  model = models.get_model("Ti/8", num_classes=3, distillation_token=True, **TINY)
  saved = random_flat(build.abstract_params(model, 32))
  path = str(tmp_path / "deit.npz")
  np.savez(path, **saved)
  fresh = npz.flatten(jax.device_get(init(model, 32)))
  fitted = npz.flatten(pretrained.load_pretrained(path, npz.unflatten(fresh), new_grid=(4, 4),
                                                  num_prefix_tokens=2))
  for name in ("head/kernel", "head/bias", "head_dist/kernel", "head_dist/bias"):
    assert saved[name].any() and not fresh[name].any(), name
    np.testing.assert_array_equal(fitted[name], fresh[name], err_msg=name)
  np.testing.assert_array_equal(fitted["dist"], saved["dist"])


@pytest.mark.parametrize("name, other, match", [
    ("wide", dict(hidden_size=32), r"wide.npz: parameter .* has shape \(.*32.*\) in the "
                                   r"checkpoint but \(.*16.*\) in the model"),
    ("shallow", dict(num_layers=1), r"shallow.npz: parameter Transformer/encoderblock_1/\S+ of the "
                                    r"model is missing in the checkpoint"),
])
def test_load_pretrained_of_another_model_names_the_first_mismatching_parameter(
    tmp_path, name, other, match):
  saved = jax.device_get(init(models.get_model("Ti/8", num_classes=3, **dict(TINY, **other)), 32))
  path = str(tmp_path / f"{name}.npz")
  npz.save_npz(saved, path)
  fresh = jax.device_get(init(models.get_model("Ti/8", num_classes=3, **TINY), 32))
  with pytest.raises(ValueError, match=match):
    pretrained.load_pretrained(path, fresh, new_grid=(4, 4), num_prefix_tokens=1)


@pytest.mark.parametrize("saved, wanted, match", [
    ("gap", "token", r"gap.npz: parameter cls of the model is missing in the checkpoint"),
    ("token", "gap", r"token.npz: parameter cls of the checkpoint is not in the model"),
])
def test_a_checkpoint_of_the_other_classifier_is_named_by_its_class_token(
    tmp_path, saved, wanted, match):
  path = str(tmp_path / f"{saved}.npz")
  npz.save_npz(jax.device_get(init(models.get_model(
      "Ti/8", num_classes=3, classifier=saved, **TINY), 32)), path)
  fresh = jax.device_get(init(models.get_model("Ti/8", num_classes=3, classifier=wanted,
                                               **TINY), 32))
  with pytest.raises(ValueError, match=match):
    pretrained.load_pretrained(path, fresh, new_grid=(4, 4),
                               num_prefix_tokens=int(wanted == "token"))


def test_parameters_with_a_nan_or_an_infinity_are_refused_naming_the_tensor(tmp_path):
  kernel = np.ones((3, 4), np.float32)
  kernel[1, 2], kernel[2, 0] = np.nan, np.inf
  path = str(tmp_path / "diverged.npz")
  np.savez(path, **{"head/kernel": kernel, "head/bias": np.zeros(4, np.float32)})
  with pytest.raises(ValueError) as error:
    pretrained.read_params(path)
  assert str(error.value) == (
      f"{path}: parameter head/kernel holds 2 NaN or infinite value(s) of 12; a "
      f"checkpoint of a run that diverged? Take an earlier step or another file")


def test_missing_init_path_says_what_it_expected(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"nowhere' does not exist; a checkpoint is "
                                              r"one of: a .npz file; a timm or Hugging "
                                              r"Face state dict \(.safetensors, .pth, .bin"):
    pretrained.read_params(str(tmp_path / "nowhere"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match=r"empty' is none of the checkpoints "
                                              r"accepted: a .npz file; "):
    pretrained.read_params(str(tmp_path / "empty"))
  with pytest.raises(FileNotFoundError, match="nowhere.npz does not exist"):
    pretrained.read_params(str(tmp_path / "nowhere.npz"))
  with pytest.raises(FileNotFoundError, match="nowhere.safetensors does not exist"):
    pretrained.read_params(str(tmp_path / "nowhere.safetensors"))


def test_a_hub_name_that_is_no_local_path_says_how_to_download_it(tmp_path, monkeypatch):
  """Runs read local files only; a from_pretrained-style name gets the command to fetch it."""
  monkeypatch.chdir(tmp_path)
  for given, name in [("google/vit-base-patch16-224", "google/vit-base-patch16-224"),
                      ("hf-hub:timm/vit_base_patch16_224.augreg_in21k",
                       "timm/vit_base_patch16_224.augreg_in21k")]:
    with pytest.raises(FileNotFoundError) as raised:
      pretrained.locate(given)
    assert (f"does not exist (a Hugging Face or timm hub name is not downloaded: fetch it "
            f"with `hf download {name} --local-dir DIR` and pass DIR); a checkpoint is "
            f"one of: a .npz file;") in str(raised.value)


# timm and Hugging Face files; tests/models/test_torch_formats.py has the
# conversions themselves and the logits under the real libraries.


def params_of(model):
  """Random parameters of ``model`` at 32 px, without compiling its init."""
  return npz.unflatten(random_flat(build.abstract_params(model, 32)))


def write_timm(params, path, config=None):
  """A timm state dict at ``path`` (.safetensors), timm's config.json beside it."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  timm_format.write_safetensors(timm_format.to_timm(params), path)
  if config is not None:
    with open(os.path.join(os.path.dirname(path), "config.json"), "w") as f:
      json.dump(config, f)
  return path


def test_locate_tells_the_kinds_apart(tmp_path):
  params = params_of(models.get_model("Ti/8", num_classes=3, **TINY))
  npz.save_npz(params, str(tmp_path / "a.npz"))
  bare = write_timm(params, str(tmp_path / "bare" / "vit.safetensors"))
  timm_format.save(params, str(tmp_path / "timm"), image_size=32, mean=0.5, std=0.5)
  hf_format.save(params, str(tmp_path / "hf"), image_size=32, mean=0.5, std=0.5)
  kinds = {path: pretrained.locate(str(tmp_path / path)).kind
           for path in ("a.npz", bare, "timm", "timm/model.safetensors", "hf",
                        "hf/model.safetensors")}
  assert list(kinds.values()) == ["npz", "timm", "timm", "timm", "hf", "hf"]


def test_a_timm_file_fine_tunes_with_the_heads_of_the_new_model(tmp_path):
  model = models.get_model("Ti/8", num_classes=3, **TINY)
  old = params_of(models.get_model("Ti/8", num_classes=21, **TINY))
  path = write_timm(old, str(tmp_path / "timm" / "vit.safetensors"))  # no config.json
  fresh = params_of(model)
  fitted = npz.flatten(pretrained.load_pretrained(path, fresh,
                                                  new_grid=(4, 4), num_prefix_tokens=1))
  assert sorted(fitted) == sorted(npz.flatten(old))
  for name, value in npz.flatten(old).items():
    if not name.startswith("head/"):
      np.testing.assert_array_equal(fitted[name], value, err_msg=name)
  # The classifier is the new model's own (3 classes), not the file's 21.
  for name in ("head/kernel", "head/bias"):
    np.testing.assert_array_equal(fitted[name], npz.flatten(fresh)[name], err_msg=name)


@pytest.mark.parametrize("fmt", ["timm", "hf"])
def test_a_timm_or_hf_checkpoint_of_another_model_names_the_first_mismatching_parameter(
    tmp_path, fmt):
  saved = params_of(models.get_model("Ti/8", num_classes=3, **dict(TINY, hidden_size=32)))
  module = {"timm": timm_format, "hf": hf_format}[fmt]
  module.save(saved, str(tmp_path / fmt), image_size=32, mean=0.5, std=0.5)
  fresh = params_of(models.get_model("Ti/8", num_classes=3, **TINY))
  with pytest.raises(ValueError, match=rf"{fmt}: parameter Transformer/encoder_norm/bias "
                                       rf"has shape \(32,\) in the checkpoint but "
                                       rf"\(16,\) in the model"):
    pretrained.load_pretrained(str(tmp_path / fmt), fresh, new_grid=(4, 4),
                               num_prefix_tokens=1)


def test_model_directories_that_are_no_vit_are_named(tmp_path):
  for name, config in (("swin", {"model_type": "swin"}), ("empty", {"model_type": "vit"})):
    os.makedirs(tmp_path / name)
    with open(tmp_path / name / "config.json", "w") as f:
      json.dump(config, f)
  with pytest.raises(ValueError, match=r"swin: a Hugging Face model of model_type 'swin'; "
                                       r"this ViT reads model_type 'vit', 'deit', 'dinov2', "
                                       r"'dinov2_with_registers', 'clip', "
                                       r"'clip_vision_model'$"):
    pretrained.locate(str(tmp_path / "swin"))
  with pytest.raises(FileNotFoundError, match=r"empty holds no weights: neither "
                                              r"model.safetensors nor pytorch_model.bin"):
    pretrained.locate(str(tmp_path / "empty"))


def test_a_safetensors_file_reads_without_torch(tmp_path, monkeypatch):
  params = params_of(models.get_model("Ti/8", num_classes=3, **TINY))
  path = write_timm(params, str(tmp_path / "t" / "vit.safetensors"),
                    config=timm_format.hub_config(params, image_size=32, mean=0.5, std=0.5))
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
  jax.tree.map(np.testing.assert_array_equal, pretrained.read_params(path), params)
  pth = tmp_path / "t" / "vit.pth"
  pth.write_bytes(b"")
  with pytest.raises(ImportError, match=r"needs torch, which is not installed: "
                                        r"pip install -e '\.\[interop\]'"):
    pretrained.read_params(str(pth))


def test_a_checkpoints_imagenet_normalisation_is_read_and_named_in_the_log(tmp_path, caplog):
  from vit_jax.data.preprocess import general_ops
  params = params_of(models.get_model("Ti/8", num_classes=3, **TINY))
  imagenet = (list(general_ops.IMAGENET_MEAN), list(general_ops.IMAGENET_STD))
  timm_format.save(params, str(tmp_path / "timm"), image_size=32, mean=imagenet[0],
                   std=imagenet[1])
  hf_format.save(params, str(tmp_path / "hf"), image_size=32, mean=imagenet[0],
                 std=imagenet[1])
  hf_format.save(params, str(tmp_path / "half"), image_size=32, mean=0.5, std=0.5)
  npz.save_npz(params, str(tmp_path / "a.npz"))
  bare = write_timm(params, str(tmp_path / "bare" / "vit.safetensors"))
  stated = {path: pretrained.stated_normalisation(str(tmp_path / path))
            for path in ("timm", "timm/model.safetensors", "hf", "half", "a.npz", bare)}
  assert stated == {"timm": imagenet, "timm/model.safetensors": imagenet, "hf": imagenet,
                    "half": ([0.5] * 3, [0.5] * 3), "a.npz": None, bare: None}

  with caplog.at_level("INFO", logger="absl"):
    pretrained.note_normalisation(str(tmp_path / "half"))
    assert caplog.records == []  # [-1, 1], our own: nothing to say
    pretrained.note_normalisation(str(tmp_path / "hf"))
  assert [record.getMessage() for record in caplog.records] == [
      f"{tmp_path / 'hf'} was trained on pixels normalised with mean=(0.485, 0.456, 0.406), "
      f"std=(0.229, 0.224, 0.225) (of [0, 1] pixels); vgg_value_range(mean=(0.485, 0.456, "
      f"0.406), std=(0.229, 0.224, 0.225)) in config.pp.train and config.pp.eval feeds it "
      f"the same, where value_range(-1, 1) feeds mean = std = 0.5."]


def test_a_config_json_that_is_no_timm_config_states_no_normalisation(tmp_path):
  params = params_of(models.get_model("Ti/8", num_classes=3, **TINY))
  path = write_timm(params, str(tmp_path / "bare" / "vit.safetensors"),
                    config={"mean": [0.1, 0.2], "std": [0.3, 0.4]})  # not timm's
  assert pretrained.stated_normalisation(path) is None
  path = write_timm(params, str(tmp_path / "short" / "vit.safetensors"),
                    config={"architecture": "vit_tiny_patch16_224",
                            "pretrained_cfg": {"mean": [0.1, 0.2], "std": [0.3, 0.4]}})
  assert pretrained.stated_normalisation(path) is None  # two channels: no RGB statement


def test_a_checkpoint_of_another_gelu_or_epsilon_is_named_with_the_setting(tmp_path, caplog):
  """timm's default GELU is the exact one; its SigLIP models, our exports
  (tanh by default) and Hugging Face configs say theirs. timm's CLIP
  architectures normalise with epsilon 1e-5, Hugging Face's ViTs state 1e-12."""
  params = params_of(models.get_model("Ti/8", num_classes=3, **TINY))
  exact = write_timm(params, str(tmp_path / "deit" / "vit.safetensors"),
                     config={"architecture": "deit3_tiny_patch16_224"})
  bare = write_timm(params, str(tmp_path / "bare" / "vit.pth"))
  siglip = write_timm(params, str(tmp_path / "siglip" / "vit.safetensors"),
                      config={"architecture": "vit_base_patch32_siglip_256"})
  clip = write_timm(params, str(tmp_path / "clip" / "vit.safetensors"),
                    config={"architecture": "vit_base_patch16_clip_quickgelu_224"})
  ours = str(tmp_path / "ours")
  timm_format.save(params, ours, image_size=32, mean=0.5, std=0.5)
  hf_exact = str(tmp_path / "hf")
  hf_format.save(params, hf_exact, image_size=32, mean=0.5, std=0.5, gelu="exact")
  npz.save_npz(params, str(tmp_path / "a.npz"))
  assert [pretrained.stated_function(p) for p in (exact, bare, siglip, clip, ours, hf_exact,
                                                   str(tmp_path / "a.npz"))] == [
      dict(gelu="exact", layer_norm_epsilon=1e-6), dict(gelu="exact", layer_norm_epsilon=1e-6),
      dict(gelu="tanh", layer_norm_epsilon=1e-6), dict(gelu="quick", layer_norm_epsilon=1e-5),
      dict(gelu="tanh", layer_norm_epsilon=1e-6), dict(gelu="exact", layer_norm_epsilon=1e-6),
      {}]

  model = lambda **o: models.get_model("Ti/8", num_classes=3, **TINY, **o)
  with caplog.at_level(logging.INFO, logger="absl"):
    assert pretrained.check_function(exact, model(gelu="exact"))
    assert pretrained.check_function(ours, model())
    assert pretrained.check_function(str(tmp_path / "a.npz"), model(gelu="exact"))
    assert pretrained.check_function(clip, model(gelu="quick", layer_norm_epsilon=1e-5))
    # Hugging Face's ViTs state 1e-12: far below anything that matters.
    assert pretrained.check_function(hf_exact, model(gelu="exact", layer_norm_epsilon=1e-12))
    assert not caplog.records
    assert not pretrained.check_function(exact, model())
    assert not pretrained.check_function(ours, model(gelu="exact"))
    assert not pretrained.check_function(bare, model())
    assert not pretrained.check_function(clip, model(gelu="quick"))
  assert [r.getMessage() for r in caplog.records] == [
      f"{exact} computes the exact (erf) GELU, by its config.json, and the model "
      f"the tanh-approximated one (model.gelu=tanh): set --config.model.gelu=exact to "
      f"compute the checkpoint's function.",
      f"{ours} computes the tanh-approximated GELU, by its config.json, and the "
      f"model the exact (erf) one (model.gelu=exact): set --config.model.gelu=tanh to "
      f"compute the checkpoint's function.",
      f"{bare} computes the exact (erf) GELU, timm's default, with no config.json beside "
      f"it, and the model the tanh-approximated one (model.gelu=tanh): set "
      f"--config.model.gelu=exact to compute the checkpoint's function.",
      f"{clip} normalises with a LayerNorm epsilon of 1e-05, by its config.json, "
      f"and the model with 1e-06: set --config.model.layer_norm_epsilon=1e-05 to compute "
      f"the checkpoint's function."]


@pytest.mark.parametrize("saved, model, message", [
    (dict(classifier="map"), dict(classifier="gap"),
     "the checkpoint has attention pooling, the model not: fine-tune it with "
     "--config.model.classifier=map"),
    (dict(qk_norm=True), dict(), "the checkpoint has query/key normalisation, the model "
     "not: fine-tune it with --config.model.qk_norm=True"),
    (dict(), dict(qk_norm=True), "the model has query/key normalisation, the checkpoint "
     "none: fine-tune it with --config.model.qk_norm=False"),
    (dict(), dict(classifier="map"), "the model has attention pooling, the checkpoint "
     "none: fine-tune it with --config.model.classifier=token"),
    (dict(), dict(layer_scale_init=0.1), "the model has layer scale, the checkpoint none: "
     "fine-tune it with --config.model.layer_scale_init=None"),
    (dict(pre_norm=True), dict(), "the checkpoint has a LayerNorm before the blocks, the "
     "model not: fine-tune it with --config.model.pre_norm=True"),
    (dict(layer_scale_init=0.1), dict(), "the checkpoint has layer scale, the model not: "
     "fine-tune it with --config.model.layer_scale_init=1e-5"),
    (dict(num_registers=4), dict(num_registers=2), "the checkpoint has 4 register tokens, "
     "the model 2: fine-tune it with --config.model.num_registers=4"),
    (dict(), dict(num_registers=1), "the checkpoint has 0 register tokens, the model 1: "
     "fine-tune it with --config.model.num_registers=0"),
])
def test_a_part_a_setting_switches_is_named_with_the_setting(tmp_path, saved, model, message):
  npz.save_npz(params_of(models.get_model("Ti/8", num_classes=3, **TINY, **saved)),
               str(tmp_path / "saved.npz"))
  fresh = params_of(models.get_model("Ti/8", num_classes=5, **TINY, **model))
  with pytest.raises(ValueError) as error:
    pretrained.load_pretrained(str(tmp_path / "saved.npz"), fresh, new_grid=(4, 4),
                               num_prefix_tokens=0)
  assert str(error.value) == f"{tmp_path / 'saved.npz'}: {message}"
