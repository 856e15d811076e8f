"""Mixup: each example blended with its neighbour, labels alike."""
import jax
import numpy as np

from vit_jax.train import mixup


def test_mixup_blends_each_example_with_its_neighbour():
  images = jax.numpy.arange(4 * 3, dtype=jax.numpy.float32).reshape(4, 3)
  labels = jax.numpy.eye(4)
  same = mixup.mixup(jax.random.key(0), images, labels, alpha=0.0)
  np.testing.assert_array_equal(same[0], images)
  mixed_images, mixed_labels = jax.jit(
      lambda k, x, y: mixup.mixup(k, x, y, alpha=0.4))(jax.random.key(1), images, labels)
  weight = float(mixed_labels[0, 0])
  assert 0 < weight < 1
  np.testing.assert_allclose(mixed_labels[0, 3], 1 - weight, rtol=1e-6)
  np.testing.assert_allclose(mixed_images, weight * images + (1 - weight) * np.roll(images, 1, 0),
                             rtol=1e-6)
  np.testing.assert_allclose(mixed_labels.sum(axis=1), 1, rtol=1e-6)
