"""What a config will cost, and whether it fits the target's devices, before anything runs.

The price. Parameters come from `jax.eval_shape` of the model's init, and
XLA's FLOP count from the cost analysis of the *lowered* (not compiled)
forward pass and gradient at the config's resolution: both work on shapes
alone, so ViT-H/14 is estimated in a few hundred MB of host memory. The
analytic count of `accounting.analytic_flops_per_example` is printed beside
XLA's; they agree within a few percent for the whole ViT family
(tests/cost/test_cost_estimate.py), except under remat, whose recomputed
forward pass XLA counts too (22B/14: 20% more).

  TPUv3-core-days = FLOPs per example x examples / (61.5e12 x MFU x 86,400)

where examples = global_batch x total steps and MFU is an assumption (the
ViT paper's TPU v3 runs are not published with one; 0.4-0.5 is typical of
well-tuned ViT training on TPUs). The optimizer's per-step FLOPs are left out:
they are O(parameters) per step against O(parameters x tokens) per example.

The plan (``devices``, e.g. ``tpu_v4:256``). The trainer's own train step
(`steps.jit_train_step`, with the state `steps.initial_state` makes and the
layout `sharding.state_shardings` gives it) is compiled for a mesh of as
many emulated CPU devices as the target has, from `jax.ShapeDtypeStruct`
inputs: nothing is allocated. Per device it reports

  parameters, optimizer state  the shard shapes of the state's leaves under
                               their NamedShardings, summed (the EMA copy and
                               step counters count as optimizer state)
  batch                        the step's input, split over the batch axes
  activations                  XLA's temp allocation for the step: saved
                               activations, gradients and scratch

and refuses a layout whose sum exceeds the device's memory, naming the
largest term and the setting that shrinks it (`refusal`). The step's time is
its model FLOPs over the devices' peak (`accounting.peak_flops_per_device`)
at the assumed MFU.

What the plan cannot tell. The step is compiled by XLA:CPU, with each of the
model's kernels in the formulation accelerators run (`ACCELERATOR_KERNELS`),
but XLA:TPU and XLA:GPU fuse, schedule and rematerialise differently, and
XLA:CPU may widen bfloat16 temporaries to float32: the parameter and
optimizer figures are exact, the activation figure is XLA:CPU's, not yet
compared with a TPU's. XLA:CPU honours remat only inside a loop: plan a
rematerialised model with ``config.model.scan=True``, or its activations are
those without remat (the refusal says so). It knows nothing of the
runtime's own reservations (on GPUs JAX takes 75% of the memory unless
XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise), of cuDNN's fused attention
(compiled as XLA's), nor of the time collectives take.
"""
import copy
import dataclasses
import functools
import math
import time
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import optax

from vit_jax.cost import accounting
from vit_jax.models import build
from vit_jax.runtime import cpu_devices
from vit_jax.train import config_checks, sharding
from vit_jax.train import steps as train_steps  # `steps` counts steps below

LOWERING_BATCH = 8
"""Examples in the lowered programs; FLOPs are divided by it again."""

GiB = 2**30
MiB = 2**20


@dataclasses.dataclass(frozen=True)
class DeviceKind:
  """An accelerator as the plan sees it: one JAX device's memory, and a chip's devices.

  ``device_kind`` and ``platform`` are what JAX reports for it, from which
  `accounting.peak_flops_per_device` reads its peak FLOP/s.
  """
  name: str
  device_kind: str
  platform: str
  memory_bytes: int
  devices_per_chip: int = 1


# High-bandwidth memory per JAX device. TPUs, from Google's system
# architecture pages: v3 32 GiB a chip of two cores, each core a JAX device
# of 16 GiB; v4 32 GiB, v5e 16 GiB, v5p 95 GiB a chip, one device each.
# NVIDIA's data sheets (A100 40/80 GB, H100 SXM 80 GB, H200 141 GB), as the
# MiB that nvidia-smi lists as their total. Peak FLOP/s per device:
# accounting's tables (bfloat16: v3 123 TFLOP/s a chip, v4 275, v5e 197,
# v5p 459; A100 312, H100/H200 989 dense).
DEVICE_KINDS = {kind.name: kind for kind in (
    DeviceKind("tpu_v3", "TPU v3", "tpu", 16 * GiB, devices_per_chip=2),
    DeviceKind("tpu_v4", "TPU v4", "tpu", 32 * GiB),
    DeviceKind("tpu_v5e", "TPU v5 lite", "tpu", 16 * GiB),
    DeviceKind("tpu_v5p", "TPU v5p", "tpu", 95 * GiB),
    DeviceKind("a100_40gb", "NVIDIA A100-SXM4-40GB", "gpu", 40_960 * MiB),
    DeviceKind("a100_80gb", "NVIDIA A100-SXM4-80GB", "gpu", 81_920 * MiB),
    DeviceKind("h100", "NVIDIA H100 80GB HBM3", "gpu", 81_559 * MiB),
    DeviceKind("h200", "NVIDIA H200", "gpu", 143_771 * MiB),
)}

# What each of the model's 'auto' kernels is on an accelerator
# (vit_jax/models/*.py), which the plan compiles instead of the CPU's
# formulations. cuDNN's attention does not compile for CPU; XLA's stands in.
ACCELERATOR_KERNELS = {
    "attention_implementation": "dot_product_attention",
    "layer_norm_implementation": "flax",
    "dense_implementation": "flax",
    "conv_implementation": "xla",
}


def xla_flops_per_example(model, image_size, *, train):
  """XLA's FLOPs for one example's forward pass, or forward plus gradient.

  A scanned model (``scan=True``) is lowered with its blocks unrolled: XLA
  counts a loop's body once, so the scan would count one block of
  ``num_layers``; unrolled, the same numbers are computed.
  """
  if getattr(model, "scan", False):
    model = model.clone(scan=False)
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


def parse_devices(spec):
  """``KIND:CHIPS`` (``tpu_v4:1024``) as (DeviceKind, chips); a bad one names the valid kinds."""
  name, _, chips = spec.partition(":")
  kind = DEVICE_KINDS.get(name.strip().lower())
  if kind is None:
    raise ValueError(f"--devices={spec}: unknown device kind {name!r}; valid: "
                     f"{', '.join(DEVICE_KINDS)}, as KIND:CHIPS, e.g. tpu_v4:256")
  if not chips.isdigit() or int(chips) < 1:
    raise ValueError(f"--devices={spec}: expected KIND:CHIPS with a whole number "
                     f"of chips >= 1, e.g. {kind.name}:256")
  return kind, int(chips)


def emulated_devices(count):
  """``count`` CPU devices that stand in for the target's, to compile for.

  Call it before anything starts JAX's backends: the CPU backend then starts
  with ``count`` devices (and no accelerator backend starts). Where it has
  started already, or the user fixed its device count (XLA_FLAGS,
  JAX_NUM_CPU_DEVICES; the tests' 8), the first ``count`` of its devices.
  """
  jax.config.update("jax_platforms", "cpu")  # ignored once the backends started
  if not cpu_devices.chosen_by_user():
    try:
      jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # the CPU backend has started; its count stands
      pass
  devices = jax.devices("cpu")
  if len(devices) < count:
    raise ValueError(
        f"the plan compiles for {count} emulated CPU devices, but this process "
        f"has {len(devices)} (XLA_FLAGS or JAX_NUM_CPU_DEVICES set the count, or "
        f"the backend started first): run it in a process without them")
  return devices[:count]


def _with_accelerator_kernels(config):
  """A copy of ``config`` whose 'auto' (and cuDNN) kernels are `ACCELERATOR_KERNELS`."""
  config = copy.deepcopy(config)
  for field, kernel in ACCELERATOR_KERNELS.items():
    if config.model.get(field) in ("auto", "cudnn"):
      config.model[field] = kernel
  return config


def abstract_batch(config, mesh):
  """The train step's input as it arrives from the input pipeline, shapes only."""
  placed = sharding.batch_sharding(mesh)
  size, batch = config.image_size, config.global_batch
  return {"image": jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32,
                                        sharding=placed),
          "labels": jax.ShapeDtypeStruct((batch, config.data.num_classes),
                                         jnp.float32, sharding=placed)}


def device_plan(config, kind, chips, *, total_steps, mfu):
  """``config``'s train step on ``chips`` chips of ``kind``: memory, FLOPs, time.

  Returns (the plan's printed fields, the refusal or None). Fields ending in
  ``_bytes`` are one device's bytes. The devices are `emulated_devices`;
  ``config`` is checked for that many by the caller (`print_report`).
  """
  num_devices = chips * kind.devices_per_chip
  devices = emulated_devices(num_devices)
  config = _with_accelerator_kernels(config)
  mesh = sharding.make_mesh(config.mesh, devices)
  parts = train_steps.training_parts(config, total_steps=total_steps)
  model = parts.model
  abstract_state = parts.abstract_state()
  state_shardings = sharding.state_shardings(mesh, abstract_state, config.mesh)
  train_step = parts.jit_train_step(mesh, state_shardings)
  batch = abstract_batch(config, mesh)
  start = time.perf_counter()
  compiled = train_step.lower(jax.tree.map(
      lambda leaf, placed: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=placed),
      abstract_state, state_shardings), batch).compile()
  compile_seconds = time.perf_counter() - start

  memory = compiled.memory_analysis()
  params = sharding.bytes_per_device(abstract_state["params"], state_shardings["params"])
  terms = {
      "parameters": params,
      "optimizer state": sharding.bytes_per_device(abstract_state, state_shardings) - params,
      "batch": sharding.bytes_per_device(batch, jax.tree.map(lambda x: x.sharding, batch)),
      "activations": memory.temp_size_in_bytes,
  }
  # With the state donated, its outputs reuse its inputs' buffers (alias).
  total = (memory.argument_size_in_bytes + memory.output_size_in_bytes
           - memory.alias_size_in_bytes + memory.temp_size_in_bytes)
  micro_batch = (batch["image"].sharding.shard_shape(batch["image"].shape)[0]
                 // config.accum_steps)
  flops = accounting.analytic_flops_per_example(model, config.image_size, train=True)
  step_flops = flops * config.global_batch
  xla_flops = accounting.compiled_flops(compiled)
  peak = accounting.peak_flops_per_device(
      SimpleNamespace(device_kind=kind.device_kind, platform=kind.platform),
      config.model.dtype)
  step_seconds = step_flops / (num_devices * peak * mfu)
  spare = kind.memory_bytes - total
  plan = {
      "devices": f"{kind.name}:{chips}, {num_devices} JAX devices of "
                 f"{format_bytes(kind.memory_bytes)}",
      "mesh": ", ".join(f"{axis}={size}" for axis, size in mesh.shape.items()),
      "micro_batch_per_device": micro_batch,
      "parameters_bytes": terms["parameters"],
      "optimizer_state_bytes": terms["optimizer state"],
      "batch_bytes": terms["batch"],
      "activations_bytes": terms["activations"],
      "total_bytes": total,
      "fits": f"yes, {format_bytes(spare)} spare" if spare >= 0 else "no",
      "step_flops": step_flops,
      # XLA counts a loop's body once: with accumulation, one micro-batch;
      # with scan-over-layers, one block (so the count means nothing).
      "step_flops_xla": (xla_flops * num_devices * config.accum_steps
                         if xla_flops and not config.model.get("scan") else None),
      "peak_flops_per_device": peak,
      "step_seconds": step_seconds,
      "run_days": step_seconds * total_steps / accounting.SECONDS_PER_DAY,
      "compile_seconds": compile_seconds,
  }
  if spare >= 0:
    return plan, None
  return plan, refusal(config, kind, terms, total, mesh=mesh,
                       abstract_state=abstract_state, micro_batch=micro_batch)


def refusal(config, kind, terms, total, *, mesh, abstract_state, micro_batch):
  """Why the plan does not fit: its largest term, and the setting that shrinks it."""
  largest = max(terms, key=terms.get)
  head = (f"{format_bytes(total)} per device does not fit {kind.name}'s "
          f"{format_bytes(kind.memory_bytes)}; the largest term is {largest}, "
          f"{format_bytes(terms[largest])}")
  if largest in ("parameters", "optimizer state"):
    return f"{head}: {_layout_fix(config, kind, mesh, abstract_state)}"
  fixes = []
  if not config.model.remat:
    fixes.append("set config.model.remat=True (now False): each block keeps only "
                 "its input for the backward pass")
  elif config.model.get("remat_policy", "nothing_saveable") != "nothing_saveable":
    fixes.append(f"set config.model.remat_policy='nothing_saveable' (now "
                 f"{config.model.remat_policy!r})")
  factor = next((f for f in range(2, micro_batch + 1) if micro_batch % f == 0), None)
  if factor:
    fixes.append(f"a smaller micro-batch per device, {micro_batch // factor} not "
                 f"{micro_batch}: config.accum_steps={config.accum_steps * factor} "
                 f"(now {config.accum_steps})")
  if not fixes:
    fixes.append(f"more chips (--devices={kind.name}:N): one example per device "
                 f"with remat is as lean as this step gets")
  if config.model.remat and not config.model.get("scan", True):
    fixes.append(_REMAT_NEEDS_SCAN)
  return f"{head}: {'; or '.join(fixes)}"


# XLA:CPU schedules the recomputation of unrolled rematerialised blocks
# with their forward pass, so its temp is that of no remat at all (measured:
# G/14 at 4 layers, 16 examples a device, 5.87 GB with and without remat;
# 2.81 GB with remat inside nn.scan). A loop keeps the order.
_REMAT_NEEDS_SCAN = ("(the activations are XLA:CPU's figure without remat, which "
                     "it honours only inside a loop: plan with "
                     "config.model.scan=True to see what remat saves)")


def _layout_fix(config, kind, mesh, abstract_state):
  """The split of the devices into data x fsdp x model that leaves the least state.

  Each split is laid out by the config's own rules on `sharding.abstract_mesh`,
  without devices. Only a split the trainer accepts is named: one whose model
  axis does not divide a dimension the rules split over it (heads, MLP
  units) is skipped, and so is one that `config_checks.check_config` refuses,
  e.g. whose data x fsdp batch shards do not divide the global batch, the
  eval batch or each of the ``accum_steps`` micro-batches. A refused split
  that would leave less state is named with the trainer's reason, so the
  batch that would allow it can be chosen. Of equal splits the one with the
  smaller model axis wins, then the smaller fsdp: tensor parallelism
  communicates in every layer, forward and backward, and FSDP gathers every
  layer's parameters.
  """
  current = tuple(mesh.shape[axis] for axis in sharding.MESH_AXES)
  # The run's own split was checked before its plan (`print_report`).
  accepted, refused, reasons = {}, {}, {}  # {split: state bytes}, {split: why}
  for model in _divisors(mesh.size):
    for fsdp in _divisors(mesh.size // model):
      split = (mesh.size // (model * fsdp), fsdp, model)
      split_config = _with_split(config, split)
      layout = sharding.abstract_mesh(split_config.mesh, mesh.size)
      try:
        shardings = sharding.state_shardings(layout, abstract_state, split_config.mesh)
      except sharding.ModelAxisError:  # the trainer would refuse this split
        continue
      state_bytes = sharding.bytes_per_device(abstract_state, shardings)
      reason = None if split == current else _trainer_refusal(split_config, mesh.size)
      if reason:
        refused[split], reasons[split] = state_bytes, reason
      else:
        accepted[split] = state_bytes
  now = accepted[current]
  best = _least_state(accepted)
  if accepted[best] < now:
    message = (f"set {_split_settings(best, 'config.mesh.')} (now "
               f"{_split_settings(current)}) for {format_bytes(accepted[best])} of "
               f"parameters and optimizer state per device, not {format_bytes(now)}")
  else:
    message = (f"config.mesh.data, config.mesh.fsdp and config.mesh.model split the "
               f"state as far as config.mesh.rules and the trainer's checks allow "
               f"({format_bytes(now)} per device); more chips "
               f"(--devices={kind.name}:N) split it further")
  leaner = _least_state(refused) if refused else None
  if leaner is not None and refused[leaner] < accepted[best]:
    message += (f" ({_split_settings(leaner)} would leave "
                f"{format_bytes(refused[leaner])}, but the trainer refuses it: "
                f"{reasons[leaner]})")
  return message


def _trainer_refusal(config, num_devices):
  """Why the trainer refuses ``config`` on ``num_devices`` (its own checks), or None.

  The plan does not know the target's hosts: it checks for one process, as
  `print_report` does.
  """
  try:
    config_checks.check_config(config, num_devices=num_devices, process_count=1)
  except ValueError as e:
    return str(e)
  return None


def _least_state(state_bytes):
  """The split of ``state_bytes`` with the least, then the smaller model axis and fsdp."""
  return min(state_bytes, key=lambda split: (state_bytes[split], split[2], split[1]))


def _with_split(config, split):
  """A copy of ``config`` whose mesh is ``split``: (data, fsdp, model) sizes."""
  config = copy.deepcopy(config)
  config.unlock()  # a config from before tensor parallelism has no model axis
  config.mesh.update(dict(zip(sharding.MESH_AXES, split)))
  return config


def _split_settings(split, prefix=""):
  """'data=2, fsdp=4, model=1', each name after ``prefix``."""
  return ", ".join(f"{prefix}{axis}={size}" for axis, size in zip(sharding.MESH_AXES, split))


def _divisors(number):
  return [n for n in range(1, number + 1) if number % n == 0]


def format_bytes(num_bytes):
  """``num_bytes`` in GiB, or in MiB below one GiB."""
  if abs(num_bytes) >= GiB:
    return f"{num_bytes / GiB:.2f} GiB"
  return f"{num_bytes / MiB:.2f} MiB"


def format_estimate(estimate_dict):
  """The estimate as aligned 'name  value' lines for a terminal."""
  lines = []
  for key, value in estimate_dict.items():
    if key.endswith("_bytes"):
      value = f"{value:,} ({format_bytes(value)})"
    elif isinstance(value, float):
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


def _fewest_devices(mesh_config):
  """The fewest devices a mesh config covers: its fixed axis sizes' product.

  A multi-host config (``data=4, fsdp=-1``) is checked on a machine with
  fewer devices than it will run on; -1 (the rest) then takes one.
  """
  sizes = (mesh_config.data, mesh_config.fsdp, mesh_config.get("model", 1))
  return math.prod(size for size in sizes if size > 0)


def _devices_hint(kind, asked, num_devices):
  """The --devices a mesh of fixed sizes asks for, for `sharding.axis_sizes`.

  Its default hint (JAX_NUM_CPU_DEVICES) would be wrong here: the plan's
  devices are the target's, emulated, and a count fixed by the user makes
  `emulated_devices` refuse the plan.
  """
  del num_devices  # the error names it already
  wanted = math.prod(asked)
  if -1 in asked or wanted < 1 or wanted % kind.devices_per_chip:
    return ""
  return (f"; or plan for {wanted} devices: "
          f"--devices={kind.name}:{wanted // kind.devices_per_chip}")


def print_report(config, *, train_examples=None, mfu, devices=None):
  """Prints the estimate of `vit_jax.main --dry_run` and scripts/estimate_cost.py.

  With ``devices`` (``KIND:CHIPS``, see `parse_devices`) the plan for them
  follows (`device_plan`); a plan that does not fit is printed, then
  refused with a ValueError naming its largest term and the fix.

  A config the trainer would refuse is refused here first, with the
  trainer's message naming the key (checked for the target's devices, or,
  when no ``devices`` are given, for the fewest that `config.mesh` can
  cover). Bad input is a ValueError whose message the callers print as the
  whole error.
  """
  target = parse_devices(devices) if devices else None
  num_devices = (target[0].devices_per_chip * target[1] if target
                 else _fewest_devices(config.mesh))
  if target:  # before anything below starts JAX's backend
    emulated_devices(num_devices)
    sharding.axis_sizes(config.mesh, num_devices,
                        hint=functools.partial(_devices_hint, target[0]))
  config_checks.check_config(config, num_devices=num_devices, process_count=1)
  total_steps, epoch_size = planned_steps(config, train_examples)
  estimate_dict = estimate(config, total_steps=total_steps, mfu=mfu)
  if epoch_size:
    estimate_dict.update(epochs=config.total_epochs, epoch_size=epoch_size)
  refused = None
  if target:
    plan, refused = device_plan(config, *target, total_steps=total_steps, mfu=mfu)
    estimate_dict.update(plan)
  print(format_estimate(estimate_dict), flush=True)
  if refused:
    raise ValueError(refused)
