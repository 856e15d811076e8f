"""Schedules and optimizers: values at known steps, decay masks, update rules."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from vit_jax.train import optim


def lr(base=1.0, warmup=10, decay="linear", end=0.0):
  return ml_collections.ConfigDict(
      dict(base=base, warmup_steps=warmup, decay=decay, end=end))


def test_linear_warmup_then_linear_decay():
  schedule = optim.make_schedule(lr(base=1e-3, warmup=10, decay="linear"), 110)
  values = [float(schedule(s)) for s in (0, 5, 10, 60, 110)]
  np.testing.assert_allclose(values, [0.0, 5e-4, 1e-3, 5e-4, 0.0], atol=1e-9)


def test_linear_warmup_then_cosine_decay():
  schedule = optim.make_schedule(lr(base=0.01, warmup=500, decay="cosine"), 10_500)
  values = [float(schedule(s)) for s in (0, 250, 500, 5500, 10_500)]
  np.testing.assert_allclose(values, [0.0, 0.005, 0.01, 0.005, 0.0], atol=1e-7)


def test_cosine_decays_to_the_end_value():
  schedule = optim.make_schedule(lr(base=1.0, warmup=0, decay="cosine", end=0.1), 100)
  np.testing.assert_allclose([float(schedule(0)), float(schedule(100))], [1.0, 0.1], rtol=1e-6)


def test_bad_schedule_settings_are_named():
  with pytest.raises(ValueError, match=r"config.lr.decay='step'"):
    optim.make_schedule(lr(decay="step"), 100)
  with pytest.raises(ValueError, match=r"config.lr.warmup_steps=200 must be in \[0, total steps=100\)"):
    optim.make_schedule(lr(warmup=200), 100)
  with pytest.raises(ValueError, match=r"config.lr.base=0.0 must be > 0"):
    optim.make_schedule(lr(base=0.0, decay="cosine"), 100)


def optim_config(**overrides):
  config = dict(name="adam", b1=0.9, b2=0.999, momentum=0.9, weight_decay=0.0,
                weight_decay_params=r".*/kernel$", grad_clip_norm=0.0)
  config.update(overrides)
  return ml_collections.ConfigDict(config)


PARAMS = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}}


def test_decoupled_weight_decay_hits_kernels_only_and_scales_with_lr():
  tx = optim.make_optimizer(optim_config(name="sgd", momentum=0.0, weight_decay=0.1),
                            optax.constant_schedule(0.5))
  zero_grads = {"dense": {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros((2,))}}
  updates, _ = tx.update(zero_grads, tx.init(PARAMS), PARAMS)
  np.testing.assert_allclose(updates["dense"]["kernel"], -0.5 * 0.1 * np.ones((2, 2)))
  np.testing.assert_allclose(updates["dense"]["bias"], np.zeros(2))


def test_sgd_momentum_accumulates_gradients():
  tx = optim.make_optimizer(optim_config(name="sgd", momentum=0.9), optax.constant_schedule(0.1))
  grads = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}}
  state = tx.init(PARAMS)
  first, state = tx.update(grads, state, PARAMS)
  second, _ = tx.update(grads, state, PARAMS)
  np.testing.assert_allclose(first["dense"]["bias"], [-0.1, -0.1], rtol=1e-6)
  np.testing.assert_allclose(second["dense"]["bias"], [-0.19, -0.19], rtol=1e-6)


def test_adam_first_step_moves_each_weight_by_the_learning_rate():
  tx = optim.make_optimizer(optim_config(), optax.constant_schedule(1e-3))
  grads = {"dense": {"kernel": jnp.full((2, 2), 3.0), "bias": jnp.full((2,), -0.5)}}
  updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  np.testing.assert_allclose(updates["dense"]["kernel"], -1e-3 * np.ones((2, 2)), rtol=1e-4)
  np.testing.assert_allclose(updates["dense"]["bias"], 1e-3 * np.ones(2), rtol=1e-4)


def test_global_norm_clipping_bounds_the_update():
  tx = optim.make_optimizer(optim_config(name="sgd", momentum=0.0, grad_clip_norm=1.0),
                            optax.constant_schedule(1.0))
  grads = {"dense": {"kernel": jnp.full((2, 2), 3.0), "bias": jnp.full((2,), 3.0)}}
  updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  np.testing.assert_allclose(optax.global_norm(updates), 1.0, rtol=1e-6)


def test_unknown_optimizer_is_named():
  with pytest.raises(ValueError, match=r"config.optim.name='lamb'; valid: adam, sgd"):
    optim.make_optimizer(optim_config(name="lamb"), optax.constant_schedule(1.0))
