"""The pixel normalisation of a preprocessing string, and the check of an
imported checkpoint's against it (vit_jax.inference.normalisation, restore)."""
import ml_collections
import numpy as np
import pytest

from conftest import tiny_config
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


def test_inference_warns_where_only_the_std_differs(hf_imagenet_checkpoint, caplog):
  """ImageNet's mean with a std of 0.5: the right centre, the wrong scale,
  so the pixels the checkpoint was trained on are not the ones it is fed."""
  pp_eval = "vgg_value_range(mean=(0.485, 0.456, 0.406), std=(0.5, 0.5, 0.5))|onehot(3)"
  with caplog.at_level("WARNING", logger="absl"):
    assert not restore.check_normalisation(eval_config(pp_eval), hf_imagenet_checkpoint)
  assert len(caplog.records) == 1
  assert "feeds it mean=(0.485, 0.456, 0.406), std=(0.5, 0.5, 0.5)" in (
      caplog.records[0].getMessage())


def test_restoring_parameters_of_another_shape_is_refused_naming_the_first(tmp_path):
  """Inference adapts nothing: a file of a wider MLP than the config's model
  is refused, not run with parameters the model does not have."""
  config = tiny_config(str(tmp_path))  # Ti/4: hidden 32, MLP 64, 2 layers, 16 px
  wider = models.get_model("Ti/4", num_classes=10, hidden_size=32, num_layers=2, mlp_dim=96,
                           num_heads=2)
  npz.save_npz(build.init_params(wider, 16, seed=0), str(tmp_path / "wider.npz"))
  with pytest.raises(ValueError, match=(
      r"wider.npz: parameter Transformer/encoderblock_0/MlpBlock_3/Dense_0/bias has shape "
      r"\(96,\) in the checkpoint but \(64,\) in the model")):
    restore.restore_model(config, str(tmp_path / "wider.npz"))
