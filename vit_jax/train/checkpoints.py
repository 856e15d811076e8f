"""Orbax checkpoints of the train state: save, wait, restore.

A run's checkpoints live in ``WORKDIR/checkpoints/<step>/`` and are written by
an orbax ``CheckpointManager``, whose commit marker means a half-written step
is never picked on resume. The train state is the dict that
`steps.initial_state` builds: ``{'step', 'params', 'opt_state',
'skipped_steps', 'first_skipped_step'[, 'ema_params']}``; beside it each step
keeps the JSON ``progress`` of the run's accounting.

A checkpoint keeps the encoder blocks as the run that wrote it did (stacked
with ``model.scan``, one subtree per layer without); `restore` reads either
into either, converting the parameters, their EMA and the optimizer's
moments alike (`vit_jax.models.layer_stack`).
"""
import contextlib
import os
import re

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from vit_jax.models import layer_stack
from vit_jax.train.workdir_files import CHECKPOINT_SUBDIR


def make_manager(workdir, *, max_to_keep=None, read_only=False):
  """The CheckpointManager of ``workdir``; saves are asynchronous.

  A step's directory is created before `save` returns: where it cannot be
  (a read-only or full disk) the error is raised there, whereas orbax's
  asynchronous creation would leave its writer threads waiting 5 minutes for
  a directory that never comes, and the process with them.
  """
  return manager_at(os.path.abspath(os.path.join(workdir, CHECKPOINT_SUBDIR)),
                    max_to_keep=max_to_keep, read_only=read_only)


def manager_at(checkpoint_dir, *, max_to_keep=None, read_only=False):
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


# tensorstore, which writes orbax's arrays, raises a failed write as a
# ValueError of its status, the paths, and the operating system's reason:
# 'RESOURCE_EXHAUSTED: Error writing "params..." in OCDBT database at ...:
# No space left on device [os_error_code='28']' (a full disk; a file past
# the size limit is OUT_OF_RANGE). A remote store's failure has no OS code.
_OS_ERROR_CODE = "[os_error_code="
_TENSORSTORE_WRITE_STATUSES = ("RESOURCE_EXHAUSTED", "PERMISSION_DENIED", "UNAVAILABLE",
                               "DATA_LOSS")


def _write_failure(error):
  """What a failed write says, in a line; None for an error of another kind."""
  if isinstance(error, OSError):
    return str(error)
  text = str(error)
  if isinstance(error, ValueError) and (_OS_ERROR_CODE in text
                                        or text.startswith(_TENSORSTORE_WRITE_STATUSES)):
    status, reason = text.split(":", 1)[0], text.rsplit(": ", 1)[-1]
    return f"{status}: {_first_line(reason)}"
  return None


@contextlib.contextmanager
def _reported_write_errors(manager, on_error, why):
  """Turns a failed write into one clear line; stops or logs by ``on_error``.

  ``why`` it stops or goes on, where not config.on_save_error. The previous
  checkpoint stays committed either way: orbax renames a step's directory
  into place only once every file of it is written.
  """
  try:
    yield
  except (OSError, ValueError) as e:
    failure = _write_failure(e)
    if failure is None:
      raise
    last = manager.latest_step()
    message = (f"could not write a checkpoint in {manager.directory}: {failure}; " + (
        f"the last committed checkpoint is step {last}" if last is not None
        else "no checkpoint is committed yet"))
    if on_error == "continue":
      logging.error("%s; %s", message,
                    why or "training goes on (config.on_save_error='continue')")
    else:
      why = why or "config.on_save_error='stop'; 'continue' trains on without it"
      raise SaveError(f"{message} ({why})") from None


def save(manager, step, state, progress, *, on_error="stop", why=None):
  """Starts an asynchronous save of ``state`` and the JSON ``progress`` at ``step``.

  ``progress`` holds the run's running totals (examples seen, training
  seconds) so that a resumed run's accounting continues them. A failure of
  the previous (asynchronous) save surfaces here, before this one starts.
  ``why``: see `_reported_write_errors`.
  """
  wait(manager, on_error=on_error, why=why)
  with _reported_write_errors(manager, on_error, why):
    manager.save(step, force=True, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        progress=ocp.args.JsonSave(progress)))


def wait(manager, *, on_error="stop", why=None):
  """Waits until the save in flight is committed (or has failed, see `save`)."""
  with _reported_write_errors(manager, on_error, why):
    manager.wait_until_finished()


def step_dir(manager, step):
  """The directory of ``step``: what an error about that checkpoint names."""
  return os.path.join(str(manager.directory), str(step))


def saved_arrays(manager, step):
  """The train state of ``step`` as its metadata describes it, read from no array.

  A tree like the state, of leaves with the ``shape`` and ``dtype`` of each
  saved array (optimizer states as dicts and lists, not their classes); an
  unreadable checkpoint is a one-line error naming its directory.
  """
  try:
    saved = manager.item_metadata(step)["state"]
    return {key: saved[key] for key in saved.keys()}  # orbax's own mapping type, as a dict
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{step_dir(manager, step)} is not a readable checkpoint "
                     f"(truncated or corrupt?): {_first_line(e)}") from None


def restore(manager, step, abstract_state):
  """Restores ``step`` into the shardings that ``abstract_state`` carries.

  The target decides the layout, so a checkpoint written on another mesh or
  device count restores onto the current one, and one written with the
  blocks stacked (or not) restores into a model without (or with) ``scan``:
  it is read in its own layout, sharded as the target's layers are, and
  converted on the devices. Returns {'state', 'progress'}.
  `resume.check_resumable` comes first, as orbax's own error on a state of
  other arrays names none of them; a truncated checkpoint is a one-line
  error naming its directory.
  """
  as_saved = layer_stack.like(abstract_state, saved_arrays(manager, step))
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(as_saved),
        progress=ocp.args.JsonRestore()))
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{step_dir(manager, step)} is not a readable checkpoint "
                     f"of this run's train state (truncated or corrupt?): "
                     f"{_first_line(e)}") from None
  state = restored["state"]
  if as_saved is not abstract_state:
    state = jax.jit(lambda saved: layer_stack.like(saved, abstract_state),
                    out_shardings=jax.tree.map(lambda a: a.sharding, abstract_state))(state)
  return {"state": state, "progress": restored["progress"]}


# tensorstore ends its errors with the JSON spec of the store it opened and
# the C++ source lines, hundreds of characters that say nothing to a user.
_TENSORSTORE_DETAILS = re.compile(r" \[(?:tensorstore_spec|source locations)=.*")


def _first_line(error):
  """The gist of a storage library's error, which may run to many lines."""
  lines = str(error).strip().splitlines() or [type(error).__name__]
  return _TENSORSTORE_DETAILS.sub("", lines[0])[:300]


def read_progress(manager, step):
  """The JSON ``progress`` saved with ``step`` (see `save`), without its arrays."""
  return manager.restore(step, args=ocp.args.Composite(
      progress=ocp.args.JsonRestore()))["progress"]


def restore_params_on_host(manager, step):
  """The parameters of a step that its evaluation used (the EMA, where the
  run kept one), as numpy arrays in host memory, whatever mesh wrote them.

  Only those arrays are read: the optimizer state, twice the parameters
  under Adam, stays on disk, and no accelerator holds any of it, so a model
  that trained split over many devices is read whole on one host.
  """
  saved = saved_arrays(manager, step)
  name = "ema_params" if saved.get("ema_params") else "params"
  wanted = {name: jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), saved[name])}
  as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
  path = os.path.join(step_dir(manager, step), "state")  # the Composite item's directory
  try:
    with ocp.PyTreeCheckpointer() as checkpointer:
      restored = checkpointer.restore(path, args=ocp.args.PyTreeRestore(
          item=wanted, restore_args=as_numpy, partial_restore=True))
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{step_dir(manager, step)} is not a readable checkpoint "
                     f"(truncated or corrupt?): {_first_line(e)}") from None
  return restored[name]
