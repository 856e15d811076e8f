"""Checkpoints: orbax save/restore/resume, published-layout .npz, posemb resampling.

A run's checkpoints live in ``WORKDIR/checkpoints/<step>/`` and are written by
an orbax ``CheckpointManager``, whose commit marker means a half-written step
is never picked on resume. The train state is a dict
``{'step', 'params', 'opt_state'[, 'ema_params']}``.

Fine-tuning reads parameters from any of: a workdir (its latest step), one
step directory, or a ``.npz`` in the layout of the published ViT checkpoints
(flat '/'-joined names). `load_pretrained` then fits them to the new model:
head re-initialised, pre_logits dropped when the new model has none, and the
position embeddings resampled to the new patch grid.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from vit_jax import tree_util

CHECKPOINT_SUBDIR = "checkpoints"
POSEMB = "Transformer/posembed_input/pos_embedding"
HEAD_PREFIXES = ("head/",)
RESAMPLE_METHODS = {"bilinear": "linear", "bicubic": "cubic"}


# ---------------------------------------------------------------------------
# Orbax checkpoints of the train state.
# ---------------------------------------------------------------------------
def make_manager(workdir, *, max_to_keep=None, read_only=False):
  """The CheckpointManager of ``workdir``; saves are asynchronous."""
  directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_SUBDIR))
  return ocp.CheckpointManager(
      directory,
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "progress": ocp.JsonCheckpointHandler()},
      options=ocp.CheckpointManagerOptions(
          max_to_keep=max_to_keep, read_only=read_only,
          create=not read_only))


def save(manager, step, state, progress):
  """Starts an asynchronous save of ``state`` and the JSON ``progress`` at ``step``.

  ``progress`` holds the run's running totals (examples seen, training
  seconds) so that a resumed run's accounting continues them.
  """
  manager.save(step, force=True, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      progress=ocp.args.JsonSave(progress)))


def restore(manager, step, abstract_state):
  """Restores ``step`` into the shardings that ``abstract_state`` carries.

  The target decides the layout, so a checkpoint written on another mesh or
  device count restores onto the current one. Returns {'state', 'progress'}.
  """
  return manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      progress=ocp.args.JsonRestore()))


def _restore_on_host(checkpoint_dir, step):
  """Every array of a step, on one local device, whatever mesh wrote it."""
  manager = ocp.CheckpointManager(
      checkpoint_dir, item_handlers={"state": ocp.StandardCheckpointHandler()},
      options=ocp.CheckpointManagerOptions(read_only=True, create=False))
  metadata = manager.item_metadata(step)["state"]
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
  return manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(target)))["state"]


# ---------------------------------------------------------------------------
# The published layout: flat '/'-joined names in an .npz.
# ---------------------------------------------------------------------------
def flatten(params):
  """{'a': {'b': x}} -> {'a/b': np.asarray(x)}."""
  return {name: np.asarray(leaf) for name, leaf in tree_util.flatten_named(params)}


def unflatten(flat):
  """{'a/b': x} -> {'a': {'b': x}}."""
  tree = {}
  for name, value in flat.items():
    *parents, leaf = name.split("/")
    node = tree
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree


def save_npz(params, path):
  """Writes ``params`` as a published-layout .npz (flat '/'-joined names)."""
  with open(path, "wb") as f:
    np.savez(f, **flatten(params))


def load_npz(path):
  """Reads a published-layout .npz into a nested dict of numpy arrays."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint file {path} does not exist")
  with np.load(path, allow_pickle=False) as data:
    return unflatten({name: data[name] for name in data.files})


# ---------------------------------------------------------------------------
# Fine-tuning: reading and fitting pre-trained parameters.
# ---------------------------------------------------------------------------
def read_params(path):
  """Parameters from a .npz, a run's workdir, or one checkpoint step dir.

  A run that kept an EMA of its parameters is read through the EMA, which is
  what its evaluation reported.
  """
  if path.endswith(".npz"):
    return load_npz(path)
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, CHECKPOINT_SUBDIR)):
    checkpoint_dir = os.path.join(path, CHECKPOINT_SUBDIR)
    step = ocp.CheckpointManager(
        checkpoint_dir, options=ocp.CheckpointManagerOptions(
            read_only=True, create=False)).latest_step()
    if step is None:
      raise FileNotFoundError(f"no committed checkpoint in {checkpoint_dir}")
  elif os.path.basename(path).isdigit() and os.path.isdir(path):
    checkpoint_dir, step = os.path.dirname(path), int(os.path.basename(path))
  else:
    raise FileNotFoundError(
        f"config.init={path!r} is neither a .npz file, a workdir with a "
        f"'{CHECKPOINT_SUBDIR}' folder, nor a checkpoint step directory")
  state = _restore_on_host(checkpoint_dir, step)
  params = state.get("ema_params") or state["params"]
  return jax.tree.map(np.asarray, params)


def grid_size(num_tokens):
  """The side of a square patch grid of ``num_tokens`` tokens."""
  side = int(round(np.sqrt(num_tokens)))
  if side * side != num_tokens:
    raise ValueError(
        f"position embeddings of {num_tokens} patch tokens form no square "
        f"grid; pass the grid (rows, cols) explicitly")
  return side, side


def resample_posemb(posemb, new_grid, *, num_prefix_tokens, old_grid=None,
                    method="bilinear"):
  """Resamples (1, prefix + h*w, D) position embeddings to ``new_grid``.

  The prefix tokens (the class token's embedding) are kept as they are; the
  patch embeddings are viewed as an (h, w, D) image and resized, so a model
  pre-trained at 224 px (14x14 at /16) fine-tunes at 384 px (24x24).
  """
  if method not in RESAMPLE_METHODS:
    raise ValueError(f"config.posemb_resample={method!r}; valid: "
                     f"{', '.join(RESAMPLE_METHODS)}")
  prefix, patches = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
  old_grid = tuple(old_grid or grid_size(patches.shape[1]))
  if old_grid[0] * old_grid[1] != patches.shape[1]:
    raise ValueError(f"position embeddings have {patches.shape[1]} patch "
                     f"tokens, not a {old_grid[0]}x{old_grid[1]} grid")
  new_grid = tuple(new_grid)
  if new_grid == old_grid:
    return posemb
  dim = patches.shape[-1]
  image = patches.reshape(old_grid + (dim,)).astype(jnp.float32)
  resized = jax.image.resize(image, new_grid + (dim,), RESAMPLE_METHODS[method])
  resized = resized.reshape(1, new_grid[0] * new_grid[1], dim).astype(posemb.dtype)
  return np.concatenate([np.asarray(prefix), np.asarray(resized)], axis=1)


def load_pretrained(path, init_params, *, new_grid, num_prefix_tokens,
                    posemb_method="bilinear"):
  """Fits the parameters at ``path`` to a model whose fresh ones are ``init_params``.

  The head keeps its fresh (zero) initialisation for the new classes; a
  pre_logits layer the new model lacks is dropped; the position embeddings
  are resampled to ``new_grid``; every other tensor must match in name and
  shape, and a mismatch is an error naming the parameter and both shapes.
  """
  loaded = flatten(read_params(path))
  fresh = flatten(init_params)
  missing = sorted(set(fresh) - set(loaded) - {n for n in fresh if n.startswith(HEAD_PREFIXES)})
  if missing:
    raise ValueError(f"{path}: parameter {missing[0]} of the model is missing "
                     f"in the checkpoint ({len(missing)} missing in all)")
  unexpected = sorted(set(loaded) - set(fresh) - {n for n in loaded if n.startswith("pre_logits/")})
  if unexpected:
    raise ValueError(f"{path}: parameter {unexpected[0]} of the checkpoint is "
                     f"not in the model ({len(unexpected)} unexpected in all)")
  fitted = {}
  for name, fresh_value in fresh.items():
    if name.startswith(HEAD_PREFIXES):
      fitted[name] = fresh_value
      continue
    value = loaded[name]
    if name == POSEMB:
      value = resample_posemb(value, new_grid, num_prefix_tokens=num_prefix_tokens,
                              method=posemb_method)
    if value.shape != fresh_value.shape:
      raise ValueError(f"{path}: parameter {name} has shape {value.shape} in "
                       f"the checkpoint but {fresh_value.shape} in the model")
    fitted[name] = value.astype(fresh_value.dtype)
  return unflatten(fitted)
