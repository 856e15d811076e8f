"""Optax chains and learning-rate schedules from `config.optim` and `config.lr`.

The chain is: global-norm clipping, then the optimizer (Adam, or SGD with
momentum), with decoupled weight decay scaled by the learning rate, applied
to the parameters whose names match `optim.weight_decay_params`.

Schedules: a linear warm-up from 0 to `lr.base`, then a linear or cosine
decay to `lr.end` (ViT), or BiT's step decay: the rate multiplied by
`lr.decay_factor` at each of `lr.boundaries`, fractions of the run.
"""
from absl import logging
import optax

from vit_jax import tree_util

DECAYS = ("linear", "cosine", "step")
OPTIMIZERS = ("adam", "sgd")


def make_schedule(lr_config, total_steps):
  """Linear warm-up from 0 to `lr.base`, then `lr.decay`'s decay.

  ``linear`` and ``cosine`` decay to `lr.end` at the last step; ``step``
  multiplies the rate by `lr.decay_factor` from each step
  ``round(boundary * total_steps)`` on (BiT's 30/60/80 of 90 epochs are
  ``boundaries=(1/3, 2/3, 8/9)``), each boundary after the warm-up. A
  warm-up as long as the run or longer is cut to a tenth of it (see
  `_warmup_steps`).
  """
  if lr_config.decay not in DECAYS:
    raise ValueError(f"config.lr.decay={lr_config.decay!r}; valid: {', '.join(DECAYS)}")
  if not lr_config.base > 0:
    raise ValueError(f"config.lr.base={lr_config.base} must be > 0 (the peak "
                     f"learning rate; config.lr.end is where it decays to)")
  warmup = _warmup_steps(lr_config, total_steps)
  decay_steps = total_steps - warmup
  if lr_config.decay == "linear":
    decay = optax.linear_schedule(lr_config.base, lr_config.end, decay_steps)
  elif lr_config.decay == "cosine":
    decay = optax.cosine_decay_schedule(
        lr_config.base, decay_steps, alpha=lr_config.end / lr_config.base)
  else:
    decay = _step_decay(lr_config, total_steps, warmup)
  if warmup == 0:
    return decay
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr_config.base, warmup), decay], [warmup])


def _warmup_steps(lr_config, total_steps):
  """`lr.warmup_steps`, or a tenth of the run where it would fill the run.

  The paper fine-tunes Pets and Flowers for 500 steps, and a fine-tuning
  config with a 500-step warm-up would then never reach its decay. Such a
  run warms up for ``total_steps // 10`` steps instead, with a warning; a
  shorter warm-up is kept as it is, however long.
  """
  warmup = lr_config.warmup_steps
  if warmup < 0:
    raise ValueError(f"config.lr.warmup_steps={warmup} must be >= 0")
  if warmup < total_steps:
    return warmup
  capped = total_steps // 10
  logging.warning("config.lr.warmup_steps=%d is not shorter than the run's %d "
                  "steps; warming up for %d steps (a tenth of the run) instead",
                  warmup, total_steps, capped)
  return capped


def _step_decay(lr_config, total_steps, warmup):
  """`lr.base`, times `lr.decay_factor` at each boundary, counted after ``warmup`` steps.

  The boundaries are fractions of the whole run, so the same config decays
  at the same points of a longer or shorter run. Boundaries that round to
  the same step decay there once each.
  """
  missing = [f"config.lr.{key}" for key in ("boundaries", "decay_factor")
             if key not in lr_config]
  if missing:
    raise ValueError(f"config.lr.decay='step' needs {' and '.join(missing)}, which "
                     f"this config's lr block lacks (configs/common.py's base_config "
                     f"has them)")
  boundaries = tuple(lr_config.boundaries)
  fractions = all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 < b < 1
                  for b in boundaries)
  if not fractions or any(a >= b for a, b in zip(boundaries, boundaries[1:])):
    raise ValueError(
        f"config.lr.boundaries={boundaries!r} must be increasing fractions of the "
        f"run in (0, 1), e.g. (0.3, 0.6, 0.9): the learning rate is multiplied "
        f"by config.lr.decay_factor at each")
  scales = {}
  for fraction in boundaries:
    step = round(fraction * total_steps)
    if step <= warmup:
      raise ValueError(
          f"config.lr.boundaries={boundaries!r}: the decay at {fraction} of the "
          f"run (step {step} of {total_steps}) is not after the warm-up "
          f"({warmup} steps; config.lr.warmup_steps={lr_config.warmup_steps})")
    # Steps counted from the end of the warm-up, as join_schedules counts them.
    scales[step - warmup] = scales.get(step - warmup, 1.0) * lr_config.decay_factor
  return optax.piecewise_constant_schedule(lr_config.base, scales)


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
