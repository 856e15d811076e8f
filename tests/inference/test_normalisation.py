"""The pixel normalisation of a preprocessing string, and the check of an
imported checkpoint's against it (vit_jax.inference.normalisation, restore)."""
import ml_collections
import numpy as np
import pytest

from vit_jax import models
from vit_jax.data.preprocess import general_ops
from vit_jax.inference import normalisation, restore
from vit_jax.models import build, hf_format, npz

IMAGENET = (list(general_ops.IMAGENET_MEAN), list(general_ops.IMAGENET_STD))


@pytest.mark.parametrize("spec, mean, std", [
    ("vgg_value_range", *IMAGENET),
    ("value_range(-1, 1)|onehot(10)", [0.5] * 3, [0.5] * 3),
    ("resize(8)|value_range(0, 1)", [0.0] * 3, [1.0] * 3)])
def test_a_preprocessing_string_is_a_mean_and_std_of_0_to_1_pixels(spec, mean, std):
  got_mean, got_std = normalisation.of_preprocessing(spec, 8)
  np.testing.assert_allclose(got_mean, mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got_std, std, rtol=1e-5)


@pytest.fixture(scope="module")
def hf_imagenet_checkpoint(tmp_path_factory):
  model = models.get_model("Ti/8", num_classes=3, hidden_size=16, num_layers=1, mlp_dim=32,
                           num_heads=2)
  path = str(tmp_path_factory.mktemp("hf") / "vit")
  hf_format.save(build.init_params(model, 16, seed=0), path, image_size=16, mean=IMAGENET[0],
                 std=IMAGENET[1])
  return path


def eval_config(pp_eval):
  return ml_collections.ConfigDict({"pp": {"eval": pp_eval}, "image_size": 16})


def test_inference_warns_where_the_eval_preprocessing_feeds_other_pixels(
    hf_imagenet_checkpoint, caplog):
  with caplog.at_level("WARNING", logger="absl"):
    agrees = restore.check_normalisation(eval_config("value_range(-1,1)|onehot(3)"),
                                         hf_imagenet_checkpoint)
  assert not agrees
  assert [r.getMessage() for r in caplog.records] == [
      f"{hf_imagenet_checkpoint} states its model was trained on pixels normalised with "
      f"mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225) (of [0, 1] pixels), but "
      f"config.pp.eval (value_range(-1,1)|onehot(3)) feeds it mean=(0.5, 0.5, 0.5), "
      f"std=(0.5, 0.5, 0.5); put vgg_value_range(mean=(0.485, 0.456, 0.406), "
      f"std=(0.229, 0.224, 0.225)) in place of its value range for the checkpoint's own "
      f"accuracy."]


def test_inference_is_silent_where_the_pixels_agree_or_nothing_is_stated(
    hf_imagenet_checkpoint, tmp_path, caplog):
  with caplog.at_level("WARNING", logger="absl"):
    assert restore.check_normalisation(eval_config("vgg_value_range|onehot(3)"),
                                       hf_imagenet_checkpoint)
    npz.save_npz({"head": {"bias": np.zeros(3, np.float32)}}, str(tmp_path / "a.npz"))
    assert restore.check_normalisation(eval_config("value_range(-1,1)"),
                                       str(tmp_path / "a.npz"))
  assert caplog.records == []
