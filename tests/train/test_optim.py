"""Schedules and optimizers: values at known steps, decay masks, update rules."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from vit_jax import tree_util
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
  config = dict(name="adam", b1=0.9, b2=0.999, momentum=0.9, mu_dtype=None,
                weight_decay=0.0, weight_decay_params=r".*/kernel$",
                head_weight_decay=None, grad_clip_norm=0.0, adafactor_decay_rate=0.8,
                adafactor_min_dim_to_factor=32)
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


def test_gradients_are_clipped_to_the_configured_global_norm_and_smaller_ones_kept():
  """`optim.grad_clip_norm` is the bound, not 1.0 whatever it says: a
  gradient of global norm sqrt(6 * 9) is scaled to norm 2, one of norm
  sqrt(6 / 4) < 2 passes as it is."""
  tx = optim.make_optimizer(optim_config(name="sgd", momentum=0.0, grad_clip_norm=2.0),
                            optax.constant_schedule(1.0))
  for value, scale in ((3.0, 2.0 / np.sqrt(6 * 9.0)), (0.5, 1.0)):
    grads = {"dense": {"kernel": jnp.full((2, 2), value), "bias": jnp.full((2,), value)}}
    updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
    np.testing.assert_allclose(updates["dense"]["kernel"], np.full((2, 2), -value * scale),
                               rtol=1e-6)
    np.testing.assert_allclose(updates["dense"]["bias"], np.full(2, -value * scale), rtol=1e-6)

def test_unknown_optimizer_is_named():
  with pytest.raises(ValueError, match=r"config.optim.name='lamb'; valid: adam, sgd, "
                     r"adafactor$"):
    optim.make_optimizer(optim_config(name="lamb"), optax.constant_schedule(1.0))


@pytest.mark.parametrize("dtype", ["float16", "bf16", "int8"])
def test_unknown_first_moment_dtype_is_named(dtype):
  with pytest.raises(ValueError, match=rf"config.optim.mu_dtype='{dtype}'; valid: "
                     r"float32, bfloat16, or None \(float32\)"):
    optim.make_optimizer(optim_config(mu_dtype=dtype), optax.constant_schedule(1.0))


def test_the_default_adam_is_todays_chain_bit_for_bit():
  """Defaults build the chain of before: same state structure (checkpoints
  resume) and the same updates, to the bit."""
  config = optim_config(weight_decay=0.1, grad_clip_norm=1.0)
  schedule = optax.linear_schedule(1e-3, 0.0, 10)
  tx = optim.make_optimizer(config, schedule)
  before = optax.chain(
      optax.clip_by_global_norm(1.0), optax.scale_by_adam(b1=0.9, b2=0.999),
      optax.add_decayed_weights(0.1, mask=lambda p: {"dense": {"kernel": True,
                                                              "bias": False}}),
      optax.scale_by_learning_rate(schedule))
  state, old_state = tx.init(PARAMS), before.init(PARAMS)
  assert jax.tree.structure(state) == jax.tree.structure(old_state)

  @jax.jit
  def both(step, params, state, old_state):
    grads = jax.tree.map(lambda p: jnp.sin(p * (step + 1.0)), params)
    return tx.update(grads, state, params), before.update(grads, old_state, params)

  params = PARAMS
  for step in range(3):
    (updates, state), (old_updates, old_state) = both(step, params, state, old_state)
    assert all(jax.tree.leaves(jax.tree.map(
        lambda a, b: bool(jnp.array_equal(a, b)), updates, old_updates)))
    params = optax.apply_updates(params, updates)


RNG = np.random.default_rng(0)
TREE = {"Transformer": {"kernel": jnp.asarray(RNG.normal(size=(64, 48)), jnp.float32),
                        "bias": jnp.asarray(RNG.normal(size=(48,)), jnp.float32)},
        "head": {"kernel": jnp.asarray(RNG.normal(size=(48, 10)), jnp.float32),
                 "bias": jnp.zeros((10,), jnp.float32)}}


def test_adam_with_a_bfloat16_first_moment_stays_within_its_rounding_of_float32():
  schedule = optax.constant_schedule(1e-3)
  full = optim.make_optimizer(optim_config(), schedule)
  half = optim.make_optimizer(optim_config(mu_dtype="bfloat16"), schedule)
  full_state, half_state = full.init(TREE), half.init(TREE)
  mu = half_state[0].mu
  assert {leaf.dtype for leaf in jax.tree.leaves(mu)} == {jnp.dtype(jnp.bfloat16)}
  assert {leaf.dtype for leaf in jax.tree.leaves(half_state[0].nu)} == {jnp.dtype(jnp.float32)}

  @jax.jit
  def both(step, full_state, half_state):
    grads = jax.tree.map(lambda p: jnp.cos(p + step), TREE)
    return full.update(grads, full_state, TREE), half.update(grads, half_state, TREE)

  for step in range(5):
    (full_updates, full_state), (half_updates, half_state) = both(step, full_state, half_state)
    # bfloat16 keeps 8 significant bits: each step rounds mu by at most 2**-8
    # of its size, and Adam's step, lr x mu / sqrt(nu), is at most about lr.
    for f, h in zip(jax.tree.leaves(full_updates), jax.tree.leaves(half_updates)):
      assert h.dtype == jnp.float32
      np.testing.assert_allclose(h, f, rtol=0, atol=1e-3 * (step + 1) * 2.0 ** -8)
  assert jax.tree.leaves(half_state[0].mu)[0].dtype == jnp.bfloat16
  assert not all(jax.tree.leaves(jax.tree.map(
      lambda a, b: bool(jnp.array_equal(a, b)), full_updates, half_updates)))


def state_bytes(state):
  return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(state))


def test_adafactor_keeps_a_matrix_second_moment_as_a_row_and_a_column():
  tx = optim.make_optimizer(optim_config(name="adafactor", mu_dtype="bfloat16"),
                            optax.constant_schedule(1e-3))
  factored, momentum = tx.init(TREE)[0]
  kernel = {"v_row": factored.v_row, "v_col": factored.v_col, "v": factored.v}
  # (64, 48) reaches 32 in both dimensions: means over its 64 rows (48,) and
  # over its 48 columns (64,) replace Adam's 64 x 48 nu; (48, 10) does not:
  # it keeps nu whole.
  assert {k: v["Transformer"]["kernel"].shape for k, v in kernel.items()} == {
      "v_row": (48,), "v_col": (64,), "v": (1,)}
  assert {k: v["head"]["kernel"].shape for k, v in kernel.items()} == {
      "v_row": (1,), "v_col": (1,), "v": (48, 10)}
  second = state_bytes(factored) - 4  # less the step count
  adam = optim.make_optimizer(optim_config(), optax.constant_schedule(1e-3))
  adam_nu = state_bytes(adam.init(TREE)[0].nu)
  assert adam_nu == 4 * (64 * 48 + 48 + 48 * 10 + 10)
  assert second == 4 * ((48 + 64 + 1) + (2 + 48) + (2 + 48 * 10) + (2 + 10))
  assert {leaf.dtype for leaf in jax.tree.leaves(momentum.ema)} == {jnp.dtype(jnp.bfloat16)}
  # Every moment's path ends with its parameter's name (sharding matches on it).
  names = [tree_util.path_name(path)
           for path, _ in jax.tree_util.tree_flatten_with_path(tx.init(TREE))[0]]
  assert [n for n in names if n.endswith("Transformer/kernel")] == [
      "0/0/v_row/Transformer/kernel", "0/0/v_col/Transformer/kernel",
      "0/0/v/Transformer/kernel", "0/1/ema/Transformer/kernel"]


def test_adafactors_second_moment_decay_is_capped_at_b2():
  """big_vision's schedule: 1 - (t + 1) ** -0.8 at step t, at most b2 (0.999)."""
  tx = optim.make_optimizer(optim_config(name="adafactor"), optax.constant_schedule(1.0))
  params = {"w": jnp.ones((1,))}

  def second_moment(state, grad):
    _, state = tx.update({"w": jnp.full((1,), grad)}, state, params)
    return state, float(state[0][0].v["w"][0])

  state, first = second_moment(tx.init(params), 2.0)
  assert first == pytest.approx(4.0)  # decay 0 at the first step: g ** 2
  state, second = second_moment(state, 1.0)
  decay = 1.0 - 2.0 ** -0.8
  assert second == pytest.approx(decay * 4.0 + (1 - decay) * 1.0, rel=1e-6)
  factored, momentum = state[0]
  late = ((factored._replace(count=jnp.asarray(10**6, jnp.int32)), momentum),) + state[1:]
  _, capped = second_moment(late, 1.0)  # uncapped: 1 - 1e6 ** -0.8 = 0.99998
  assert capped == pytest.approx(0.999 * second + 0.001 * 1.0, rel=1e-6)


def test_adafactors_second_moment_decays_with_the_configured_exponent():
  """`optim.adafactor_decay_rate` is the exponent: at the second step the
  decay is 1 - 2 ** -0.5 with 0.5, not the default's 1 - 2 ** -0.8."""
  tx = optim.make_optimizer(optim_config(name="adafactor", adafactor_decay_rate=0.5),
                            optax.constant_schedule(1.0))
  params = {"w": jnp.ones((1,))}
  state = tx.init(params)
  for grad in (2.0, 1.0):
    _, state = tx.update({"w": jnp.full((1,), grad)}, state, params)
  decay = 1.0 - 2.0 ** -0.5
  assert float(state[0][0].v["w"][0]) == pytest.approx(decay * 4.0 + (1 - decay) * 1.0, rel=1e-6)


def test_adafactors_momentum_is_b1s_average_of_the_scaled_gradients_without_debiasing():
  """Scaling-ViT's (big_vision's) momentum: m = b1 m + (1 - b1) g / sqrt(v),
  not debiased, so the first step moves by (1 - b1) x lr, not by lr as
  Adam's debiased one does. With b1 0.8, gradients 2 then 1 (v = 4, then
  d 4 + (1 - d) 1 with d = 1 - 2 ** -0.8) at lr 1."""
  tx = optim.make_optimizer(optim_config(name="adafactor", b1=0.8),
                            optax.constant_schedule(1.0))
  params = {"w": jnp.ones((1,))}
  state = tx.init(params)
  first, state = tx.update({"w": jnp.full((1,), 2.0)}, state, params)
  second, _ = tx.update({"w": jnp.full((1,), 1.0)}, state, params)
  m1 = 0.2 * (2.0 / np.sqrt(4.0))
  decay = 1.0 - 2.0 ** -0.8
  m2 = 0.8 * m1 + 0.2 * (1.0 / np.sqrt(decay * 4.0 + (1 - decay) * 1.0))
  np.testing.assert_allclose([float(first["w"][0]), float(second["w"][0])], [-m1, -m2],
                             rtol=1e-6)

def test_adafactor_lowers_a_toy_models_loss_on_a_fixed_batch():
  x = jnp.asarray(RNG.normal(size=(32, 64)), jnp.float32)
  y = jnp.asarray(RNG.integers(0, 10, size=32))

  def loss(params):
    hidden = jnp.tanh(x @ params["Transformer"]["kernel"] + params["Transformer"]["bias"])
    logits = hidden @ params["head"]["kernel"] + params["head"]["bias"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  tx = optim.make_optimizer(
      optim_config(name="adafactor", mu_dtype="bfloat16", weight_decay=0.03,
                   head_weight_decay=3.0, grad_clip_norm=1.0),
      optax.constant_schedule(1e-2))
  params = jax.tree.map(lambda p: p * 0.1, TREE)

  @jax.jit
  def step(params, state):
    value, grads = jax.value_and_grad(loss)(params)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, value

  state, losses = tx.init(params), []
  for _ in range(20):
    params, state, value = step(params, state)
    losses.append(float(value))
  assert losses[-1] < 0.5 * losses[0], losses
  assert all(b < a for a, b in zip(losses, losses[1:])), losses


def test_the_head_gets_its_own_decoupled_weight_decay_times_the_lr():
  params = {"Transformer": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.ones((2,))},
            "head": {"kernel": jnp.full((2, 3), 4.0), "bias": jnp.ones((3,))}}
  zero_grads = jax.tree.map(jnp.zeros_like, params)

  def updates(**overrides):
    tx = optim.make_optimizer(optim_config(name="sgd", momentum=0.0, **overrides),
                              optax.constant_schedule(0.5))
    return tx.update(zero_grads, tx.init(params), params)[0]

  split = updates(weight_decay=0.03, head_weight_decay=3.0)
  np.testing.assert_array_equal(split["Transformer"]["kernel"],
                                np.full((2, 2), -0.5 * 0.03 * 2.0, np.float32))
  np.testing.assert_array_equal(split["head"]["kernel"],
                                np.full((2, 3), -0.5 * 3.0 * 4.0, np.float32))
  for bias in (split["Transformer"]["bias"], split["head"]["bias"]):
    np.testing.assert_array_equal(bias, np.zeros_like(bias))
  only_head = updates(weight_decay=0.0, head_weight_decay=3.0)
  np.testing.assert_array_equal(only_head["Transformer"]["kernel"], np.zeros((2, 2)))
  np.testing.assert_array_equal(only_head["head"]["kernel"], split["head"]["kernel"])
  no_head = updates(weight_decay=0.03, head_weight_decay=0.0)
  np.testing.assert_array_equal(no_head["head"]["kernel"], np.zeros((2, 3)))
  np.testing.assert_array_equal(no_head["Transformer"]["kernel"],
                                split["Transformer"]["kernel"])
  unset = updates(weight_decay=0.03)  # None: the head decays like the body
  np.testing.assert_array_equal(unset["head"]["kernel"],
                                np.full((2, 3), -0.5 * 0.03 * 4.0, np.float32))


def test_deits_distillation_head_decays_with_the_head():
  """HEAD_PARAMS covers DeiT's `head_dist` too: both classifiers of a
  distilled model get `head_weight_decay` (3.0 here, x lr 0.5), the body
  `weight_decay`; biases neither."""
  params = {"Transformer": {"kernel": jnp.full((2, 2), 2.0)},
            "head": {"kernel": jnp.full((2, 3), 4.0), "bias": jnp.ones((3,))},
            "head_dist": {"kernel": jnp.full((2, 3), 4.0), "bias": jnp.ones((3,))}}
  tx = optim.make_optimizer(optim_config(name="sgd", momentum=0.0, weight_decay=0.03,
                                         head_weight_decay=3.0),
                            optax.constant_schedule(0.5))
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  np.testing.assert_array_equal(updates["Transformer"]["kernel"],
                                np.full((2, 2), -0.5 * 0.03 * 2.0, np.float32))
  for head in ("head", "head_dist"):
    np.testing.assert_array_equal(updates[head]["kernel"],
                                  np.full((2, 3), -0.5 * 3.0 * 4.0, np.float32), err_msg=head)
    np.testing.assert_array_equal(updates[head]["bias"], np.zeros(3), err_msg=head)

def rsqrt_lr(warmup=10, timescale=100, cooldown_steps=0, end=0.0):
  config = lr(base=0.5, warmup=warmup, decay="rsqrt", end=end)
  config.update(timescale=timescale, cooldown_steps=cooldown_steps)
  return config


def test_rsqrt_decays_as_the_reciprocal_square_root_after_the_warmup():
  # 0.5 / sqrt(1 + t / 100), t counted from the end of the 10-step warm-up.
  schedule = optim.make_schedule(rsqrt_lr(), 1_000)
  steps_and_values = {0: 0.0, 5: 0.25, 10: 0.5, 110: 0.5 / np.sqrt(2), 310: 0.25,
                      1_000: 0.5 / np.sqrt(1 + 990 / 100)}
  values = [float(schedule(s)) for s in steps_and_values]
  np.testing.assert_allclose(values, list(steps_and_values.values()), rtol=1e-6)


def test_rsqrt_does_not_depend_on_the_run_length_until_its_cooldown():
  short = optim.make_schedule(rsqrt_lr(cooldown_steps=100), 1_000)
  long = optim.make_schedule(rsqrt_lr(cooldown_steps=100), 5_000)
  np.testing.assert_allclose([float(short(s)) for s in range(0, 900, 50)],
                             [float(long(s)) for s in range(0, 900, 50)], rtol=1e-6)
  # The last 100 steps fall linearly from the rsqrt value to `end`.
  at_900 = 0.5 / np.sqrt(1 + 890 / 100)
  np.testing.assert_allclose([float(short(s)) for s in (900, 950, 1_000)],
                             [at_900, 0.5 / np.sqrt(1 + 940 / 100) / 2, 0.0], rtol=1e-5)


def test_an_rsqrt_cooldown_longer_than_the_decay_is_refused():
  with pytest.raises(ValueError, match=r"config.lr.cooldown_steps=2000 is longer than "
                     r"the 990 steps after the warm-up"):
    optim.make_schedule(rsqrt_lr(cooldown_steps=2_000), 1_000)


def tiny_vit_params(**options):
  """Parameters of a tiny ViT, all ones."""
  from vit_jax import models
  from vit_jax.models import build
  model = models.get_model("Ti/8", num_classes=3, hidden_size=16, num_layers=3, mlp_dim=32,
                           num_heads=2, num_registers=1, **options)
  return jax.tree.map(jnp.ones_like, build.abstract_params(model, 16))


@pytest.mark.parametrize("classifier", ["token", "map", "gap", "distilled"])
def test_layer_decay_scales_each_blocks_step_by_its_depth_as_timm_groups_them(classifier):
  """SGD at rate 1 on gradients of 1: the step is each parameter's multiplier,
  weight decay included (it is scaled by the learning rate too)."""
  distilled = classifier == "distilled"
  params = tiny_vit_params(classifier="token" if distilled else classifier,
                           fc_norm=classifier == "gap", distillation_token=distilled)
  tx = optim.make_optimizer(optim_config(name="sgd", momentum=0.0, weight_decay=0.5,
                                         layer_decay=0.5), optax.constant_schedule(1.0))
  updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  steps = {name: float(-leaf.ravel()[0]) for name, leaf in tree_util.flatten_named(updates)}
  decayed = 1.5  # a kernel: gradient 1 plus weight decay 0.5 of a weight of 1
  # Three blocks: embeddings 0.5**4, block i 0.5**(3 - i), after the blocks 1.
  assert steps["embedding/kernel"] == decayed * 0.5**4
  assert steps["registers"] == steps["Transformer/posembed_input/pos_embedding"] == 0.5**4
  assert steps.get("cls", 0.5**4) == steps.get("dist", 0.5**4) == 0.5**4
  assert steps.get("MAPHead_0/probe", 1.0) == 1.0
  assert steps["Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"] == decayed * 0.5**3
  assert steps["Transformer/encoderblock_2/LayerNorm_0/scale"] == 0.5
  # With the last block, as timm; its fc_norm with the head.
  assert steps.get("Transformer/encoder_norm/scale", 0.5) == 0.5
  assert steps.get("fc_norm/scale", 1.0) == 1.0
  assert steps["head/kernel"] == steps.get("head_dist/kernel", decayed) == decayed


def test_layer_decay_of_a_scanned_model_equals_the_unrolled_models():
  from vit_jax.models import layer_stack

  unrolled = tiny_vit_params()
  stacked = layer_stack.like(unrolled, tiny_vit_params(scan=True))
  tx = optim.make_optimizer(optim_config(layer_decay=0.7), optax.constant_schedule(1e-3))
  grads = jax.tree.map(lambda p: jnp.arange(p.size, dtype=p.dtype).reshape(p.shape) - 1.5,
                       unrolled)
  update = jax.jit(tx.update)
  want, _ = update(grads, tx.init(unrolled), unrolled)
  got, _ = update(layer_stack.like(grads, stacked), tx.init(stacked), stacked)
  for name, leaf in tree_util.flatten_named(layer_stack.like(want, stacked)):
    np.testing.assert_allclose(dict(tree_util.flatten_named(got))[name], leaf, rtol=1e-6,
                               err_msg=name)


def test_layer_decay_of_a_model_without_blocks_is_refused():
  tx = optim.make_optimizer(optim_config(layer_decay=0.7), optax.constant_schedule(1.0))
  with pytest.raises(ValueError, match=r"^config.optim.layer_decay=0.7 scales the learning "
                                       r"rate of a ViT's blocks by depth, and these "
                                       r"parameters have no Transformer/encoderblock"):
    tx.update(PARAMS, tx.init(PARAMS), PARAMS)
