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
  with pytest.raises(ValueError, match=r"^value_range: in_min and in_max are both 5; the "
                     r"input range must not be empty \(e\.g\. in_min=0, in_max=255\)\.$"):
    preprocess.parse("value_range(0, 1, 5, 5)")


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
