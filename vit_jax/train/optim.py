"""Optax chains and learning-rate schedules from `config.optim` and `config.lr`.

The chain is: global-norm clipping, then the optimizer (Adam, or SGD with
momentum), with decoupled weight decay scaled by the learning rate, applied
to the parameters whose names match `optim.weight_decay_params`.
"""
import optax

from vit_jax import tree_util

DECAYS = ("linear", "cosine")
OPTIMIZERS = ("adam", "sgd")


def make_schedule(lr_config, total_steps):
  """Linear warm-up from 0 to `lr.base`, then linear or cosine decay to `lr.end`."""
  if lr_config.decay not in DECAYS:
    raise ValueError(f"config.lr.decay={lr_config.decay!r}; valid: {', '.join(DECAYS)}")
  if not lr_config.base > 0:
    raise ValueError(f"config.lr.base={lr_config.base} must be > 0 (the peak "
                     f"learning rate; config.lr.end is where it decays to)")
  warmup = lr_config.warmup_steps
  if not 0 <= warmup < total_steps:
    raise ValueError(f"config.lr.warmup_steps={warmup} must be in "
                     f"[0, total steps={total_steps})")
  decay_steps = total_steps - warmup
  if lr_config.decay == "linear":
    decay = optax.linear_schedule(lr_config.base, lr_config.end, decay_steps)
  else:
    decay = optax.cosine_decay_schedule(
        lr_config.base, decay_steps, alpha=lr_config.end / lr_config.base)
  if warmup == 0:
    return decay
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr_config.base, warmup), decay], [warmup])


def make_optimizer(optim_config, schedule):
  """The optax transformation for `config.optim`, driven by `schedule`."""
  name = optim_config.name
  if name not in OPTIMIZERS:
    raise ValueError(f"config.optim.name={name!r}; valid: {', '.join(OPTIMIZERS)}")
  parts = []
  if optim_config.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(optim_config.grad_clip_norm))
  if name == "adam":
    parts.append(optax.scale_by_adam(b1=optim_config.b1, b2=optim_config.b2))
  else:
    parts.append(optax.trace(decay=optim_config.momentum))
  if optim_config.weight_decay:
    # Added after the optimizer's scaling, so it is decoupled (AdamW) and,
    # through the schedule below, multiplied by the learning rate.
    parts.append(optax.add_decayed_weights(
        optim_config.weight_decay,
        mask=lambda params: tree_util.regex_mask(
            params, optim_config.weight_decay_params)))
  parts.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*parts)
