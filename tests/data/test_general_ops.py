"""General ops (vit_jax.data.preprocess.general_ops): value ranges, labels, keep."""
import numpy as np
import pytest
import tensorflow as tf

from preprocess_cases import MODES, example, random_image, run
from vit_jax.data import preprocess


@pytest.mark.parametrize("mode", MODES)
def test_value_range_maps_endpoints(mode):
  image = np.array([[[0], [255]]], np.uint8)
  out = run("value_range(-1, 1)", {"image": tf.constant(image)}, mode)
  np.testing.assert_allclose(out["image"].ravel(), [-1.0, 1.0])
  out = run("value_range(0, 1, in_min=-1, in_max=1)",
            {"image": tf.constant([-1.0, 0.0, 1.0])}, mode)
  np.testing.assert_allclose(out["image"], [0.0, 0.5, 1.0])


@pytest.mark.parametrize("mode", MODES)
def test_onehot_scalar_label(mode):
  out = run("onehot(5)", {"label": tf.constant(3, tf.int64)}, mode)
  np.testing.assert_array_equal(out["labels"], [0, 0, 0, 1, 0])
  assert out["labels"].dtype == np.float32
  assert out["label"] == 3


@pytest.mark.parametrize("mode", MODES)
def test_onehot_vector_is_multi_hot(mode):
  out = run("onehot(5, key='tags', key_result='targets', on=0.9, off=0.1)",
            {"tags": tf.constant([1, 3, 3], tf.int64)}, mode)
  np.testing.assert_allclose(out["targets"], [0.1, 0.9, 0.1, 0.9, 0.1])
  empty = run("onehot(3)", {"label": tf.zeros([0], tf.int64)}, mode)
  np.testing.assert_array_equal(empty["labels"], [0, 0, 0])


@pytest.mark.parametrize("mode", MODES)
def test_keep_and_rng_is_dropped(mode):
  out = run("flip_lr|keep('image')|flip_lr", example(random_image()), mode)
  assert set(out) == {"image"}


def test_value_range_refuses_an_empty_input_range():
  with pytest.raises(ValueError) as error:
    preprocess.parse("value_range(0, 1, 5, 5)")
  assert str(error.value) == ("value_range: in_min=5 and in_max=5 give an empty input "
                              "range; they must differ (in every channel), e.g. in_min=0, "
                              "in_max=255.")
  with pytest.raises(ValueError, match=r"in_min=\[0, 0, 9\] and in_max=\[255, 255, 9\]"):
    preprocess.parse("value_range(0, 1, [0, 0, 9], [255, 255, 9])")
  with pytest.raises(ValueError, match="in_max must be a number or 3 numbers, one per RGB "
                     "channel; got \\[255, 255\\]"):
    preprocess.parse("value_range(0, 1, 0, [255, 255])")


@pytest.mark.parametrize("mode", MODES)
def test_value_range_defaults_to_minus_one_to_one_as_big_visions_and_can_clip(mode):
  image = tf.constant([[[0, 51, 255]]], tf.uint8)
  np.testing.assert_allclose(run("value_range", {"image": image}, mode)["image"].ravel(),
                             [-1.0, -0.6, 1.0], atol=1e-6)
  overshoot = tf.constant([-20.0, 100.0, 300.0])  # a bicubic resize's over- and undershoot
  np.testing.assert_allclose(run("value_range(0, 1, clip_values=True)", {"image": overshoot},
                                 mode)["image"], [0.0, 100 / 255, 1.0], rtol=1e-6)
  assert run("value_range(0, 1)", {"image": overshoot}, mode)["image"].min() < 0


@pytest.mark.parametrize("mode", MODES)
def test_per_channel_ranges_and_vgg_value_range_are_timms_mean_and_std(mode):
  image = random_image()
  mean, std = np.float32([0.485, 0.456, 0.406]), np.float32([0.229, 0.224, 0.225])
  expected = (image / np.float32(255) - mean) / std  # timm's Normalize of ToTensor's pixels
  np.testing.assert_allclose(run("vgg_value_range", {"image": tf.constant(image)},
                                 mode)["image"], expected, rtol=1e-5, atol=1e-5)
  same = run("value_range(0, 1, in_min=[123.675, 116.28, 103.53], "
             "in_max=[182.07, 173.4, 160.905])", {"image": tf.constant(image)}, mode)
  np.testing.assert_allclose(same["image"], expected, rtol=1e-4, atol=1e-4)
  half = run("vgg_value_range(0.5, 0.5)", {"image": tf.constant(image)}, mode)
  np.testing.assert_allclose(half["image"], image / 127.5 - 1, rtol=1e-5, atol=1e-5)


def test_vgg_value_range_refuses_means_of_0_to_255_pixels_and_a_zero_std():
  with pytest.raises(ValueError, match=r"look like values of 0\.\.255 pixels; give them of "
                     r"\[0, 1\] pixels"):
    preprocess.parse("vgg_value_range(mean=(123.675, 116.28, 103.53), std=(58.4, 57.1, 57.4))")
  with pytest.raises(ValueError, match="std must be above 0, got 0"):
    preprocess.parse("vgg_value_range(0.5, 0)")


def test_onehot_of_a_missing_feature_names_it_and_the_features_there():
  # It used to raise a bare KeyError('labels') from inside the traced function.
  with pytest.raises(KeyError) as error:
    run("onehot(10, key='labels')", example(random_image()), "eager")
  assert error.value.args[0] == ("onehot: no feature 'labels' to encode; available: "
                                 "['_rng', 'image', 'label']. Name it with key=.")


def test_onehot_refuses_zero_classes():
  with pytest.raises(ValueError) as error:
    preprocess.parse("onehot(0)")
  assert str(error.value) == "onehot: num_classes must be at least 1, got 0."


def test_value_range_clip_values_must_be_a_bool():
  with pytest.raises(ValueError, match=r"^value_range: clip_values must be True or False, "
                     r"got 'False'\.$"):
    preprocess.parse("value_range(0, 1, clip_values='False')")


@pytest.mark.parametrize("mode", MODES)
def test_value_range_clips_an_inverted_range_to_its_own_ends(mode):
  # vmin > vmax maps black to vmin: the clip still keeps [vmax, vmin].
  image = tf.constant([-20.0, 0.0, 255.0, 300.0])
  np.testing.assert_allclose(run("value_range(1, -1, clip_values=True)", {"image": image},
                                 mode)["image"], [1.0, 1.0, -1.0, -1.0])
