"""How the model's activations lie on the mesh: the batch split over the batch axes.

The model itself names no mesh; the trainer places parameters by its rules
(`vit_jax.train.sharding`) and traces the step under its mesh
(`train.steps`). What the model must say is only where the activations go
when propagation alone would choose badly: between blocks, the batch is
split over ``BATCH_AXES`` and every other dimension is whole (the residual
stream of Megatron's layout).
"""
import contextlib
import math

import jax
from jax.sharding import PartitionSpec as P

# The mesh axes a batch is split over: data parallelism and FSDP's.
BATCH_AXES = ("data", "fsdp")


def constrain_batch(x):
  """``x`` with its leading (batch) dimension split over the batch axes.

  FSDP splits parameters over ``fsdp``; without this, XLA's sharding
  propagation may carry a parameter's split into the activations (the patch
  embedding's output channels, then every block's hidden units), which
  leaves the batch whole on each of the ``fsdp`` devices, so activations
  grow with the fsdp axis, not the per-device batch (docs/scaling.md, "Scan
  with FSDP"). A no-op unless a mesh with the batch axes is in context
  (`jax.sharding.use_abstract_mesh` inside a jit, as the train step does),
  so the model runs unchanged outside one; also where the batch does not
  divide evenly over the batch axes (an init on one example).
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or not set(BATCH_AXES) <= set(mesh.axis_names):
    return x
  if x.shape[0] % math.prod(mesh.shape[axis] for axis in BATCH_AXES):
    return x
  return jax.lax.with_sharding_constraint(x, P(BATCH_AXES))


def under(mesh):
  """A context in which a jitted function traces the model under ``mesh``.

  Inside it `constrain_batch` acts; with ``mesh`` None it is a no-op. The
  train step, the eval step and the few-shot feature step trace under it.
  """
  if mesh is None:
    return contextlib.nullcontext()
  return jax.sharding.use_abstract_mesh(mesh.abstract_mesh)
