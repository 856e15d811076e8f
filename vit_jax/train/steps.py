"""The train step as a pure function, importable without the input pipeline.

`jit_train_step` compiles it over the mesh for both the training loop and
`cost.benchmarking`, which times it on synthetic batches: what is benchmarked
is what trains, also on a box that has jax but no TensorFlow. The objects
the step is made of come from a config in one place, `training_parts`.
"""
import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from vit_jax.models import activation_sharding, build
from vit_jax.train import losses, mixup, optim, sharding


# eq=False: hashed by identity, as the config it holds is not hashable.
@dataclasses.dataclass(frozen=True, eq=False)
class TrainingParts:
  """What a config's training is made of: model, schedule, optimizer, loss.

  The training loop, the benchmark (`cost.benchmarking`) and the plan for a
  target's devices (`cost.estimate.device_plan`) all build these from a
  config, and what they report is only true of the run if they build the
  same ones: the same schedule length, the same optimizer state, the same
  init. Built here once (`training_parts`), not copied three times.
  """
  config: Any
  model: Any
  schedule: Callable
  tx: optax.GradientTransformation
  loss_fn: Callable

  def init_params(self, seed=None):
    """Fresh parameters; ``seed`` (default ``config.seed``) may be traced."""
    seed = self.config.seed if seed is None else seed
    return build.init_params(self.model, self.config.image_size, seed=seed)

  def initial_state(self, params):
    """`initial_state` of ``params`` (fresh or loaded) under this optimizer."""
    return initial_state(params, self.tx, self.config)

  def init_state(self, shardings):
    """A fresh train state, made on the devices already laid out as ``shardings``.

    Jitted as one program with the init, so no device ever holds the whole
    state before it is split.
    """
    return jax.jit(lambda: self.initial_state(self.init_params()),
                   out_shardings=shardings)()

  def abstract_state(self):
    """The fresh train state's shapes and dtypes, allocating nothing."""
    return jax.eval_shape(lambda: self.initial_state(self.init_params()))

  def jit_train_step(self, mesh, state_shardings):
    """`jit_train_step` of these parts over ``mesh``."""
    return jit_train_step(self.model, self.tx, self.loss_fn, self.schedule,
                          self.config, mesh, state_shardings)


def training_parts(config, *, total_steps):
  """`TrainingParts` of ``config`` for a run of ``total_steps`` (the schedule's length)."""
  model = build.model_from_config(config)
  schedule = optim.make_schedule(config.lr, total_steps)
  return TrainingParts(config=config, model=model, schedule=schedule,
                       tx=optim.make_optimizer(config.optim, schedule),
                       loss_fn=losses.get_loss(config.loss))


def initial_state(params, tx, config):
  """The train state that `make_train_step`'s step takes, from fresh parameters.

  ``skipped_steps`` and ``first_skipped_step`` count the steps whose loss or
  gradient norm was not finite, on the device; ``ema_params`` is there when
  ``config.ema_decay`` asks for an average. The optimizer's state (but a
  first moment `optim.mu_dtype` asks for in bfloat16) and the EMA are
  float32 whatever the parameters' dtype: in bfloat16 Adam's b2 of 0.999,
  and an EMA's decay of 0.9999, round to 1, and a step's share of the
  difference to nothing (in float16 Adam's epsilon is 0).
  """
  state = {"step": jnp.zeros((), jnp.int32), "params": params,
           "opt_state": tx.init(_float32(params)),
           "skipped_steps": jnp.zeros((), jnp.int32),
           "first_skipped_step": jnp.zeros((), jnp.int32)}
  if config.ema_decay:
    state["ema_params"] = _float32(params)
  return state


def _float32(tree):
  return jax.tree.map(lambda x: x.astype(jnp.float32), tree)


def make_train_step(model, tx, loss_fn, schedule, config, mesh):
  """The train step: loss, gradients (accumulated), optimizer update, EMA.

  Dropout keys come from the seed and the step, so a resumed run draws the
  same masks as an uninterrupted one.
  """
  base_key = jax.random.key(config.seed)
  mixup_key = jax.random.fold_in(base_key, 0x6d6978)  # its own stream ("mix")
  micro_sharding = NamedSharding(mesh, P(None, sharding.BATCH_AXES))

  def loss_on(params, images, labels, key):
    # Under the mesh, so that the model can keep its activations split over
    # the batch (`models.activation_sharding`).
    with activation_sharding.under(mesh):
      logits = model.apply({"params": params}, images, train=True,
                           rngs={"dropout": key})
    targets = losses.smooth_labels(labels, config.label_smoothing)
    return jnp.mean(loss_fn(logits, targets))

  grad_fn = jax.value_and_grad(loss_on)

  def microbatches(x):
    # (B, ...) -> (accum, B / accum, ...), keeping each device's rows local.
    x = x.reshape((-1, config.accum_steps) + x.shape[1:]).swapaxes(0, 1)
    return jax.lax.with_sharding_constraint(x, micro_sharding)

  def train_step(state, batch):
    params, step = state["params"], state["step"]
    key = jax.random.fold_in(base_key, step)
    images, labels = mixup.mixup(jax.random.fold_in(mixup_key, step), batch["image"],
                                 batch["labels"], alpha=config.mixup.alpha)
    if config.accum_steps == 1:
      loss, grads = grad_fn(params, images, labels, key)
    else:
      def accumulate(carry, micro):
        index, images, labels = micro
        # Tied to each micro-batch by a barrier, the parameters are gathered
        # (FSDP) inside the loop, one micro-batch at a time: else XLA hoists
        # the all-gathers of an unrolled model's loop-invariant kernels out
        # of it and holds every layer's whole kernels through the loop, more
        # memory than without the accumulation that is meant to save it
        # (tests/train/test_train_step.py).
        micro_params, images = jax.lax.optimization_barrier((params, images))
        loss, grads = grad_fn(micro_params, images, labels,
                              jax.random.fold_in(key, index))
        return jax.tree.map(lambda c, x: c + x.astype(c.dtype), carry, (loss, grads)), None
      # Summed in float32 whatever the parameters' dtype: bfloat16 sums would
      # lose a bit of every gradient to rounding per doubling of accum_steps.
      zeros = jax.tree.map(lambda x: jnp.zeros(jnp.shape(x), jnp.float32),
                           (jnp.zeros(()), params))
      micro = (jnp.arange(config.accum_steps), microbatches(images),
               microbatches(labels))
      (loss, grads), _ = jax.lax.scan(accumulate, zeros, micro)
      loss, grads = jax.tree.map(lambda x: x / config.accum_steps, (loss, grads))
    # In float32, as the optimizer's state: its update is cast to the
    # parameters' dtype as it is applied.
    grads = _float32(grads)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    new_state = dict(state, opt_state=opt_state,
                     params=optax.apply_updates(params, updates))
    if "ema_params" in state:
      # TensorFlow's ExponentialMovingAverage with num_updates: the decay
      # grows to ema_decay as (1 + step) / (10 + step), so the initial
      # parameters do not dominate a run shorter than 1 / (1 - ema_decay).
      decay = jnp.minimum(config.ema_decay,
                          (1.0 + step) / (10.0 + step)).astype(jnp.float32)
      new_state["ema_params"] = jax.tree.map(
          lambda e, p: decay * e + (1.0 - decay) * p.astype(jnp.float32),
          state["ema_params"], new_state["params"])
    grad_norm = optax.global_norm(grads)
    # A step whose loss or gradient norm is NaN or Inf changes nothing but the
    # step counter, decided here on the device because the host sees metrics
    # only every `log_every` steps; the loop then stops or skips (see
    # `config.on_nonfinite`), and names the first such step from the counters.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                             new_state, state)
    new_state["step"] = step + 1
    # The learning rate follows the step, skipped or not, as the logged `lr`
    # says (a skip does not delay the rest of the schedule).
    new_state["opt_state"] = _with_schedule_count(new_state["opt_state"], step + 1)
    new_state["skipped_steps"] = state["skipped_steps"] + (~finite)
    new_state["first_skipped_step"] = jnp.where(
        finite | (state["first_skipped_step"] > 0),
        state["first_skipped_step"], step + 1)
    step_metrics = {"loss": loss, "grad_norm": grad_norm, "lr": schedule(step),
                    "skipped_steps": new_state["skipped_steps"]}
    return new_state, step_metrics

  return train_step


def jit_train_step(model, tx, loss_fn, schedule, config, mesh, state_shardings):
  """`make_train_step` jitted over ``mesh``; the state passed in is donated.

  The state keeps ``state_shardings`` from step to step, so its buffers are
  reused in place; the batch is split over the data axes and the metrics
  come back replicated.
  """
  return jax.jit(
      make_train_step(model, tx, loss_fn, schedule, config, mesh),
      in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
      out_shardings=(state_shardings, sharding.replicated(mesh)),
      donate_argnums=0)


def _with_schedule_count(opt_state, count):
  """``opt_state`` with its learning-rate schedule at step ``count``.

  Only the schedule's counter is set: Adam's own counter (its bias
  correction) stays with the moments, which a skipped step leaves as they were.
  """
  def set_count(node):
    if isinstance(node, optax.ScaleByScheduleState):
      return node._replace(count=jnp.asarray(count, node.count.dtype))
    return node
  return jax.tree.map(set_count, opt_state,
                      is_leaf=lambda node: isinstance(node, optax.ScaleByScheduleState))
