"""The train step on its own: EMA of the parameters, label smoothing, accumulation."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from conftest import tiny_config
from vit_jax.models import build
from vit_jax.train import losses, optim, sharding, steps


def run_steps(config, num_steps, learning_rate=0.1):
  """The states before and after each of ``num_steps`` steps on one batch."""
  mesh = sharding.make_mesh(config.mesh)
  model = build.model_from_config(config)
  schedule = optax.constant_schedule(learning_rate)
  tx = optim.make_optimizer(config.optim, schedule)
  params = build.init_params(model, 16, seed=0)
  # A head that prefers later classes, so the loss depends on the targets.
  params["head"]["bias"] = jnp.arange(10, dtype=jnp.float32)
  # The state train.py and scripts/benchmark.py both build.
  states = [steps.initial_state(params, tx, config)]
  batch = {"image": jax.random.normal(jax.random.key(1), (8, 16, 16, 3)),
           "labels": jax.nn.one_hot(jnp.arange(8) % 10, 10)}
  step = jax.jit(steps.make_train_step(model, tx, losses.get_loss(config.loss),
                                       schedule, config, mesh))
  for _ in range(num_steps):
    new_state, metrics = step(states[-1], batch)
    states.append(new_state)
  logits = model.apply({"params": params}, batch["image"], train=False)
  return states, metrics, (logits, batch["labels"])


def run_one_step(config):
  (state, new_state), metrics, outputs = run_steps(config, 1)
  return state, new_state, metrics, outputs


def test_ema_warms_up_as_tensorflows_num_updates_rule(tmp_path):
  """decay = min(ema_decay, (1 + step) / (10 + step)): 1/10, 2/11, then 0.2."""
  config = tiny_config(str(tmp_path), ema_decay=0.2)
  states, metrics, _ = run_steps(config, 3)
  assert set(states[0]) == {"step", "params", "opt_state", "ema_params", "skipped_steps",
                            "first_skipped_step"}
  assert int(states[-1]["step"]) == 3 and int(metrics["skipped_steps"]) == 0
  expected = states[0]["params"]
  for state, decay in zip(states[1:], (1 / 10, 2 / 11, 0.2)):
    expected = jax.tree.map(lambda old, new, d=decay: d * old + (1 - d) * new,
                            expected, state["params"])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 state["ema_params"], expected)
  moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(states[0]["params"]),
                                                 jax.tree.leaves(states[-1]["params"]))]
  assert any(moved)


def test_the_ema_of_bfloat16_parameters_is_kept_in_float32_and_averages_them(tmp_path):
  """In bfloat16, 0.9999 is 1 and (1 + t) / (10 + t) rounds so that a step's
  two weights do not sum to 1: an average of parameters that never move
  shrank (9% in 3,000 steps) instead of staying where they are."""
  config = tiny_config(str(tmp_path), ema_decay=0.9999,
                       **{"model.param_dtype": "bfloat16", "optim.weight_decay": 0.0})
  states, _, _ = run_steps(config, 20, learning_rate=0.0)
  params, ema = states[-1]["params"], states[-1]["ema_params"]
  assert params["embedding"]["kernel"].dtype == jnp.bfloat16
  assert {leaf.dtype for leaf in jax.tree.leaves(ema)} == {jnp.dtype(jnp.float32)}
  jax.tree.map(lambda e, p: np.testing.assert_array_equal(e, np.asarray(p, np.float32)),
               ema, params)


@pytest.mark.parametrize("param_dtype", ["bfloat16", "float16"])
def test_the_optimizer_state_of_half_precision_parameters_is_float32(tmp_path, param_dtype):
  """In bfloat16 Adam's b2 of 0.999 is 1, so its second moment stopped
  decaying; in float16 its epsilon is 0 and small gradients' squares too, so
  the first step wrote -inf into the parameters."""
  config = tiny_config(str(tmp_path), **{"model.param_dtype": param_dtype})
  states, metrics, _ = run_steps(config, 2, learning_rate=1e-3)
  adam = states[-1]["opt_state"][1]  # clipping, then Adam's scale_by_adam
  assert {leaf.dtype for leaf in jax.tree.leaves((adam.mu, adam.nu))} == {
      jnp.dtype(jnp.float32)}
  assert states[-1]["params"]["embedding"]["kernel"].dtype == param_dtype
  assert int(metrics["skipped_steps"]) == 0
  assert all(np.isfinite(np.asarray(leaf, np.float32)).all()
             for leaf in jax.tree.leaves(states[-1]["params"]))
  moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(states[0]["params"]),
                                                    jax.tree.leaves(states[-1]["params"]))]
  assert sum(moved) > len(moved) // 2


def test_the_step_trains_on_smoothed_labels(tmp_path):
  _, _, plain, (logits, labels) = run_one_step(tiny_config(str(tmp_path)))
  _, _, smoothed, _ = run_one_step(tiny_config(str(tmp_path), label_smoothing=0.2))
  log_probs = np.asarray(jax.nn.log_softmax(logits))
  smooth_targets = np.asarray(labels) * 0.8 + 0.02
  np.testing.assert_allclose(plain["loss"], -np.mean(np.sum(labels * log_probs, -1)), rtol=1e-5)
  np.testing.assert_allclose(smoothed["loss"], -np.mean(np.sum(smooth_targets * log_probs, -1)),
                             rtol=1e-5)


def test_a_skipped_step_keeps_the_learning_rate_on_schedule(tmp_path):
  """A NaN step changes no parameter or moment, but the schedule moves on:
  the next update uses the rate of its own step, the one the log shows."""
  config = tiny_config(str(tmp_path), on_nonfinite="skip", **{"optim.weight_decay": 0.0})
  mesh = sharding.make_mesh(config.mesh)
  model = build.model_from_config(config)
  schedule = optax.linear_schedule(1.0, 0.0, 10)
  tx = optim.make_optimizer(config.optim, schedule)
  params = build.init_params(model, 16, seed=0)
  step = jax.jit(steps.make_train_step(model, tx, losses.get_loss(config.loss),
                                       schedule, config, mesh))
  batch = {"image": jax.random.normal(jax.random.key(1), (8, 16, 16, 3)),
           "labels": jax.nn.one_hot(jnp.arange(8) % 10, 10)}
  nan_batch = dict(batch, image=batch["image"].at[0, 0, 0, 0].set(jnp.nan))
  state = steps.initial_state(params, tx, config)
  skipped, skipped_metrics = step(state, nan_batch)
  assert int(skipped_metrics["skipped_steps"]) == 1
  jax.tree.map(np.testing.assert_array_equal, skipped["params"], params)
  adam, schedule_state = skipped["opt_state"][1], skipped["opt_state"][-1]
  assert int(adam.count) == 0 and int(schedule_state.count) == 1
  # The next update is Adam's first (|update| = lr where the gradient is
  # not tiny), at the rate of step 1: 0.9, where a delayed schedule gives 1.0.
  after_skip, metrics = step(skipped, batch)
  assert float(metrics["lr"]) == float(schedule(1)) == np.float32(0.9)
  largest = max(float(jnp.max(jnp.abs(new - old))) for new, old in zip(
      jax.tree.leaves(after_skip["params"]), jax.tree.leaves(params)))
  assert abs(largest - 0.9) < 1e-4, largest


def test_accumulated_gradients_are_summed_in_float32_for_bfloat16_parameters(tmp_path):
  """The scan's carry is float32; the step's update takes the parameters' dtype."""
  config = tiny_config(str(tmp_path), accum_steps=4, **{"model.param_dtype": "bfloat16"})
  mesh = sharding.make_mesh(config.mesh)
  model = build.model_from_config(config)
  tx = optim.make_optimizer(config.optim, optax.constant_schedule(0.1))
  state = steps.initial_state(build.init_params(model, 16, seed=0), tx, config)
  assert {leaf.dtype for leaf in jax.tree.leaves(state["params"])} == {jnp.dtype(jnp.bfloat16)}
  batch = {"image": jnp.zeros((8, 16, 16, 3)), "labels": jax.nn.one_hot(jnp.arange(8), 10)}
  step = steps.make_train_step(model, tx, losses.get_loss(config.loss),
                               optax.constant_schedule(0.1), config, mesh)
  jaxpr = jax.make_jaxpr(step)(state, batch)
  scans = [eqn for eqn in jaxpr.eqns if eqn.primitive.name == "scan"]
  assert len(scans) == 1
  consts, carried = scans[0].params["num_consts"], scans[0].params["num_carry"]
  carry = scans[0].params["jaxpr"].in_avals[consts:consts + carried]
  assert {aval.dtype for aval in carry} == {jnp.dtype(jnp.float32)}
  new_state, _ = jax.jit(step)(state, batch)
  assert {leaf.dtype for leaf in jax.tree.leaves(new_state["params"])} == {jnp.dtype(jnp.bfloat16)}


def fsdp_config(tmp_path, **overrides):
  """`tiny_config` split over 8 FSDP devices, small enough that its kernels split."""
  return tiny_config(str(tmp_path), **{"mesh.data": 1, "mesh.fsdp": 8,
                                       "mesh.fsdp_min_size": 2**10, **overrides})


def test_under_fsdp_the_accumulation_loop_gathers_the_kernels_none_are_gathered_before_it(
    tmp_path):
  """The compiled step of an unrolled model, 8 FSDP devices, 2 micro-batches,
  has no all-gather in its entry computation: the kernels are gathered in
  the loop, for each micro-batch. Without the barrier that ties the
  parameters to each micro-batch, XLA hoisted the gathers of the loop's
  invariant parameters out of it and held every layer's whole kernels for
  the whole loop: on a 4-layer model of width 256, XLA:CPU planned 15.2 MB of
  temporaries a device at 2 micro-batches where one batch took 8.2 (11.0
  with the barrier). Checked on the program, not its byte count: that XLA does not
  gather before the loop is the cause, and holds at any size, where a bound
  on the bytes would rest on XLA:CPU's buffer assignment of a tiny model.
  """
  config = fsdp_config(tmp_path, accum_steps=2)
  assert not config.model.get("scan")
  mesh = sharding.make_mesh(config.mesh)
  parts = steps.training_parts(config, total_steps=10)
  abstract = parts.abstract_state()
  shardings = sharding.state_shardings(mesh, abstract, config.mesh)
  attention = shardings["params"]["Transformer"]["encoderblock_0"][
      "MultiHeadDotProductAttention_1"]
  assert attention["query"]["kernel"].spec != P()  # split: there are gathers to place
  placed = sharding.batch_sharding(mesh)
  batch = {"image": jax.ShapeDtypeStruct((32, 16, 16, 3), jnp.float32, sharding=placed),
           "labels": jax.ShapeDtypeStruct((32, 10), jnp.float32, sharding=placed)}
  state = jax.tree.map(lambda leaf, where: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                                sharding=where),
                       abstract, shardings)
  hlo = parts.jit_train_step(mesh, shardings).lower(state, batch).compile().as_text()
  gathers, computation = {}, None
  for line in hlo.splitlines():
    if line.endswith("{") and not line.startswith(" "):  # a computation's header
      computation = "entry" if line.startswith("ENTRY") else line.split()[0]
      gathers[computation] = 0
    elif re.search(r"\ball-gather(-start)?\(", line):
      gathers[computation] += 1
  assert gathers["entry"] == 0, f"{gathers['entry']} all-gathers before the loop"
  assert sum(gathers.values()) > 0


class LinearModel:
  """A linear classifier of the flattened image in the ViT's place: its
  gradients have a closed form, and its step compiles in a moment."""

  def apply(self, variables, images, *, train, rngs):
    del train, rngs
    params = variables["params"]
    return images.reshape(images.shape[0], -1) @ params["kernel"] + params["bias"]


class KeyRecordingModel(LinearModel):
  """`LinearModel` that records, each time it runs, its dropout key and the
  first pixel of the batch it is given (after mixup)."""

  def __init__(self):
    self.seen = []

  def apply(self, variables, images, *, train, rngs):
    jax.debug.callback(
        lambda key, pixel: self.seen.append((tuple(np.asarray(key).ravel()), float(pixel))),
        jax.random.key_data(rngs["dropout"]), images[0, 0, 0, 0])
    return super().apply(variables, images, train=train, rngs=rngs)


def linear_config(tmp_path, **overrides):
  """Plain SGD at learning rate 0.5: no momentum, weight decay, clipping or mixup."""
  return tiny_config(str(tmp_path), **{
      "loss": "softmax_xent", "optim.name": "sgd", "optim.momentum": 0.0,
      "optim.weight_decay": 0.0, "optim.grad_clip_norm": 0.0, "mixup.alpha": 0.0,
      **overrides})


LINEAR_RNG = np.random.default_rng(0)
LINEAR_PARAMS = {"kernel": jnp.asarray(0.1 * LINEAR_RNG.normal(size=(12, 5)), jnp.float32),
                 "bias": jnp.asarray(0.1 * np.arange(5), jnp.float32)}
LINEAR_BATCH = {"image": jnp.asarray(LINEAR_RNG.normal(size=(32, 2, 2, 3)), jnp.float32),
                "labels": jax.nn.one_hot(jnp.arange(32) % 5, 5)}


def linear_step(config, model=None, loss_fn=None):
  """The jitted train step of `LinearModel` (or ``model``) and its first state."""
  schedule = optax.constant_schedule(0.5)
  tx = optim.make_optimizer(config.optim, schedule)
  step = steps.make_train_step(model or LinearModel(), tx,
                               loss_fn or losses.get_loss(config.loss), schedule, config,
                               sharding.make_mesh(config.mesh))
  return jax.jit(step), steps.initial_state(LINEAR_PARAMS, tx, config)


def softmax_loss_and_grads(params, batch):
  """The mean softmax cross-entropy of `LinearModel` and its gradients, by hand."""
  x = np.asarray(batch["image"], np.float64).reshape(len(batch["image"]), -1)
  y = np.asarray(batch["labels"], np.float64)
  logits = x @ np.asarray(params["kernel"], np.float64) + np.asarray(params["bias"], np.float64)
  logits -= logits.max(axis=1, keepdims=True)
  probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  loss = -np.mean(np.sum(y * np.log(probs), axis=1))
  dlogits = (probs - y) / len(x)
  return loss, {"kernel": x.T @ dlogits, "bias": dlogits.sum(axis=0)}


@pytest.mark.parametrize("accum_steps", [1, 4])
def test_a_step_follows_the_full_batchs_mean_gradient_however_it_is_accumulated(
    tmp_path, accum_steps):
  """Micro-batches change memory, not the update: with 4 of them the step
  applies the full batch's mean gradient (their sum divided by 4) and logs
  the full batch's mean loss and its gradient's global norm. An undivided
  sum would be a 4x step under SGD or a clipped norm, and a 4x loss in the
  log."""
  step, state = linear_step(linear_config(tmp_path, accum_steps=accum_steps))
  new_state, step_metrics = step(state, LINEAR_BATCH)
  loss, grads = softmax_loss_and_grads(LINEAR_PARAMS, LINEAR_BATCH)
  for name in ("kernel", "bias"):
    np.testing.assert_allclose(new_state["params"][name],
                               np.asarray(LINEAR_PARAMS[name]) - 0.5 * grads[name],
                               rtol=1e-5, atol=1e-7, err_msg=name)
  np.testing.assert_allclose(step_metrics["loss"], loss, rtol=1e-5)
  grad_norm = np.sqrt(sum(np.sum(g ** 2) for g in grads.values()))
  np.testing.assert_allclose(step_metrics["grad_norm"], grad_norm, rtol=1e-5)


def infinite_gradient_loss(logits, labels):
  # sqrt at 0: the loss is the softmax loss, its gradient infinite.
  zero = logits[:, 0] - jax.lax.stop_gradient(logits[:, 0])
  return losses.softmax_xent(logits, labels) + jnp.sqrt(zero)


def infinite_loss(logits, labels):
  # An infinite constant: the loss is infinite, its gradient the softmax loss's.
  return losses.softmax_xent(logits, labels) + jnp.inf


@pytest.mark.parametrize("loss_fn", [infinite_gradient_loss, infinite_loss])
def test_a_step_whose_loss_or_gradient_alone_is_not_finite_is_skipped(tmp_path, loss_fn):
  """Either is enough: a finite loss does not make an infinite gradient's
  update safe, nor a finite gradient an infinite loss's. The step changes
  no parameter, counts one skip and names step 1 as the first (0 would
  say there was none)."""
  step, state = linear_step(linear_config(tmp_path), loss_fn=loss_fn)
  new_state, step_metrics = step(state, LINEAR_BATCH)
  finite = {"loss": bool(np.isfinite(step_metrics["loss"])),
            "grad_norm": bool(np.isfinite(step_metrics["grad_norm"]))}
  assert finite == ({"loss": True, "grad_norm": False} if loss_fn is infinite_gradient_loss
                    else {"loss": False, "grad_norm": True})
  jax.tree.map(np.testing.assert_array_equal, new_state["params"], LINEAR_PARAMS)
  assert [int(new_state[k]) for k in ("step", "skipped_steps", "first_skipped_step")] == [1, 1, 1]


def test_the_counters_keep_the_first_skipped_step_and_count_every_skip(tmp_path):
  """Good, NaN, good, NaN, good: two skips, the first at step 2, which the
  loop names when it stops. A skipped step moves neither the parameters
  nor their average (an EMA fed the unchanged parameters would still move
  towards them)."""
  step, state = linear_step(linear_config(tmp_path, ema_decay=0.5))
  nan_batch = dict(LINEAR_BATCH, image=LINEAR_BATCH["image"].at[3, 0, 0, 0].set(jnp.nan))
  counters = []
  for batch in (LINEAR_BATCH, nan_batch, LINEAR_BATCH, nan_batch, LINEAR_BATCH):
    new_state, _ = step(state, batch)
    if batch is nan_batch:
      for part in ("params", "ema_params"):
        jax.tree.map(np.testing.assert_array_equal, new_state[part], state[part])
    else:
      assert not np.array_equal(new_state["ema_params"]["bias"], state["ema_params"]["bias"])
    state = new_state
    counters.append((int(state["step"]), int(state["skipped_steps"]),
                     int(state["first_skipped_step"])))
  assert counters == [(1, 0, 0), (2, 1, 2), (3, 1, 2), (4, 2, 2), (5, 2, 2)]


def test_each_micro_batch_and_step_draws_its_own_dropout_key_and_mixup_weight(tmp_path):
  """Dropout keys and the mixup weight come from the seed and the step alone:
  the two micro-batches of a step draw different masks, the next step other
  ones and another weight, and the same step again (a resumed run) the same.
  Row 0 of the batch is 0 and the rest 1, so after mixup with weight w its
  first pixel is 1 - w (row 31 rolled in)."""
  model = KeyRecordingModel()
  step, state = linear_step(linear_config(tmp_path, accum_steps=2, **{"mixup.alpha": 0.4}),
                            model=model)
  batch = dict(LINEAR_BATCH, image=jnp.ones((32, 2, 2, 3)).at[0].set(0.0))

  def draws(step_number):
    model.seen.clear()
    jax.block_until_ready(step(dict(state, step=jnp.asarray(step_number, jnp.int32)), batch))
    jax.effects_barrier()
    keys = {key for key, _ in model.seen}
    weight = 1.0 - min(pixel for _, pixel in model.seen)
    return keys, weight

  (keys_0, weight_0), (keys_1, weight_1) = draws(0), draws(1)
  assert len(keys_0) == len(keys_1) == 2
  assert not keys_0 & keys_1
  assert 0.5 <= weight_0 <= 1 and 0.5 <= weight_1 <= 1 and weight_0 != weight_1
  assert draws(0) == (keys_0, weight_0)


def test_micro_batches_are_split_where_the_rows_are_no_row_moves_between_devices(tmp_path):
  """Each micro-batch takes every accum_steps-th row, so that each device's
  part of it is rows the device already holds: the compiled step of a
  data-parallel batch over 8 devices in 2 micro-batches communicates only
  the gradients' all-reduce. Micro-batches of consecutive rows lie on half
  the devices each, and XLA moved them with all-to-alls and
  collective-permutes every step."""
  config = linear_config(tmp_path, accum_steps=2)
  mesh = sharding.make_mesh(config.mesh)
  schedule = optax.constant_schedule(0.5)
  tx = optim.make_optimizer(config.optim, schedule)
  state = steps.initial_state(LINEAR_PARAMS, tx, config)
  replicated = jax.tree.map(lambda _: sharding.replicated(mesh), state)
  step = steps.jit_train_step(LinearModel(), tx, losses.get_loss(config.loss), schedule, config,
                              mesh, replicated)
  hlo = step.lower(state, LINEAR_BATCH).compile().as_text()
  moves = re.findall(r"\b(all-to-all|collective-permute|all-gather)(?:-start)?\(", hlo)
  assert moves == []
  assert re.search(r"\ball-reduce(-start)?\(", hlo)
