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
  assert 0.5 <= weight < 1  # folded (see below)
  np.testing.assert_allclose(mixed_labels[0, 3], 1 - weight, rtol=1e-6)
  np.testing.assert_allclose(mixed_images, weight * images + (1 - weight) * np.roll(images, 1, 0),
                             rtol=1e-6)
  np.testing.assert_allclose(mixed_labels.sum(axis=1), 1, rtol=1e-6)


def test_the_weight_is_folded_to_keep_each_row_mostly_its_own_example():
  """As big_vision's: max(a, 1 - a) of a Beta draw, so never under one half."""
  labels = jax.numpy.eye(2)
  weights = [float(mixup.mixup(jax.random.key(seed), labels, labels, alpha=0.2)[1][0, 0])
             for seed in range(64)]
  assert min(weights) >= 0.5
  draws = [float(jax.random.beta(jax.random.key(seed), 0.2, 0.2)) for seed in range(64)]
  assert min(draws) < 0.5  # unfolded, about half of them would be
  np.testing.assert_allclose(weights, np.maximum(draws, 1 - np.array(draws)), rtol=1e-6)
