"""The device mesh, and the partition rules that lay the train state on it.

The mesh has three axes, ``('data', 'fsdp', 'model')``, over the devices of
every process. Batches split over ``data`` and ``fsdp``, so every group of
``model`` devices sees the same examples and splits each layer's work.
`config.mesh` picks the layout:

  data parallel (default)  data=-1          state replicated everywhere
  FSDP (ZeRO-3)            data=1, fsdp=-1  large parameters split 1/fsdp
  data x fsdp              data=2, fsdp=-1  split within a group of fsdp
                                            devices, replicated across groups
  tensor parallel          model=4, ...     attention heads and MLP units
                                            split 1/model (Megatron), with
                                            any of the above for the rest

Which parameter is split is decided in one place, `config.mesh.rules`: a
sequence of ``(regex, rule)`` pairs, as in big_vision. The first regex that
fully matches a parameter's published name (e.g.
``Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel``, the names weight
decay uses too) gives its rule:

  'fsdp'       split the largest dimension that the fsdp axis divides, if the
               parameter has at least `config.mesh.fsdp_min_size` elements;
               otherwise replicate. Never the layer axis of scan's stacked
               blocks: each step of the scan reads one layer whole, which
               split over fsdp would gather the whole stack
  'model:D'    split dimension D over the model axis, D counted from the end
               (-1 the last), and the largest of the other dimensions over
               fsdp as 'fsdp' does. Counting from the end keeps a rule right
               when scan-over-layers stacks a leading layer axis. A model
               axis that does not divide dimension D is an error: a
               silent copy would save neither the memory nor the work that
               the model axis was asked for
  'replicate'  a full copy on every device

A parameter that no regex matches is replicated. Optimizer moments and the
EMA copy lie exactly like the parameter they shadow; step counters and
factored moments' row and column vectors are replicated. `describe` is the table `train.py` logs at start-up.

Megatron's split (the default rules in configs/common.py): query/key/value
kernels (hidden, heads, head_dim) and biases on heads, the `out` kernel
(heads, head_dim, hidden) on heads, the MLP's Dense_0 (kernel and bias) and
Dense_1's kernel on the MLP units. Activations follow from these under jit:
XLA's sharding propagation splits the heads and MLP units of the activations
the same way and sums the partial outputs of `out` and Dense_1 over the
model axis: two all-reduces a block forward, as Megatron does by hand.
"""
import math
import re

import jax
import numpy as np
from jax.sharding import AbstractMesh, AxisType, Mesh, NamedSharding, PartitionSpec as P

from vit_jax import tree_util
from vit_jax.models import activation_sharding, layer_stack

MESH_AXES = ("data", "fsdp", "model")
BATCH_AXES = activation_sharding.BATCH_AXES
RULES = ("fsdp", "replicate", "model:D (D < 0, a dimension counted from the "
         "end, e.g. model:-1)")
_MODEL_RULE = re.compile(r"model:(-[1-9][0-9]*)")
# Auto axes: XLA propagates shardings from the inputs' and outputs'
# annotations, so the model code needs no sharding types of its own.
_AXIS_TYPES = (AxisType.Auto,) * len(MESH_AXES)


def make_mesh(mesh_config, devices=None):
  """A ('data', 'fsdp', 'model') mesh over ``devices`` (default: all of them).

  One of ``mesh_config.data``, ``.fsdp`` and ``.model`` (1 when absent) may
  be -1: it takes every device the others leave over.
  """
  devices = jax.devices() if devices is None else list(devices)
  shape = axis_sizes(mesh_config, len(devices))
  if devices == jax.devices():
    # jax.make_mesh keeps each process's devices together, as
    # make_array_from_process_local_data needs for the batch, and puts the
    # last axis, model, on the most closely linked devices.
    mesh = jax.make_mesh(shape, MESH_AXES, axis_types=_AXIS_TYPES)
  else:
    mesh = Mesh(np.asarray(devices).reshape(shape), MESH_AXES,
                axis_types=_AXIS_TYPES)
  _check_model_groups_in_one_process(mesh)
  return mesh


def abstract_mesh(mesh_config, num_devices):
  """The mesh `make_mesh` would build on ``num_devices``, without devices.

  `param_shardings`, `state_shardings`, `bytes_per_device` and `describe`
  take it like a real mesh, to plan a run for a machine one does not have.
  """
  return AbstractMesh(axis_sizes(mesh_config, num_devices), MESH_AXES,
                      axis_types=_AXIS_TYPES)


def axis_sizes(mesh_config, num_devices, *, hint=None):
  """(data, fsdp, model) from `config.mesh`, the -1 resolved; bad sizes named.

  ``hint(asked, num_devices)`` ends the error with how to get the devices
  the sizes ask for; by default `_cpu_devices_hint`, which fits a run on
  this host but not a plan, whose devices come from --devices.
  """
  asked = (mesh_config.data, mesh_config.fsdp, mesh_config.get("model", 1))
  sizes = list(asked)
  known = math.prod(s for s in sizes if s != -1)
  if sizes.count(-1) == 1 and known >= 1:
    sizes[sizes.index(-1)] = num_devices // known
  if min(sizes) < 1 or math.prod(sizes) != num_devices:
    raise ValueError(
        "config.mesh " + " x ".join(f"{a}={s}" for a, s in zip(MESH_AXES, asked))
        + f" does not cover the {num_devices} devices; choose sizes whose "
        f"product is {num_devices}, at most one of them -1 (it takes the rest)"
        + (hint or _cpu_devices_hint)(asked, num_devices))
  return tuple(sizes)


def _cpu_devices_hint(asked, num_devices):
  """How to get the devices a fixed mesh asks for, where they are this CPU's.

  The launchers give a CPU host one device per core; a mesh of fixed sizes
  (a TPU slice's, say) needs that many emulated devices instead.
  """
  wanted = math.prod(asked)
  if (-1 in asked or wanted < 1 or jax.default_backend() != "cpu"
      or num_devices != jax.device_count()):
    return ""
  return (f"; or, on this CPU host, emulate {wanted} devices with "
          f"JAX_NUM_CPU_DEVICES={wanted}")


def _check_model_groups_in_one_process(mesh):
  """Refuses a model axis that spans processes.

  The devices of one model group must see the same examples, but each
  process feeds its devices its own slice of the batch.
  """
  processes = np.vectorize(lambda d: d.process_index)(mesh.devices)
  if (processes != processes[..., :1]).any():
    raise ValueError(
        f"config.mesh.model={mesh.shape['model']} spans several processes; the "
        f"model axis must fit in the {jax.local_device_count()} devices of one "
        f"process, which feeds them all the same examples")


def batch_sharding(mesh):
  """Leading (batch) dimension split over the data axes, same on every model
  device."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh):
  return NamedSharding(mesh, P())


def _parse_rule(rule):
  """(split over fsdp, dimension over model or None), or None if malformed."""
  if rule == "fsdp":
    return True, None
  if rule == "replicate":
    return False, None
  match = _MODEL_RULE.fullmatch(rule) if isinstance(rule, str) else None
  return (True, int(match.group(1))) if match else None


class ModelAxisError(ValueError):
  """``config.mesh.model`` does not divide a dimension the rules split over it."""


def compile_rules(mesh_config):
  """``config.mesh.rules`` as (compiled regex, rule text, parsed rule);
  a malformed entry is named."""
  rules = []
  for entry in mesh_config.rules:
    parsed = _parse_rule(entry[1]) if len(entry) == 2 else None
    if parsed is None:
      raise ValueError(
          f"config.mesh.rules entry {tuple(entry)!r}: expected (regex, rule) "
          f"with rule one of {', '.join(RULES)}")
    try:
      rules.append((re.compile(entry[0]), entry[1], parsed))
    except re.error as e:
      raise ValueError(f"config.mesh.rules regex {entry[0]!r}: {e}") from None
  return rules


def _spec(name, shape, rule, mesh, min_size):
  """The PartitionSpec that ``rule`` (`_parse_rule`'s) gives parameter ``name``."""
  split_fsdp, model_dim = rule
  spec = [None] * len(shape)
  if model_dim is not None:
    # Checked whatever the model axis, so a rule that cannot fit is found on
    # the first run, not the first one with model > 1.
    if -model_dim > len(shape):
      raise ValueError(
          f"config.mesh.rules give {name} {tuple(shape)} the rule "
          f"'model:{model_dim}', but it has {len(shape)} dimensions")
    model = mesh.shape["model"]
    if model > 1:
      if shape[model_dim] % model:
        raise ModelAxisError(
            f"config.mesh.model={model} does not divide dimension {model_dim} "
            f"(size {shape[model_dim]}) of {name} {tuple(shape)}, which "
            f"config.mesh.rules split over the model axis; choose a model axis "
            f"that divides it, or a rule that replicates {name}")
      spec[model_dim] = "model"
  fsdp = mesh.shape["fsdp"]
  if split_fsdp and fsdp > 1 and math.prod(shape) >= min_size:
    stacked = f"/{layer_stack.STACKED_BLOCKS}/" in f"/{name}"  # its dimension 0: layers
    free = [d for d in range(int(stacked), len(shape)) if spec[d] is None]
    for dim in sorted(free, key=lambda d: -shape[d]):
      if shape[dim] % fsdp == 0:
        spec[dim] = "fsdp"
        break
  return P(*spec) if any(spec) else P()


def _param_layouts(mesh, abstract_params, mesh_config):
  """{name: (PartitionSpec, regex or None)} for every parameter."""
  rules = compile_rules(mesh_config)
  layouts = {}
  for name, leaf in tree_util.flatten_named(abstract_params):
    regex, rule = next(((r, parsed) for r, _, parsed in rules if r.fullmatch(name)),
                       (None, (False, None)))
    layouts[name] = (_spec(name, leaf.shape, rule, mesh, mesh_config.fsdp_min_size),
                     regex and regex.pattern)
  return layouts


def param_shardings(mesh, abstract_params, mesh_config):
  """NamedShardings for a tree of parameters, by `config.mesh.rules`."""
  return _as_shardings(mesh, abstract_params,
                       _param_layouts(mesh, abstract_params, mesh_config))


def _as_shardings(mesh, abstract_params, layouts):
  """The tree of NamedShardings that `_param_layouts`' ``layouts`` give."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: NamedSharding(mesh, layouts[tree_util.path_name(path)][0]),
      abstract_params)


def state_shardings(mesh, abstract_state, mesh_config):
  """NamedShardings for a train state ``{'params', 'opt_state', ...}``.

  A leaf whose path ends with a parameter's name and that has the
  parameter's shape (Adam's ``mu`` and ``nu``, the momentum trace, the EMA
  copy) lies like that parameter. Other leaves are replicated: step
  counters, and a factored moment's row and column vectors, whose shape is
  not the parameter's (its spec would name the wrong dimensions) and whose
  size is a small fraction of it.
  """
  params = dict(tree_util.flatten_named(abstract_state["params"]))
  layouts = _param_layouts(mesh, abstract_state["params"], mesh_config)

  def sharding_of(path, leaf):
    parts = tree_util.path_name(path).split("/")
    for start in range(len(parts)):
      name = "/".join(parts[start:])
      if name in layouts:
        if params[name].shape == leaf.shape:
          return NamedSharding(mesh, layouts[name][0])
        break
    return replicated(mesh)

  return jax.tree_util.tree_map_with_path(sharding_of, abstract_state)


def bytes_per_device(abstract_tree, shardings):
  """The bytes of one device's shards of a tree, from shapes alone."""
  return sum(
      int(np.prod(s.shard_shape(leaf.shape), dtype=np.int64)) * leaf.dtype.itemsize
      for leaf, s in zip(jax.tree.leaves(abstract_tree), jax.tree.leaves(shardings)))


def describe(mesh, abstract_params, mesh_config):
  """The rules and the layout they give each parameter, for the log."""
  layouts = _param_layouts(mesh, abstract_params, mesh_config)
  lines = [f"mesh {dict(mesh.shape)} (batches split over {' x '.join(BATCH_AXES)}); "
           f"config.mesh.rules (first match wins, "
           f"fsdp_min_size={mesh_config.fsdp_min_size}):"]
  lines += [f"  {regex!r} -> {rule}" for regex, rule in mesh_config.rules]
  # Sharded parameters, and those no rule matched, one by one; the rest are
  # only counted, so the start-up log stays short in the data-parallel default.
  replicated_count = 0
  for name, leaf in tree_util.flatten_named(abstract_params):
    spec, regex = layouts[name]
    if spec == P() and regex:
      replicated_count += 1
      continue
    lines.append(f"  {name} {tuple(leaf.shape)} -> {spec}"
                 + ("" if regex else " (no rule matched)"))
  lines.append(f"  {replicated_count} more parameters replicated")
  per_device = bytes_per_device(
      abstract_params, _as_shardings(mesh, abstract_params, layouts))
  total = sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(abstract_params))
  lines.append(f"parameters: {per_device / 2**20:.1f} MiB per device of "
               f"{total / 2**20:.1f} MiB (optimizer moments lie alike)")
  return "\n".join(lines)
