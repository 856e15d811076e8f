"""Optax chains and learning-rate schedules from `config.optim` and `config.lr`.

The chain is: global-norm clipping, then the optimizer, with decoupled weight
decay scaled by the learning rate, applied to the parameters whose names match
`optim.weight_decay_params`. The optimizers (`optim.name`):

  adam       Adam (b1, b2); the ViT paper's pre-training
  sgd        SGD with momentum (`momentum`); its fine-tuning, BiT
  adafactor  the memory-lean Adafactor of "Scaling Vision Transformers"
             (Zhai et al. 2022), which trained ViT-g and ViT-G: see
             `_adafactor`

`optim.mu_dtype` stores the first moment (Adam's mu, the SGD momentum,
Adafactor's momentum) in bfloat16 where set so, as Scaling-ViT does for both
of its optimizers: Adam's state then takes 6 bytes a parameter instead of 8.
`optim.head_weight_decay` gives the classifier `head` its own weight decay,
the same paper's "decoupled weight decay for the head". `optim.layer_decay`
is BEiT's layer-wise learning-rate decay for fine-tuning, as timm's
``--layer-decay``: see `scale_by_layer`.

Schedules: a linear warm-up from 0 to `lr.base`, then a linear or cosine
decay to `lr.end` (ViT), BiT's step decay: the rate multiplied by
`lr.decay_factor` at each of `lr.boundaries`, fractions of the run, or
Scaling-ViT's reciprocal square root (`rsqrt`), which needs no run length,
with a linear cool-down to `lr.end` over the last `lr.cooldown_steps`.
"""
import functools
import re

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vit_jax import tree_util

DECAYS = ("linear", "cosine", "step", "rsqrt")
OPTIMIZERS = ("adam", "sgd", "adafactor")
# The first moment's storage; None (the default) keeps it in float32, as the
# rest of the state (`steps.initial_state`).
MU_DTYPES = ("float32", "bfloat16")
# The classifier, which `optim.head_weight_decay` decays apart from the rest:
# the top-level `head` module of every model here (ViT, hybrids, BiT), and
# DeiT's `head_dist`.
HEAD_PARAMS = r"head(?:_dist)?/.*"


def make_schedule(lr_config, total_steps):
  """Linear warm-up from 0 to `lr.base`, then `lr.decay`'s decay.

  ``linear`` and ``cosine`` decay to `lr.end` at the last step; ``step``
  multiplies the rate by `lr.decay_factor` from each step
  ``round(boundary * total_steps)`` on (BiT's 30/60/80 of 90 epochs are
  ``boundaries=(1/3, 2/3, 8/9)``), each boundary after the warm-up;
  ``rsqrt`` is `_rsqrt_decay`. A
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
  elif lr_config.decay == "step":
    decay = _step_decay(lr_config, total_steps, warmup)
  else:
    decay = _rsqrt_decay(lr_config, decay_steps)
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


def _require_fields(lr_config, *keys):
  """Refuses an lr block (of a config from before the field) that lacks ``keys``."""
  missing = [f"config.lr.{key}" for key in keys if key not in lr_config]
  if missing:
    raise ValueError(f"config.lr.decay={lr_config.decay!r} needs {' and '.join(missing)}, "
                     f"which this config's lr block lacks (configs/common.py's "
                     f"base_config has them)")


def _step_decay(lr_config, total_steps, warmup):
  """`lr.base`, times `lr.decay_factor` at each boundary, counted after ``warmup`` steps.

  The boundaries are fractions of the whole run, so the same config decays
  at the same points of a longer or shorter run. Boundaries that round to
  the same step decay there once each.
  """
  _require_fields(lr_config, "boundaries", "decay_factor")
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


def _rsqrt_decay(lr_config, decay_steps):
  """`lr.base` / sqrt(1 + t / `lr.timescale`), t steps after the warm-up, cooled down.

  "Scaling Vision Transformers" trained ViT-g and G with it (timescale 10k,
  a 10k-step warm-up, a 50k-step linear cool-down): the rate does not
  depend on the run's length, so a run can be extended, or a checkpoint
  before the cool-down branched into cool-downs of several lengths. Over
  the last `lr.cooldown_steps` of the run (0: none) the rate falls
  linearly to `lr.end`.
  """
  _require_fields(lr_config, "timescale", "cooldown_steps")
  if lr_config.cooldown_steps > decay_steps:
    raise ValueError(f"config.lr.cooldown_steps={lr_config.cooldown_steps} is longer "
                     f"than the {decay_steps} steps after the warm-up; at most that")
  base, end = lr_config.base, lr_config.end
  timescale, cooldown = lr_config.timescale, lr_config.cooldown_steps

  def schedule(step):
    rate = base / jnp.sqrt(1.0 + step / timescale)
    if not cooldown:
      return rate
    remaining = jnp.clip((decay_steps - step) / cooldown, 0.0, 1.0)
    return end + (rate - end) * remaining

  return schedule


def check_config(optim_config):
  """Refuses an unknown `optim.name` or `optim.mu_dtype`, naming the valid ones.

  `config_checks` calls it before anything is built, `make_optimizer` again.
  """
  if optim_config.name not in OPTIMIZERS:
    raise ValueError(f"config.optim.name={optim_config.name!r}; valid: "
                     f"{', '.join(OPTIMIZERS)}")
  if optim_config.mu_dtype is not None and optim_config.mu_dtype not in MU_DTYPES:
    raise ValueError(f"config.optim.mu_dtype={optim_config.mu_dtype!r}; valid: "
                     f"{', '.join(MU_DTYPES)}, or None (float32)")


def make_optimizer(optim_config, schedule):
  """The optax transformation for `config.optim`, driven by `schedule`.

  Every moment the optimizers keep is a tree like the parameters (Adafactor's
  factored ones too, with smaller leaves), so each state leaf's path ends
  with its parameter's name, which `sharding.state_shardings` relies on.
  """
  check_config(optim_config)
  name, mu_dtype = optim_config.name, optim_config.mu_dtype
  parts = []
  if optim_config.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(optim_config.grad_clip_norm))
  if name == "adam":
    parts.append(optax.scale_by_adam(b1=optim_config.b1, b2=optim_config.b2,
                                     mu_dtype=mu_dtype))
  elif name == "sgd":
    parts.append(optax.trace(decay=optim_config.momentum, accumulator_dtype=mu_dtype))
  else:
    parts.append(_adafactor(optim_config))
  parts.extend(_weight_decay(optim_config))
  parts.append(optax.scale_by_learning_rate(schedule))
  # Only where set (1: none): a stateless link, but one more in the chain's state.
  if optim_config.get("layer_decay") not in (None, 1):
    parts.append(scale_by_layer(optim_config.layer_decay))
  return optax.chain(*parts)


# A ViT's blocks, unrolled (encoderblock_3) or stacked by a scan
# (encoderblock, the layer on the leading axis); the final LayerNorm, which
# timm groups with the last block; and the heads after them.
_BLOCK = re.compile(r"^Transformer/encoderblock(?:_(\d+))?/")
_FINAL_NORM = re.compile(r"^Transformer/encoder_norm/")
_HEADS = re.compile(r"^(?:fc_norm|MAPHead_0|pre_logits|head|head_dist)/")


def layer_multipliers(params, layer_decay):
  """Each parameter's learning-rate multiplier under `scale_by_layer`, a tree
  like ``params`` of floats, or of arrays that broadcast along a scan's layer axis."""
  # Unrolled: one more than the last block's number; stacked: the layer axis.
  depths = [int(m[1]) + 1 if m[1] is not None else leaf.shape[0]
            for name, leaf in tree_util.flatten_named(params) if (m := _BLOCK.match(name))]
  num_layers = max(depths, default=0)
  if not num_layers:
    raise ValueError(f"config.optim.layer_decay={layer_decay} scales the learning rate "
                     f"of a ViT's blocks by depth, and these parameters have no "
                     f"Transformer/encoderblock (a BiT ResNet?); unset it")

  def multiplier(path, leaf):
    name = tree_util.path_name(path)
    block = _BLOCK.match(name)
    if block and block[1] is not None:
      return float(layer_decay ** (num_layers - int(block[1])))
    if block:  # stacked: layer l on the leading axis
      exponents = num_layers - np.arange(num_layers)
      return (layer_decay ** exponents).reshape((-1,) + (1,) * (leaf.ndim - 1))
    if _FINAL_NORM.match(name):
      return float(layer_decay)
    if _HEADS.match(name):
      return 1.0
    return float(layer_decay ** (num_layers + 1))  # embeddings, tokens, a stem

  return jax.tree_util.tree_map_with_path(multiplier, params)


def scale_by_layer(layer_decay):
  """Layer-wise learning-rate decay (BEiT; timm's ``--layer-decay``).

  Fine-tuning a pre-trained ViT, the blocks near the input change least:
  of L blocks, block i's updates (weight decay included, as it is scaled
  by the learning rate) are multiplied by ``layer_decay ** (L - i)``, the
  final LayerNorm by ``layer_decay`` as the last block, the patch embedding,
  position embeddings, class, distillation and register tokens, the
  LayerNorm before the blocks (and a hybrid's stem) by
  ``layer_decay ** (L + 1)``, and the MAP head, pre_logits and the heads by
  1, as timm's ``param_groups_layer_decay`` groups them (BEiT's own code
  leaves the final LayerNorm at 1).
  """
  def update(updates, state, params=None):
    del params
    multipliers = layer_multipliers(updates, layer_decay)
    return jax.tree.map(lambda u, m: u * jnp.asarray(m, u.dtype), updates, multipliers), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def _adafactor(optim_config):
  """Scaling-ViT's Adafactor: a factored second moment, and momentum.

  Zhai et al. 2022 ("Memory-efficient optimizers") keep Shazeer and Stern's
  factored second moment and change the rest, as big_vision's
  `scale_by_adafactor` (big_vision/optax.py) and its ViT-g/G config
  (configs/proj/scaling_laws/train_vit_g.py) do: momentum (an EMA of the
  scaled updates, not debiased; `optim.b1`, 0.9 there, in bfloat16 with
  `optim.mu_dtype`); no scaling of the step by the parameters' norm, and no
  update clipping; and the second moment's decay
  ``1 - (t + 1) ** -optim.adafactor_decay_rate`` (0.8) capped at `optim.b2`
  (0.999), where Adafactor's tends to 1 and stops following the gradients.
  Parameters with two dimensions of at least
  `optim.adafactor_min_dim_to_factor` (32 there) keep the second moment as
  row and column means (a (D, F) kernel: D + F numbers instead of D x F;
  of a 3-d attention kernel, the two largest dimensions are factored);
  smaller ones keep it whole. With b1 0.9, b2 0.999 and `mu_dtype`
  bfloat16 this is that recipe, at about a quarter of Adam's float32 state.
  """
  cap = optim_config.b2

  def second_moment_decay(step, exponent):
    return jnp.minimum(cap, 1.0 - (jnp.asarray(step, jnp.float32) + 1.0) ** -exponent)

  return optax.chain(
      optax.scale_by_factored_rms(
          decay_rate=optim_config.adafactor_decay_rate,
          min_dim_size_to_factor=optim_config.adafactor_min_dim_to_factor,
          decay_rate_fn=second_moment_decay),
      optax.ema(optim_config.b1, debias=False,
                accumulator_dtype=optim_config.mu_dtype))


def _weight_decay(optim_config):
  """Decoupled weight decay: `weight_decay` on the body, `head_weight_decay` on the head.

  Each is added after the optimizer's scaling, so it is decoupled (AdamW)
  and multiplied by the learning rate, schedule and peak: Scaling-ViT's
  head 3.0 and body 0.03 (big_vision's ``wd = 0.03 * lr`` with ``wd_mults``
  100 on ``head/kernel``) are ``head_weight_decay=3.0, weight_decay=0.03``.
  Both apply only to `weight_decay_params` (the kernels by default), the
  head's being those under `HEAD_PARAMS`. A `head_weight_decay` of None
  leaves the head to `weight_decay`, in one transformation as before, so
  that the optimizer state of earlier runs keeps its structure.
  """
  def mask(params, head=None):
    decayed = tree_util.regex_mask(params, optim_config.weight_decay_params)
    if head is None:
      return decayed
    in_head = tree_util.regex_mask(params, HEAD_PARAMS)
    return jax.tree.map(lambda d, h: d and h == head, decayed, in_head)

  if optim_config.head_weight_decay is None:
    groups = [(optim_config.weight_decay, mask)]
  else:
    groups = [(optim_config.weight_decay, functools.partial(mask, head=False)),
              (optim_config.head_weight_decay, functools.partial(mask, head=True))]
  return [optax.add_decayed_weights(rate, mask=which) for rate, which in groups if rate]
