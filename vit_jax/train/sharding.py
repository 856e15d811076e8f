"""The device mesh, and the partition rules that lay the train state on it.

The mesh has two axes, ``('data', 'fsdp')``, over the devices of every
process. Batches split over both, so every device sees its own examples.
`config.mesh` picks the layout:

  data parallel (default)  data=-1, fsdp=1   state replicated everywhere
  FSDP (ZeRO-3)            data=1, fsdp=-1   large parameters split 1/fsdp
  data x fsdp              data=2, fsdp=-1   split within a group of fsdp
                                             devices, replicated across groups

Which parameter is split is decided in one place, `config.mesh.rules`: a
sequence of ``(regex, rule)`` pairs, as in big_vision. The first regex that
fully matches a parameter's published name (e.g.
``Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel``, the names weight
decay uses too) gives its rule:

  'fsdp'       split the largest dimension that the fsdp axis divides, if the
               parameter has at least `config.mesh.fsdp_min_size` elements;
               otherwise replicate
  'replicate'  a full copy on every device

A parameter that no regex matches is replicated. Optimizer moments and the
EMA copy lie exactly like the parameter they shadow; step counters are
replicated. `describe` is the table `train.py` logs at start-up.
"""
import re

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from vit_jax import tree_util

BATCH_AXES = ("data", "fsdp")
RULES = ("fsdp", "replicate")


def make_mesh(mesh_config, devices=None):
  """A ('data', 'fsdp') mesh over ``devices`` (default: all of them).

  One of ``mesh_config.data`` and ``mesh_config.fsdp`` may be -1: it takes
  every device the other leaves over.
  """
  devices = jax.devices() if devices is None else list(devices)
  data, fsdp = _axis_sizes(mesh_config, len(devices))
  # Auto axes: XLA propagates shardings from the inputs' and outputs'
  # annotations, so the model code needs no sharding types of its own.
  axis_types = (AxisType.Auto,) * len(BATCH_AXES)
  if devices == jax.devices():
    # jax.make_mesh keeps each process's devices together, as
    # make_array_from_process_local_data needs for the batch.
    return jax.make_mesh((data, fsdp), BATCH_AXES, axis_types=axis_types)
  return Mesh(np.asarray(devices).reshape(data, fsdp), BATCH_AXES,
              axis_types=axis_types)


def _axis_sizes(mesh_config, num_devices):
  data, fsdp = mesh_config.data, mesh_config.fsdp
  if data == -1 and fsdp != -1 and fsdp >= 1:
    data = num_devices // fsdp
  elif fsdp == -1 and data != -1 and data >= 1:
    fsdp = num_devices // data
  if data < 1 or fsdp < 1 or data * fsdp != num_devices:
    raise ValueError(
        f"config.mesh data={mesh_config.data} x fsdp={mesh_config.fsdp} does "
        f"not cover the {num_devices} devices; choose sizes whose product is "
        f"{num_devices}, at most one of them -1 (it takes the rest)")
  return data, fsdp


def batch_sharding(mesh):
  """Leading (batch) dimension split over every device of the mesh."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh):
  return NamedSharding(mesh, P())


def compile_rules(mesh_config):
  """``config.mesh.rules`` as (compiled regex, rule); a malformed entry is named."""
  rules = []
  for entry in mesh_config.rules:
    if len(entry) != 2 or entry[1] not in RULES:
      raise ValueError(
          f"config.mesh.rules entry {tuple(entry)!r}: expected (regex, rule) "
          f"with rule one of {', '.join(RULES)}")
    try:
      rules.append((re.compile(entry[0]), entry[1]))
    except re.error as e:
      raise ValueError(f"config.mesh.rules regex {entry[0]!r}: {e}") from None
  return rules


def _spec(shape, rule, fsdp, min_size):
  """The PartitionSpec that ``rule`` gives a parameter of ``shape``."""
  if rule != "fsdp" or fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def _param_layouts(mesh, abstract_params, mesh_config):
  """{name: (PartitionSpec, regex or None)} for every parameter."""
  rules = compile_rules(mesh_config)
  fsdp = mesh.shape["fsdp"]
  layouts = {}
  for name, leaf in tree_util.flatten_named(abstract_params):
    regex, rule = next(((r, rule) for r, rule in rules if r.fullmatch(name)),
                       (None, "replicate"))
    layouts[name] = (_spec(leaf.shape, rule, fsdp, mesh_config.fsdp_min_size),
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

  A leaf whose path ends with a parameter's name (Adam's ``mu`` and ``nu``,
  the momentum trace, the EMA copy) lies like that parameter; other leaves
  (step counters) are replicated.
  """
  layouts = _param_layouts(mesh, abstract_state["params"], mesh_config)

  def sharding_of(path, _):
    parts = tree_util.path_name(path).split("/")
    for start in range(len(parts)):
      layout = layouts.get("/".join(parts[start:]))
      if layout is not None:
        return NamedSharding(mesh, layout[0])
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
  lines = [f"mesh {dict(mesh.shape)}; config.mesh.rules (first match wins, "
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
