"""What a config will cost, before anything runs or is allocated.

Parameters come from `jax.eval_shape` of the model's init, and XLA's FLOP
count from the cost analysis of the *lowered* (not compiled) forward pass and
gradient at the config's resolution: both work on shapes alone, so ViT-H/14
is estimated in a few hundred MB of host memory. The analytic count of
`accounting.analytic_flops_per_example` is printed beside XLA's; they agree
within a few percent for the whole ViT family (tests/cost/test_cost_estimate.py).

  TPUv3-core-days = FLOPs per example x examples / (61.5e12 x MFU x 86,400)

where examples = global_batch x total steps and MFU is an assumption (the
ViT paper's TPU v3 runs are not published with one; 0.4-0.5 is typical of
well-tuned ViT training on TPUs). The optimizer's per-step FLOPs are left out:
they are O(parameters) per step against O(parameters x tokens) per example.
"""
import jax
import jax.numpy as jnp
import optax

from vit_jax.cost import accounting
from vit_jax.models import build
from vit_jax.train import config_checks

LOWERING_BATCH = 8
"""Examples in the lowered programs; FLOPs are divided by it again."""


def xla_flops_per_example(model, image_size, *, train):
  """XLA's FLOPs for one example's forward pass, or forward plus gradient."""
  images = jax.ShapeDtypeStruct((LOWERING_BATCH, image_size, image_size, 3),
                                jnp.float32)
  labels = jax.ShapeDtypeStruct((LOWERING_BATCH, model.num_classes), jnp.float32)
  params = build.abstract_params(model, image_size)

  def forward(params, images):
    return model.apply({"params": params}, images, train=False)

  def loss(params, images, labels):
    return optax.softmax_cross_entropy(forward(params, images), labels).mean()

  if train:
    lowered = jax.jit(jax.grad(loss)).lower(params, images, labels)
  else:
    lowered = jax.jit(forward).lower(params, images)
  flops = accounting.compiled_flops(lowered)
  return flops / LOWERING_BATCH if flops else None


def estimate(config, *, total_steps, mfu):
  """The cost of training ``config`` for ``total_steps`` steps at ``mfu``."""
  if not 0 < mfu <= 1:
    raise ValueError(f"the assumed MFU must be in (0, 1], got {mfu}")
  model = build.model_from_config(config)
  size = config.image_size
  num_params = sum(x.size for x in jax.tree.leaves(build.abstract_params(model, size)))
  train_flops = accounting.analytic_flops_per_example(model, size, train=True)
  examples = config.global_batch * total_steps
  total_flops = train_flops * examples
  return {
      "variant": config.variant, "image_size": size,
      "num_classes": config.data.num_classes, "parameters": num_params,
      "train_flops_per_example": train_flops,
      "train_flops_per_example_xla": xla_flops_per_example(model, size, train=True),
      "inference_flops_per_example": accounting.analytic_flops_per_example(
          model, size, train=False),
      "global_batch": config.global_batch, "total_steps": total_steps,
      "examples": examples, "total_train_flops": total_flops,
      "assumed_mfu": mfu,
      "tpuv3_core_days": total_flops / (
          accounting.TPU_V3_CORE_PEAK * mfu * accounting.SECONDS_PER_DAY),
  }


def format_estimate(estimate_dict):
  """The estimate as aligned 'name  value' lines for a terminal."""
  lines = []
  for key, value in estimate_dict.items():
    if isinstance(value, float):
      value = f"{value:.4g}"
    elif isinstance(value, int):
      value = f"{value:,}"
    lines.append(f"{key:<30} {value}")
  return "\n".join(lines)


def planned_steps(config, train_examples=None):
  """The run's total steps; `total_epochs` needs the training split's size.

  Returns (steps, what the size of the training split was taken from). The
  size comes from ``train_examples``, else from the prepared dataset, else
  from the dataset's published split sizes (`config.data.published_sizes`),
  so that a run can be priced before its data is at hand. When none is
  there, the error says how to give it.
  """
  if config.total_steps is not None:
    return config_checks.resolve_total_steps(config, 0), None
  split = config.data.train_split
  if train_examples is not None:
    size, origin = train_examples, "--train_examples"
  else:
    size, origin = _train_split_size(config)
  steps = config_checks.resolve_total_steps(config, size)
  return steps, f"{size:,} examples in {split}, from {origin}"


def _train_split_size(config):
  """(examples in the training split, where that number came from)."""
  from vit_jax.data import sources, splits

  split = config.data.train_split
  try:
    return sources.get_source(config.data).num_examples(split), "the prepared dataset"
  except sources.DatasetNotPreparedError as not_prepared:
    try:
      size = splits.examples_in_split(split, config.data.get("published_sizes") or {})
    except KeyError:
      raise ValueError(
          f"config.total_epochs={config.total_epochs} needs the number of "
          f"training examples: pass --train_examples=N, count the run in "
          f"steps (steps=N in configs/pretrain.py's arguments), or prepare "
          f"the dataset ({not_prepared})") from None
    return size, (f"config.data.published_sizes: {config.data.name!r} is not "
                  f"prepared in data_dir {config.data.data_dir or ''!r}")


def report(config, *, train_examples=None, mfu):
  """The printed estimate of `vit_jax.main --dry_run` and scripts/estimate_cost.py.

  A config the trainer would refuse is refused here first, with the
  trainer's message naming the key (checked as for one device: the run's
  device count is not known before it starts). Bad input is a ValueError
  whose message the callers print as the whole error.
  """
  config_checks.check_config(config, num_devices=1, process_count=1)
  steps, epoch_size = planned_steps(config, train_examples)
  estimate_dict = estimate(config, total_steps=steps, mfu=mfu)
  if epoch_size:
    estimate_dict.update(epochs=config.total_epochs, epoch_size=epoch_size)
  return format_estimate(estimate_dict)
