"""Tests for vit_jax.models.dropout: flax's dropout, drawn 16 bits an element."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.models import dropout

SCALE_AT_0_1 = 65536 / (65536 - 6554)  # 0.1 rounds to 6554 / 65536


def apply(rate, x, *, seed=0, deterministic=False):
  return dropout.Dropout(rate).apply(
      {}, x, deterministic=deterministic, rngs={'dropout': jax.random.key(seed)})


@pytest.mark.parametrize('shape', [(64, 197, 192), (8, 3, 197, 197)])  # even, odd last axis
def test_drops_the_rate_and_keeps_the_expectation(shape):
  y = np.asarray(apply(0.1, jnp.ones(shape)))
  # ~2.4M and ~0.9M draws: the fraction's standard deviation is below 3.2e-4.
  assert abs(np.mean(y == 0) - 0.1) < 0.002
  np.testing.assert_allclose(np.unique(y[y != 0]), [SCALE_AT_0_1], rtol=1e-6)
  assert abs(np.mean(y) - 1.0) < 0.003


def test_the_two_halves_of_a_word_are_independent_draws():
  """Elements j and j + 128 of a 256-wide row share one 32-bit word."""
  y = np.asarray(apply(0.5, jnp.ones((4096, 256))))
  first, second = y[:, :128] == 0, y[:, 128:] == 0
  assert abs(first.mean() - 0.5) < 0.01 and abs(second.mean() - 0.5) < 0.01
  assert abs(np.mean(first & second) - 0.25) < 0.01


def test_the_mask_follows_the_key():
  x = jnp.ones((16, 64))
  np.testing.assert_array_equal(apply(0.3, x, seed=0), apply(0.3, x, seed=0))
  assert not np.array_equal(apply(0.3, x, seed=0), apply(0.3, x, seed=1))


def test_a_scalar_is_kept_or_dropped_whole():
  outcomes = {float(apply(0.5, jnp.float32(2.0), seed=seed)) for seed in range(40)}
  assert outcomes == {0.0, 2.0 * 65536 / 32768}


def test_deterministic_rate_zero_and_rate_one():
  x = jax.random.normal(jax.random.key(2), (4, 10))
  np.testing.assert_array_equal(apply(0.5, x, deterministic=True), x)
  np.testing.assert_array_equal(apply(0.0, x), x)
  np.testing.assert_array_equal(apply(1.0, x), np.zeros((4, 10)))


def test_the_gradient_is_the_scaled_mask_and_bfloat16_stays():
  x = jnp.ones((32, 50))
  grad = jax.grad(lambda x: jnp.sum(apply(0.2, x)))(x)
  np.testing.assert_array_equal(grad, apply(0.2, x))  # x = 1: output = mask * scale
  assert apply(0.1, x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


def test_a_rate_outside_zero_to_one_names_the_config_fields():
  with pytest.raises(ValueError, match=r'dropout rate 1.5 must lie in \[0, 1\] '
                                       r'\(config.model.dropout_rate'):
    apply(1.5, jnp.ones((2, 2)))


def test_bfloat16_kept_values_are_scaled_in_float32():
  """A bfloat16 scale (1.109375 for 1.1111) would shrink every kept value by
  0.16%; scaled in float32 and rounded once, the expectation holds."""
  x = jax.random.uniform(jax.random.key(3), (2048, 2048), minval=1.0, maxval=2.0)
  x = x.astype(jnp.bfloat16)
  y = apply(0.1, x, seed=4)
  kept = np.asarray(y) != 0
  expected = (np.asarray(x, np.float32) * SCALE_AT_0_1).astype(jnp.bfloat16)
  np.testing.assert_array_equal(np.asarray(y)[kept], expected[kept])
  # The mean over the 4.2M elements is within a few of its 1.7e-4 sd of x's.
  ratio = np.mean(np.asarray(y, np.float64)) / np.mean(np.asarray(x, np.float64))
  assert abs(ratio - 1) < 7e-4, ratio


def drop_path(rate, x, *, seed=0, deterministic=False):
  return dropout.DropPath().apply(
      {}, x, rate, deterministic=deterministic, rngs={'dropout': jax.random.key(seed)})


@pytest.mark.parametrize('rate', [0.1, 0.5])
def test_drop_path_drops_whole_examples_at_the_rate_and_keeps_the_expectation(rate):
  x = jnp.ones((20_000, 5, 3))
  y = np.asarray(drop_path(rate, x))
  dropped = (y == 0).all(axis=(1, 2))
  kept = (y == np.float32(1 / (1 - rate))).all(axis=(1, 2))
  assert (dropped | kept).all()  # an example is dropped or kept whole
  assert abs(dropped.mean() - rate) < 0.015  # 20k draws: std below 0.0036
  assert abs(y.mean() - 1.0) < 0.04


def test_drop_path_of_rate_0_or_when_deterministic_is_the_identity_and_draws_nothing():
  x = jax.random.normal(jax.random.key(1), (8, 3))
  # No 'dropout' key: a draw would fail.
  np.testing.assert_array_equal(dropout.DropPath().apply({}, x, 0.0, deterministic=False), x)
  np.testing.assert_array_equal(dropout.DropPath().apply({}, x, 0.5, deterministic=True), x)


def test_drop_path_takes_a_traced_rate_as_a_scan_over_layers_gives_it():
  x = jnp.ones((4000, 2), jnp.bfloat16)
  y = jax.jit(lambda rate: drop_path(rate, x))(jnp.float32(0.25))
  assert y.dtype == jnp.bfloat16
  assert abs(float(jnp.mean(y[:, 0] == 0)) - 0.25) < 0.03
  np.testing.assert_array_equal(np.unique(np.asarray(y, np.float32)),
                                [0.0, np.float32(jnp.bfloat16(4 / 3))])
  kept_all = jax.jit(lambda rate: drop_path(rate, x))(jnp.float32(0.0))
  np.testing.assert_array_equal(kept_all, x)
