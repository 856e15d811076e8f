"""Posemb resampling, the published .npz layout, and fitting pre-trained params."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import models
from vit_jax.models import build, npz, posemb, pretrained


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
  out = posemb.resample_posemb(table, (4, 4), num_prefix_tokens=0)
  # Half-pixel centres: new samples sit at -0.25, 0.25, 0.75, 1.25 of the old
  # grid, clamped at the edges: weights 1, .75/.25, .25/.75, 1 per axis.
  axis = np.array([0.0, 0.25, 0.75, 1.0])
  expected = 2 * axis[:, None] + axis[None, :]
  np.testing.assert_allclose(out.reshape(4, 4), expected, atol=1e-6)


def test_bicubic_and_non_square_grids():
  table = np.random.RandomState(1).randn(1, 1 + 6, 4).astype(np.float32)
  out = posemb.resample_posemb(table, (4, 6), num_prefix_tokens=1,
                                   old_grid=(2, 3), method="bicubic")
  assert out.shape == (1, 1 + 24, 4)
  np.testing.assert_array_equal(out[:, :1], table[:, :1])


def test_a_token_count_that_is_no_grid_is_refused():
  table = np.zeros((1, 1 + 50, 4), np.float32)
  with pytest.raises(ValueError, match="50 patch tokens form no square grid"):
    posemb.resample_posemb(table, (8, 8), num_prefix_tokens=1)
  with pytest.raises(ValueError, match="config.posemb_resample='nearest'"):
    posemb.resample_posemb(table, (8, 8), num_prefix_tokens=1, method="nearest")


def init(model, size):
  return jax.jit(lambda: build.init_params(model, size, seed=0))()


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


def test_missing_init_path_says_what_it_expected(tmp_path):
  with pytest.raises(FileNotFoundError, match="neither a .npz file, a workdir"):
    pretrained.read_params(str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="nowhere.npz does not exist"):
    pretrained.read_params(str(tmp_path / "nowhere.npz"))
