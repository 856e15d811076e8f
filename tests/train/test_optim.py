"""Schedules and optimizers: values at known steps, decay masks, update rules."""
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from vit_jax.train import optim


def lr(base=1.0, warmup=10, decay="linear", end=0.0, boundaries=(0.3, 0.6, 0.9),
       decay_factor=0.1):
  return ml_collections.ConfigDict(
      dict(base=base, warmup_steps=warmup, decay=decay, end=end, boundaries=boundaries,
           decay_factor=decay_factor))


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


def test_step_decay_multiplies_the_rate_by_the_factor_from_each_boundary_on():
  # BiT-HyperRule on a medium dataset: 500 warm-up steps of 10k, x0.1 at 30/60/90%.
  schedule = optim.make_schedule(lr(base=0.003, warmup=500, decay="step"), 10_000)
  steps_and_values = {0: 0.0, 250: 0.0015, 499: 0.003 * 499 / 500, 500: 0.003,
                      2999: 0.003, 3000: 3e-4, 3001: 3e-4, 5999: 3e-4, 6000: 3e-5,
                      8999: 3e-5, 9000: 3e-6, 9999: 3e-6}
  values = [float(schedule(s)) for s in steps_and_values]
  np.testing.assert_allclose(values, list(steps_and_values.values()), rtol=1e-5, atol=1e-12)


def test_step_decay_of_bits_upstream_epochs_without_warmup():
  # 30, 60, 80 of 90 epochs at 100 steps an epoch; another factor.
  schedule = optim.make_schedule(
      lr(base=0.48, warmup=0, decay="step", boundaries=(1 / 3, 2 / 3, 8 / 9),
         decay_factor=0.5), 9_000)
  steps_and_values = {0: 0.48, 2999: 0.48, 3000: 0.24, 5999: 0.24, 6000: 0.12,
                      7999: 0.12, 8000: 0.06, 8999: 0.06}
  values = [float(schedule(s)) for s in steps_and_values]
  np.testing.assert_allclose(values, list(steps_and_values.values()), rtol=1e-6)


def test_boundaries_on_the_same_step_each_decay_there():
  schedule = optim.make_schedule(lr(warmup=0, decay="step", boundaries=(0.5, 0.52)), 10)
  np.testing.assert_allclose([float(schedule(s)) for s in (4, 5, 9)], [1.0, 0.01, 0.01],
                             rtol=1e-6)


@pytest.mark.parametrize("boundaries", [(0.6, 0.3), (0.3, 0.3), (0.0, 0.5), (0.5, 1.0),
                                        (-0.1,), (0.5, "0.7")])
def test_boundaries_that_are_no_increasing_fractions_are_named(boundaries):
  with pytest.raises(ValueError, match=r"config.lr.boundaries=.* must be increasing "
                     r"fractions of the run in \(0, 1\)"):
    optim.make_schedule(lr(decay="step", boundaries=boundaries), 100)


def test_a_boundary_within_the_warmup_is_named():
  with pytest.raises(ValueError, match=r"config.lr.boundaries=\(0.3, 0.6, 0.9\): the "
                     r"decay at 0.3 of the run \(step 30 of 100\) is not after the "
                     r"warm-up \(30 steps; config.lr.warmup_steps=30\)"):
    optim.make_schedule(lr(warmup=30, decay="step"), 100)
  with pytest.raises(ValueError, match=r"the decay at 0.05 of the run \(step 5 of 100\) "
                     r"is not after the warm-up \(10 steps; config.lr.warmup_steps=100\)"):
    optim.make_schedule(lr(warmup=100, decay="step", boundaries=(0.05, 0.5)), 100)


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_a_warmup_as_long_as_the_run_is_cut_to_a_tenth_of_it(decay, caplog):
  """The paper's 500-step fine-tunes (Pets, Flowers) under a 500-step warm-up."""
  schedule = optim.make_schedule(lr(base=0.01, warmup=500, decay=decay, end=1e-4), 500)
  values = np.array([float(schedule(s)) for s in range(501)])
  np.testing.assert_allclose(values[[0, 25, 50]], [0.0, 0.005, 0.01], rtol=1e-5)
  assert np.all(np.diff(values[:51]) > 0) and np.all(np.diff(values[50:]) < 0)
  np.testing.assert_allclose(values[500], 1e-4, rtol=1e-4)
  assert ("config.lr.warmup_steps=500 is not shorter than the run's 500 steps; "
          "warming up for 50 steps") in caplog.text
  longer = optim.make_schedule(lr(base=0.01, warmup=800, decay=decay, end=1e-4), 500)
  assert [float(longer(s)) for s in (50, 500)] == [float(schedule(s)) for s in (50, 500)]


def test_a_warmup_shorter_than_the_run_is_kept():
  schedule = optim.make_schedule(lr(base=1.0, warmup=90, decay="linear"), 100)
  np.testing.assert_allclose([float(schedule(s)) for s in (45, 90, 95, 100)],
                             [0.5, 1.0, 0.5, 0.0], atol=1e-6)


def test_a_step_decay_without_its_fields_names_them():
  config = ml_collections.ConfigDict(dict(base=1.0, warmup_steps=0, decay="step", end=0.0))
  with pytest.raises(ValueError, match=r"config.lr.decay='step' needs "
                     r"config.lr.boundaries and config.lr.decay_factor"):
    optim.make_schedule(config, 100)


def test_bad_schedule_settings_are_named():
  with pytest.raises(ValueError, match=r"config.lr.decay='exponential'; valid: "
                     r"linear, cosine, step"):
    optim.make_schedule(lr(decay="exponential"), 100)
  with pytest.raises(ValueError, match=r"config.lr.warmup_steps=-1 must be >= 0"):
    optim.make_schedule(lr(warmup=-1), 100)
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
