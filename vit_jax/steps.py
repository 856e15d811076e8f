"""The train step as a pure function, importable without the input pipeline.

`train.py` jits it over the mesh; `scripts/benchmark.py` times the very same
function on synthetic batches, so what is benchmarked is what trains, also on
a box that has jax but no TensorFlow.
"""
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from vit_jax import losses, sharding


def make_train_step(model, tx, loss_fn, schedule, config, mesh):
  """The train step: loss, gradients (accumulated), optimizer update, EMA.

  Dropout keys come from the seed and the step, so a resumed run draws the
  same masks as an uninterrupted one.
  """
  base_key = jax.random.key(config.seed)
  micro_sharding = NamedSharding(mesh, P(None, sharding.BATCH_AXES))

  def loss_on(params, images, labels, key):
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
    if config.accum_steps == 1:
      loss, grads = grad_fn(params, batch["image"], batch["labels"], key)
    else:
      def accumulate(carry, micro):
        index, images, labels = micro
        loss, grads = grad_fn(params, images, labels, jax.random.fold_in(key, index))
        return jax.tree.map(jnp.add, carry, (loss, grads)), None
      zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
      micro = (jnp.arange(config.accum_steps), microbatches(batch["image"]),
               microbatches(batch["labels"]))
      (loss, grads), _ = jax.lax.scan(accumulate, zeros, micro)
      loss, grads = jax.tree.map(lambda x: x / config.accum_steps, (loss, grads))
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    new_state = dict(state, step=step + 1, opt_state=opt_state,
                     params=optax.apply_updates(params, updates))
    if "ema_params" in state:
      decay = config.ema_decay
      new_state["ema_params"] = jax.tree.map(
          lambda e, p: decay * e + (1.0 - decay) * p,
          state["ema_params"], new_state["params"])
    return new_state, {"loss": loss, "grad_norm": optax.global_norm(grads),
                       "lr": schedule(step)}

  return train_step
