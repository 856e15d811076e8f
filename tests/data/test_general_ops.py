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
