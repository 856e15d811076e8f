"""The device mesh and how parameters, optimizer state and batches lie on it.

The mesh has two axes, ``('data', 'fsdp')``. Batches split over both, so
every device sees its own examples. Parameters are replicated over ``data``;
with ``fsdp > 1`` each parameter of at least ``fsdp_min_size`` elements is
split along its largest dimension that ``fsdp`` divides (ZeRO-3 style), and
the optimizer state follows the parameter it belongs to.
"""
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def make_mesh(mesh_config, devices=None):
  """A ('data', 'fsdp') mesh over ``devices`` (default: all of them).

  ``mesh_config.data = -1`` takes every device that ``fsdp`` leaves over.
  """
  devices = jax.devices() if devices is None else list(devices)
  fsdp = mesh_config.fsdp
  data = mesh_config.data if mesh_config.data != -1 else len(devices) // max(fsdp, 1)
  if fsdp < 1 or data < 1 or data * fsdp != len(devices):
    raise ValueError(
        f"config.mesh data={mesh_config.data} x fsdp={fsdp} does not cover "
        f"the {len(devices)} devices; choose sizes whose product is "
        f"{len(devices)} (data=-1 takes the rest)")
  # Auto axes: XLA propagates shardings from the inputs' and outputs'
  # annotations, so the model code needs no sharding types of its own.
  axis_types = (AxisType.Auto,) * len(BATCH_AXES)
  if devices == jax.devices():
    return jax.make_mesh((data, fsdp), BATCH_AXES, axis_types=axis_types)
  return Mesh(np.asarray(devices).reshape(data, fsdp), BATCH_AXES,
              axis_types=axis_types)


def batch_sharding(mesh):
  """Leading (batch) dimension split over every device of the mesh."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh):
  return NamedSharding(mesh, P())


def _param_spec(shape, fsdp, min_size):
  """Shards the largest dimension that ``fsdp`` divides, if big enough."""
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp == 0:
      spec = [None] * len(shape)
      spec[dim] = "fsdp"
      return P(*spec)
  return P()


def state_shardings(mesh, abstract_state, min_size):
  """NamedShardings for a train state: params, their optimizer moments, EMA.

  The layout of a leaf depends only on its shape, so Adam's mu and nu, the
  momentum trace and the EMA copy lie exactly like the parameter they shadow;
  scalars (step counters) are replicated.
  """
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(
      lambda leaf: NamedSharding(mesh, _param_spec(leaf.shape, fsdp, min_size)),
      abstract_state)
