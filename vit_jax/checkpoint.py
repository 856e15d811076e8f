"""Checkpoints: orbax save/restore/resume, published-layout .npz, posemb resampling.

A run's checkpoints live in ``WORKDIR/checkpoints/<step>/`` and are written by
an orbax ``CheckpointManager``, whose commit marker means a half-written step
is never picked on resume. The train state is the dict that
`steps.initial_state` builds: ``{'step', 'params', 'opt_state',
'skipped_steps', 'first_skipped_step'[, 'ema_params']}``.

Fine-tuning reads parameters from any of: a workdir (its latest step), one
step directory, or a ``.npz`` in the layout of the published ViT checkpoints
(flat '/'-joined names; the older layouts of the same model are renamed on
reading). `load_pretrained` then fits them to the new model: head
re-initialised, pre_logits dropped when the new model has none, and the
position embeddings resampled to the new patch grid. Inference and export
(`restore_model`) take them as they are, checked name by name and shape by
shape against the model the run's config describes.
"""
import contextlib
import json
import os
import re
import zipfile

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from vit_jax import models, tree_util

CHECKPOINT_SUBDIR = "checkpoints"
CONFIG_FILE = "config.json"
POSEMB = "Transformer/posembed_input/pos_embedding"
HEAD_PREFIXES = ("head/",)
RESAMPLE_METHODS = {"bilinear": "linear", "bicubic": "cubic"}


# ---------------------------------------------------------------------------
# Orbax checkpoints of the train state.
# ---------------------------------------------------------------------------
def make_manager(workdir, *, max_to_keep=None, read_only=False):
  """The CheckpointManager of ``workdir``; saves are asynchronous.

  A step's directory is created before `save` returns: where it cannot be
  (a read-only or full disk) the error is raised there, whereas orbax's
  asynchronous creation would leave its writer threads waiting 5 minutes for
  a directory that never comes, and the process with them.
  """
  return _manager(os.path.abspath(os.path.join(workdir, CHECKPOINT_SUBDIR)),
                  max_to_keep=max_to_keep, read_only=read_only)


def _manager(checkpoint_dir, *, max_to_keep=None, read_only=False):
  """The CheckpointManager of a directory of steps (see `make_manager`)."""
  return ocp.CheckpointManager(
      checkpoint_dir,
      item_handlers={"state": ocp.StandardCheckpointHandler(),
                     "progress": ocp.JsonCheckpointHandler()},
      options=ocp.CheckpointManagerOptions(
          max_to_keep=max_to_keep, read_only=read_only,
          create=not read_only,
          async_options=ocp.AsyncOptions(create_directories_asynchronously=False)))


class SaveError(RuntimeError):
  """A checkpoint could not be written (disk full, read-only directory)."""


# Fields of a run's config that fix the shapes of its train state: a workdir
# cannot resume under another value (`check_workdir`). The other `model`
# fields (dropout, remat and its policy, compute dtype, attention and
# LayerNorm kernels, the head's initial bias) leave the shapes as they are.
STATE_DEFINING_FIELDS = ("variant", "image_size", "data.num_classes", "optim.name")
# Fields whose value may change on resume, but not between zero and non-zero:
# that adds or removes a part of the state (`steps.initial_state`,
# `optim.make_optimizer`).
STATE_SWITCHING_FIELDS = ("ema_decay", "optim.weight_decay", "optim.grad_clip_norm")
SHAPELESS_MODEL_FIELDS = ("dropout_rate", "attention_dropout_rate", "remat", "remat_policy",
                          "dtype", "attention_implementation", "layer_norm_implementation",
                          "dense_implementation", "head_bias_init")


@contextlib.contextmanager
def _reported_write_errors(manager, on_error):
  """Turns a failed write into one clear line; stops or logs by ``on_error``.

  The previous checkpoint stays committed either way: orbax renames a step's
  directory into place only once every file of it is written.
  """
  try:
    yield
  except OSError as e:
    message = (f"could not write a checkpoint in {manager.directory}: {e}; "
               f"the last committed checkpoint is step {manager.latest_step()}")
    if on_error == "continue":
      logging.error("%s; training goes on (config.on_save_error='continue')",
                    message)
    else:
      raise SaveError(f"{message} (config.on_save_error='stop'; 'continue' "
                      f"trains on without it)") from None


def save(manager, step, state, progress, *, on_error="stop"):
  """Starts an asynchronous save of ``state`` and the JSON ``progress`` at ``step``.

  ``progress`` holds the run's running totals (examples seen, training
  seconds) so that a resumed run's accounting continues them. A failure of
  the previous (asynchronous) save surfaces here, before this one starts.
  """
  wait(manager, on_error=on_error)
  with _reported_write_errors(manager, on_error):
    manager.save(step, force=True, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        progress=ocp.args.JsonSave(progress)))


def wait(manager, *, on_error="stop"):
  """Waits until the save in flight is committed (or has failed, see `save`)."""
  with _reported_write_errors(manager, on_error):
    manager.wait_until_finished()


def check_workdir(workdir, config):
  """Refuses to resume a workdir whose run trained another model.

  Compares the fields that fix the train state's shapes with the config the
  workdir's run wrote, before anything is compiled or restored, and names the
  first field that differs.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  checkpoints = os.path.join(workdir, CHECKPOINT_SUBDIR)
  if not (os.path.exists(path) and os.path.isdir(checkpoints)
          and any(name.isdigit() for name in os.listdir(checkpoints))):
    return  # nothing committed to resume
  try:
    saved = read_config(path)
  except ValueError as e:
    raise ValueError(f"{path} is not a readable run config: {e}") from None
  fields = list(STATE_DEFINING_FIELDS) + [
      f"model.{key}" for key in sorted(config.model.keys())
      if key not in SHAPELESS_MODEL_FIELDS]
  new_workdir = (f"or start a new workdir (with config.init={workdir!r} to "
                 f"fine-tune from it)")
  for field in fields:
    old, new = _field(saved, field), _field(config, field)
    if old != new:
      raise ValueError(f"{path}: the run in {workdir} has {field}={old!r}, this "
                       f"config {field}={new!r}; resume it with the same model, "
                       f"{new_workdir}")
  for field in STATE_SWITCHING_FIELDS:
    old, new = _field(saved, field), _field(config, field)
    if bool(old) != bool(new):
      raise ValueError(f"{path}: the run in {workdir} has {field}={old!r}, this "
                       f"config {field}={new!r}; switching it on or off changes "
                       f"the train state: resume it with {field} "
                       f"{'non-zero' if old else '0'}, {new_workdir}")


def _field(config, dotted):
  node = config
  for part in dotted.split("."):
    if part not in node:
      return None
    node = node[part]
  return node


def restore(manager, step, abstract_state):
  """Restores ``step`` into the shardings that ``abstract_state`` carries.

  The target decides the layout, so a checkpoint written on another mesh or
  device count restores onto the current one. Returns {'state', 'progress'}.
  A checkpoint of another model, or a truncated one, is a one-line error
  naming its directory.
  """
  step_dir = os.path.join(str(manager.directory), str(step))
  try:
    saved = manager.item_metadata(step)["state"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{step_dir} is not a readable checkpoint (truncated "
                     f"or corrupt?): {_first_line(e)}") from None
  check_params(saved["params"], abstract_state["params"], source=step_dir)
  try:
    return manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        progress=ocp.args.JsonRestore()))
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{step_dir} is not a readable checkpoint of this run's "
                     f"train state (truncated or corrupt?): "
                     f"{_first_line(e)}") from None


def _first_line(error):
  """The gist of a storage library's error, which may run to many lines."""
  lines = str(error).strip().splitlines() or [type(error).__name__]
  return lines[0][:300]


def _restore_on_host(checkpoint_dir, step):
  """Every array of a step, on one local device, whatever mesh wrote it."""
  manager = _manager(checkpoint_dir, read_only=True)
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


def npz_arrays(params):
  """The flat arrays `save_npz` writes for ``params``.

  bfloat16 parameters (``model.param_dtype``) are widened to float32,
  exactly: numpy has no bfloat16, so other readers (numpy, torch, timm, the
  original vision_transformer loader) would get raw 2-byte records, and the
  published files are float32.
  """
  return {name: np.asarray(value, np.float32) if value.dtype == jnp.bfloat16
          else np.asarray(value) for name, value in flatten(params).items()}


def save_npz(params, path):
  """Writes ``params`` as a published-layout .npz (flat '/'-joined names)."""
  with open(path, "wb") as f:
    np.savez(f, **npz_arrays(params))


# Other files of the same ViT name its tensors differently; `load_npz` maps
# them onto the published names. The original vision_transformer code wrote
# flax.optim checkpoints with the parameters under 'opt/target/' (beside the
# optimizer state); big_vision writes them under 'params/'.
_PARAMS_PREFIXES = ("opt/target/", "params/")
# Pre-Linen flax, whose names the published files keep, numbered a block's
# submodules in creation order across classes; Linen numbers each class
# separately, so the Linen port of vision_transformer and big_vision write the
# names on the left for the same four submodules.
_LINEN_BLOCK_NAMES = {"MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
                      "LayerNorm_1": "LayerNorm_2", "MlpBlock_0": "MlpBlock_3"}
_LINEN_BLOCK_RE = re.compile(
    rf"^(Transformer/encoderblock_\d+/)({'|'.join(_LINEN_BLOCK_NAMES)})/")
# big_vision keeps the position embeddings at the top level, and with
# `scan=True` stacks the blocks' parameters along a leading layer axis.
_BIG_VISION_POSEMB = "pos_embedding"
_SCANNED_BLOCK = "Transformer/encoderblock/"


def _published_names(flat):
  """Renames the tensors of an older or foreign layout to the published names."""
  for prefix in _PARAMS_PREFIXES:
    if prefix + "embedding/kernel" in flat:
      flat = {n[len(prefix):]: v for n, v in flat.items() if n.startswith(prefix)}
  renamed = {}
  for name, value in flat.items():
    if name.startswith(_SCANNED_BLOCK):
      rest = name[len(_SCANNED_BLOCK):]
      renamed.update({f"Transformer/encoderblock_{i}/{rest}": layer
                      for i, layer in enumerate(value)})
    elif name == _BIG_VISION_POSEMB:
      renamed[POSEMB] = value
    else:
      renamed[name] = value
  return {_LINEN_BLOCK_RE.sub(lambda m: m[1] + _LINEN_BLOCK_NAMES[m[2]] + "/", n): v
          for n, v in renamed.items()}


def load_npz(path):
  """Reads a published-layout .npz into a nested dict of numpy arrays.

  Files are read without unpickling (which can run arbitrary code): a file
  holding Python objects is refused, as is a truncated or corrupt one, each
  with a one-line error naming the file.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"checkpoint file {path} does not exist")
  corrupt = f"{path} is not a readable .npz file (truncated or corrupt?)"
  unreadable = (ValueError, OSError, EOFError, zipfile.BadZipFile)
  try:
    data = np.load(path, allow_pickle=False)
  except unreadable as e:
    if "pickle" in str(e):  # numpy's guess for whatever is neither zip nor .npy
      raise ValueError(
          f"{path} is neither an .npz nor an .npy file, and is not read as the "
          f"pickle it may be (unpickling can run arbitrary code)") from None
    raise ValueError(f"{corrupt}: {e}") from None
  if not isinstance(data, np.lib.npyio.NpzFile):
    raise ValueError(f"{path} holds one unnamed array (.npy), not the named "
                     f"parameters of an .npz")
  flat = {}
  with data:
    for name in data.files:
      try:
        flat[name] = data[name]
      except unreadable as e:
        if "allow_pickle" in str(e):
          raise ValueError(
              f"{path}: array {name!r} holds pickled Python objects, which are "
              f"not loaded (unpickling can run arbitrary code); a parameter "
              f"file holds numeric arrays only") from None
        raise ValueError(f"{corrupt}: array {name!r}: {e}") from None
  return unflatten(_published_names(flat))


# ---------------------------------------------------------------------------
# Reading parameters from any of the places above, and checking them.
# ---------------------------------------------------------------------------
def read_params(path, *, step=None):
  """Parameters from a .npz, a run's workdir, or one checkpoint step dir.

  A workdir gives its latest step, or ``step``. A run that kept an EMA of its
  parameters is read through the EMA, which is what its evaluation reported.
  """
  if step is not None and not os.path.isdir(os.path.join(path, CHECKPOINT_SUBDIR)):
    raise ValueError(f"a step ({step}) picks a checkpoint of a workdir, and "
                     f"{path!r} is no workdir")
  if path.endswith(".npz"):
    return load_npz(path)
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, CHECKPOINT_SUBDIR)):
    checkpoint_dir = os.path.join(path, CHECKPOINT_SUBDIR)
    steps = _manager(checkpoint_dir, read_only=True).all_steps()
    if not steps:
      raise FileNotFoundError(f"no committed checkpoint in {checkpoint_dir}")
    if step is None:
      step = max(steps)
    elif step not in steps:
      raise FileNotFoundError(f"no committed checkpoint of step {step} in "
                              f"{checkpoint_dir}; it has steps {sorted(steps)}")
  elif os.path.basename(path).isdigit() and os.path.isdir(path):
    checkpoint_dir, step = os.path.dirname(path), int(os.path.basename(path))
  else:
    raise FileNotFoundError(
        f"{path!r} is neither a .npz file, a workdir with a "
        f"'{CHECKPOINT_SUBDIR}' folder, nor a checkpoint step directory")
  state = _restore_on_host(checkpoint_dir, step)
  params = state.get("ema_params") or state["params"]
  return jax.tree.map(np.asarray, params)


def check_params(loaded, expected, *, source):
  """Raises unless ``loaded`` has exactly the parameter names and shapes of ``expected``.

  ``expected`` may be abstract (``jax.eval_shape`` of the model's init). The
  error names the first parameter, in name order, that is missing, extra or
  of another shape, with both shapes: a file written for another variant,
  width or depth is recognised from that one line.
  """
  have = {name: tuple(leaf.shape) for name, leaf in tree_util.flatten_named(loaded)}
  want = {name: tuple(leaf.shape) for name, leaf in tree_util.flatten_named(expected)}
  problems = []
  for name in sorted(have.keys() | want.keys()):
    if name not in have:
      problems.append(f"parameter {name} of the model is missing in the checkpoint")
    elif name not in want:
      problems.append(f"parameter {name} of the checkpoint is not in the model")
    elif have[name] != want[name]:
      problems.append(f"parameter {name} has shape {have[name]} in the "
                      f"checkpoint but {want[name]} in the model")
  if problems:
    raise ValueError(f"{source}: {problems[0]} ({len(problems)} mismatching "
                     f"in all)")


# ---------------------------------------------------------------------------
# Fine-tuning: fitting pre-trained parameters to a new model.
# ---------------------------------------------------------------------------
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
  shape (see `check_params`).
  """
  loaded = flatten(read_params(path))
  fresh = flatten(init_params)
  keep_pre_logits = any(name.startswith("pre_logits/") for name in fresh)
  fitted = {name: value for name, value in loaded.items()
            if not name.startswith(HEAD_PREFIXES)
            and (keep_pre_logits or not name.startswith("pre_logits/"))}
  fitted.update({name: value for name, value in fresh.items()
                 if name.startswith(HEAD_PREFIXES)})
  if POSEMB in fitted:
    fitted[POSEMB] = resample_posemb(fitted[POSEMB], new_grid,
                                     num_prefix_tokens=num_prefix_tokens,
                                     method=posemb_method)
  check_params(fitted, fresh, source=path)
  return unflatten({name: value.astype(fresh[name].dtype, copy=False)
                    for name, value in fitted.items()})


# ---------------------------------------------------------------------------
# Inference and export: a finished run's model and parameters, as they are.
# ---------------------------------------------------------------------------
def read_config(path):
  """The resolved config a run wrote, from its workdir or the .json itself."""
  if os.path.isdir(path):
    path = os.path.join(path, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: is it a run's workdir, "
                            f"or its {CONFIG_FILE}?")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def restore_model(config, path, *, step=None):
  """The model ``config`` describes and the parameters at ``path``, for inference.

  ``path`` is anything `read_params` reads. Unlike `load_pretrained`, nothing
  is adapted: every parameter must match the model in name and shape.
  """
  model = models.get_model(config.variant, num_classes=config.data.num_classes,
                           **config.model)
  images = jnp.zeros((1, config.image_size, config.image_size, 3))
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.key(0), images, train=False)["params"])
  params = read_params(path, step=step)
  check_params(params, abstract, source=path)
  return model, params
