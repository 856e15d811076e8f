"""Checks of a run's config that need neither data nor devices.

The trainer runs them before anything is compiled, and the cost estimator
(`vit_jax.cost.estimate`) before it prices a run, so both refuse the same
configs with the same message; this module imports no TensorFlow.
"""
import dataclasses
import fractions
import math
import numbers
import re

from vit_jax import models
from vit_jax.data import config_fields
from vit_jax.models import (attention, build, conv, dense, layer_norm, patch_embedding,
                            posemb, vit)
from vit_jax.train import losses, optim, sharding


@dataclasses.dataclass(frozen=True)
class Range:
  """The values a numeric config field may take: an interval, maybe unset.

  ``low``/``high`` of None leave that side open-ended; ``*_open`` excludes
  the bound itself; ``unset`` admits None (a field that is off or derived
  when unset); ``meaning`` says in the error what the field is.
  """
  low: float | None = None
  high: float | None = None
  low_open: bool = False
  high_open: bool = False
  unset: bool = False
  meaning: str = ""

  def admits(self, value):
    if value is None:
      return self.unset
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
      return False
    if not math.isfinite(value):
      return False
    if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
      return False
    return self.high is None or value < self.high or (not self.high_open and value == self.high)

  def describe(self):
    low = "" if self.low is None else f"{'(' if self.low_open else '['}{self.low}"
    high = "" if self.high is None else f"{self.high}{')' if self.high_open else ']'}"
    if low and high:
      text = f"in {low}, {high}"
    elif low:
      text = f"{'>' if self.low_open else '>='} {self.low}"
    elif high:
      text = f"{'<' if self.high_open else '<='} {self.high}"
    else:
      text = "a finite number"
    text += " or None" if self.unset else ""
    return text + (f" ({self.meaning})" if self.meaning else "")


_STEPS = "a number of steps; the last step always logs, evaluates and saves"
_PROBABILITY = Range(0, 1, high_open=True, meaning="a probability; 0 turns it off")
_COUNT = Range(1)
_VARIANTS_SHAPE = "None takes the variant's"
# Every numeric field of a run's config and the values it may take, in one
# place: `check_config` refuses a value outside, naming the field, before
# anything is built. A field a config does not have is not checked.
# `tests/test_configs.py` checks that every numeric field of the stock
# configs is listed.
NUMERIC_FIELDS = {
    "seed": Range(0),
    "image_size": _COUNT,
    "label_smoothing": Range(0, 1, high_open=True, meaning="1 would make every "
                             "target uniform, more would invert them"),
    "global_batch": _COUNT,
    "eval_batch": _COUNT,
    "accum_steps": _COUNT,
    "total_steps": Range(1, unset=True),
    "total_epochs": Range(0, low_open=True, unset=True),
    "prefetch": _COUNT,
    "log_every": Range(1, meaning=_STEPS),
    "eval_every": Range(1, meaning=_STEPS),
    "checkpoint_every": Range(1, meaning=_STEPS),
    "keep_checkpoints": Range(1, unset=True, meaning="None keeps every checkpoint"),
    "ema_decay": Range(0, 1, high_open=True, meaning="0 turns the parameter "
                       "average off"),
    "mixup.alpha": Range(0, meaning="0 turns mixup off"),
    "fewshot.every": Range(0, meaning="0 turns the few-shot probes off"),
    "fewshot.regulariser": Range(0, low_open=True, meaning="the ridge regulariser"),
    "lr.base": Range(0, low_open=True, meaning="the peak learning rate"),
    "lr.warmup_steps": Range(0),
    "lr.end": Range(0),
    # lr.boundaries, a tuple, is checked where the schedule is made (optim).
    "lr.decay_factor": Range(0, 1, low_open=True, meaning="what the step decay "
                             "multiplies the rate by at each of lr.boundaries"),
    "lr.timescale": Range(0, low_open=True, meaning="the rsqrt decay's time scale "
                          "in steps: the rate halves after three of them"),
    "lr.cooldown_steps": Range(0, meaning="0: no cool-down"),
    "optim.b1": Range(0, 1, high_open=True),
    "optim.b2": Range(0, 1, high_open=True),
    "optim.momentum": Range(0, 1, high_open=True),
    "optim.weight_decay": Range(0, meaning="0 turns it off"),
    "optim.head_weight_decay": Range(0, unset=True, meaning="None: the head "
                                     "decays like the rest, by optim.weight_decay"),
    "optim.adafactor_decay_rate": Range(0, 1, low_open=True, meaning="the "
                                        "exponent of Adafactor's second-moment decay"),
    "optim.adafactor_min_dim_to_factor": _COUNT,
    "optim.layer_decay": Range(0, 1, low_open=True, unset=True, meaning="block i of L "
                               "learns at layer_decay**(L-i) of the rate; None or 1: "
                               "no layer decay"),
    "optim.grad_clip_norm": Range(0, meaning="0 turns clipping off; a negative "
                                  "norm would flip every gradient"),
    "model.dropout_rate": _PROBABILITY,
    "model.attention_dropout_rate": _PROBABILITY,
    "model.drop_path_rate": _PROBABILITY,
    "model.head_bias_init": Range(),
    "model.representation_size": Range(1, unset=True),
    "model.hidden_size": Range(1, unset=True, meaning=_VARIANTS_SHAPE),
    "model.num_layers": Range(1, unset=True, meaning=_VARIANTS_SHAPE),
    "model.mlp_dim": Range(1, unset=True, meaning=_VARIANTS_SHAPE),
    "model.num_heads": Range(1, unset=True, meaning=_VARIANTS_SHAPE),
    "model.layer_scale_init": Range(0, low_open=True, unset=True, meaning="the layer "
                                    "scales' initial value, e.g. DINOv2's 1e-5; None: "
                                    "no layer scale"),
    "model.num_registers": Range(0, meaning="0: no register tokens"),
    "model.layer_norm_epsilon": Range(0, low_open=True, meaning="added to the variance "
                                      "in every LayerNorm; 1e-6 as the original ViT"),
    "data.num_classes": _COUNT,
    "data.shuffle_buffer": _COUNT,
    "mesh.fsdp_min_size": Range(0),
}


_FLOAT_DTYPES = ("float32", "bfloat16", "float16")
# Every field that names one of a few choices, and the choices, taken from
# the module that acts on the field. A wrong name would otherwise surface
# late (in the model's first trace) or, for some, not at all.
CHOICES = {
    "loss": tuple(losses.LOSSES),
    "posemb_resample": tuple(posemb.RESAMPLE_METHODS),
    "on_nonfinite": ("stop", "skip"),
    "on_save_error": ("stop", "continue"),
    "model.classifier": vit.CLASSIFIERS,
    "model.gelu": vit.GELUS,
    "model.dtype": _FLOAT_DTYPES,
    "model.param_dtype": _FLOAT_DTYPES,
    "model.remat_policy": models.REMAT_POLICIES,
    "model.attention_implementation": attention.IMPLEMENTATIONS,
    "model.token_padding": attention.TOKEN_PADDINGS,
    "model.layer_norm_implementation": layer_norm.IMPLEMENTATIONS,
    "model.dense_implementation": dense.IMPLEMENTATIONS,
    "model.embedding_implementation": patch_embedding.IMPLEMENTATIONS,
    "model.conv_implementation": conv.IMPLEMENTATIONS,
    "optim.name": optim.OPTIMIZERS,
    "lr.decay": optim.DECAYS,
    "data.source": config_fields.SOURCES,
}

_ABSENT = object()
# Choice fields that may stay unset (None): the variant then chooses.
_UNSET_MEANS_VARIANTS = ("model.classifier",)


def _value(config, dotted):
  """``config``'s value at ``dotted``, or `_ABSENT` where it has no such field."""
  node = config
  for part in dotted.split("."):
    if part not in node:
      return _ABSENT
    node = node[part]
  return node


def check_numeric_fields(config):
  """Refuses the first numeric field (in `NUMERIC_FIELDS`' order) out of range."""
  for field, valid in NUMERIC_FIELDS.items():
    value = _value(config, field)
    if value is not _ABSENT and not valid.admits(value):
      raise ValueError(f"config.{field}={value!r} must be {valid.describe()}")


def check_choices(config):
  """Refuses the first field of `CHOICES` that names none of its choices."""
  for field, valid in CHOICES.items():
    value = _value(config, field)
    unset = value is None and field in _UNSET_MEANS_VARIANTS
    if value is not _ABSENT and not unset and value not in valid:
      raise ValueError(f"config.{field}={value!r}; valid: {', '.join(valid)}")


def check_fields(config):
  """Refuses a field out of range or naming none of its choices, one at a
  time: what any config must pass before a model is built from it."""
  check_numeric_fields(config)
  check_choices(config)
  optim.check_config(config.optim)  # mu_dtype, which may be None


def resolve_total_steps(config, train_examples):
  """Steps of the run from `config.total_steps` or `config.total_epochs`.

  Epochs count as the decimal written (2.3, not the float just below it, whose
  product with 50,000 examples is 114999.99...), so no step is lost to rounding.
  """
  if (config.total_steps is None) == (config.total_epochs is None):
    raise ValueError(
        f"set exactly one of config.total_steps={config.total_steps} and "
        f"config.total_epochs={config.total_epochs} (configs/pretrain.py "
        f"counts epochs=N, or steps=N instead)")
  if config.total_steps is not None:
    return int(config.total_steps)
  examples = fractions.Fraction(str(config.total_epochs)) * train_examples
  return max(1, int(examples // config.global_batch))


def check_config(config, *, num_devices, process_count):
  """Fails before any compilation on settings that cannot work together."""
  check_fields(config)
  shards, splitters = batch_shards(config.mesh, num_devices)
  micro_batch, remainder = divmod(config.global_batch, config.accum_steps)
  if remainder or micro_batch % shards:
    raise ValueError(
        f"config.global_batch={config.global_batch} must be divisible by "
        f"config.accum_steps={config.accum_steps} x {splitters}"
        + _nearest_multiples(config.global_batch, config.accum_steps * shards))
  for field in ("global_batch", "eval_batch"):
    if config[field] % shards or config[field] % process_count:
      raise ValueError(f"config.{field}={config[field]} must be divisible by "
                       f"the {splitters} and the {process_count} processes"
                       + _nearest_multiples(config[field], math.lcm(shards, process_count)))
  if config.total_steps is not None:  # else counted from the data, and checked then
    optim.make_schedule(config.lr, int(config.total_steps))  # decays after the warm-up
  model = build.model_from_config(config)
  if config.optim.get("layer_decay") not in (None, 1) and not hasattr(model, "num_layers"):
    raise ValueError(f"config.optim.layer_decay={config.optim.layer_decay} scales the "
                     f"learning rate of a ViT's blocks by depth, and {config.variant} has "
                     f"no such blocks; unset it")
  heads, width = getattr(model, "num_heads", None), getattr(model, "hidden_size", None)
  if heads and width and width % heads:
    raise ValueError(f"the width {width} (config.model.hidden_size, else "
                     f"{config.variant}'s) is not divisible by its {heads} heads "
                     f"(config.model.num_heads, else {config.variant}'s): each head "
                     f"takes an equal share of the width")
  patch = getattr(model, "patch_size", None)  # a ResNet takes any size
  if patch and config.image_size % patch:
    raise ValueError(f"config.image_size={config.image_size} is not divisible "
                     f"by the patch size {patch} of {config.variant}")
  try:
    re.compile(config.optim.weight_decay_params)
  except re.error as e:
    raise ValueError(f"config.optim.weight_decay_params="
                     f"{config.optim.weight_decay_params!r} is no regex: {e}") from None
  sharding.compile_rules(config.mesh)
  if "fewshot" in config:  # a run from before the probes has no such block
    _check_probe_counts(config.fewshot)


def _nearest_multiples(value, factor):
  """'; e.g. 32 or 40': the multiples of ``factor`` around ``value``, for an error."""
  below = value // factor * factor
  return f"; e.g. {' or '.join(str(m) for m in (below, below + factor) if m > 0)}"


def batch_shards(mesh_config, num_devices):
  """How many slices a batch is cut into, and those slices in the user's words.

  Every device takes its own slice, except that the devices of one group of
  the model axis (tensor parallelism) share theirs: data x fsdp slices. The
  mesh's sizes are checked here, before they are used.
  """
  data, fsdp, model = sharding.axis_sizes(mesh_config, num_devices)
  if model == 1:
    return num_devices, f"{num_devices} devices"
  return data * fsdp, (f"{data * fsdp} batch shards (the {num_devices} devices "
                       f"over config.mesh.model={model})")


# The least shot count and seed a probe takes: no shots would probe on no
# examples (chance accuracy, silently); numpy refuses a negative seed.
PROBE_COUNT_LOWS = {"shots": 1, "seeds": 0}


def _check_probe_counts(fewshot):
  """Refuses shot counts and seeds below `PROBE_COUNT_LOWS`, or none of either,
  and a probe at the start of a run that probes never (``every`` unset)."""
  if fewshot.get("at_start") and not fewshot.get("every"):
    raise ValueError("config.fewshot.at_start=True probes when config.fewshot.every "
                     "is set, and it is 0: no probe would run; set every=N as well")
  for field, low in PROBE_COUNT_LOWS.items():
    values = tuple(fewshot[field])
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < low
                         for v in values):
      raise ValueError(f"config.fewshot.{field}={values!r} must be one or more "
                       f"integers >= {low}")
