"""Whether a workdir's checkpoint can resume under a given config.

Decided from the checkpoint's own metadata, the name, shape and dtype of
every array it holds, against the train state that the config builds: the
parameters, their average, the optimizer's state and the run's counters.
Whatever a config field changes in that state shows there, so adding a field
needs nothing listed here; a field that leaves the state as it is (dropout,
remat, the compute dtype, the kernels) may change between a run and its
resumption. So may ``model.scan``: the checkpoint's blocks are compared in
the layout of the state, as `checkpoints.restore` converts them; except
under Adafactor, whose factored second moment of a stacked array is not
that of its layers (`_check_scan_switch`).
"""
import os

from vit_jax import tree_util
from vit_jax.models import layer_stack
from vit_jax.train import checkpoints
from vit_jax.train.workdir_files import CONFIG_FILE


def check_resumable(manager, step, abstract_state, *, workdir):
  """Refuses to resume ``step`` into a train state of other arrays.

  ``abstract_state`` is the state the config builds (`jax.eval_shape` of
  `steps.initial_state`). Only the checkpoint's metadata is read, so the
  loop checks before it compiles, restores or writes anything: a refused
  resume leaves ``workdir`` as it was. The one-line error names the first
  array, parameters first, that is missing, extra, or of another shape or
  dtype.
  """
  source = checkpoints.step_dir(manager, step)
  saved = checkpoints.saved_arrays(manager, step)
  _check_scan_switch(saved, abstract_state, source=source, workdir=workdir)
  saved = layer_stack.like(saved, abstract_state)
  parts = (("parameter", saved.get("params", {}), abstract_state["params"]),
           ("array", _without_params(saved), _without_params(abstract_state)))
  try:
    for what, have, want in parts:
      tree_util.check_same_arrays(have, want, source=source, what=what)
    for what, have, want in parts:
      _check_same_dtypes(have, want, source=source, what=what)
  except ValueError as e:
    raise ValueError(
        f"{e}; resume it with the model and optimizer of "
        f"{os.path.join(workdir, CONFIG_FILE)}, or start a new workdir (with "
        f"config.init={workdir!r} to fine-tune from it)") from None


def _check_scan_switch(saved, abstract_state, *, source, workdir):
  """Refuses to switch ``model.scan`` under Adafactor.

  Adafactor keeps a second moment whole or factored by an array's shape
  (`optim._adafactor`), so a stack of ``num_layers`` layers (a scanned
  model's) keeps other statistics, of other shapes, than the layers
  themselves: neither converts to the other.
  """
  was_stacked = layer_stack.is_stacked(saved.get("params", {}))
  if was_stacked == layer_stack.is_stacked(abstract_state["params"]):
    return
  if any("v_row" in name.split("/")
         for name, _ in tree_util.flatten_named(saved.get("opt_state", {}))):
    raise ValueError(
        f"{source} was written with model.scan={was_stacked}, and Adafactor's "
        f"factored second moments of stacked layers are not those of separate "
        f"ones; resume it with --config.model.scan={was_stacked} (as "
        f"{os.path.join(workdir, CONFIG_FILE)} says)")


def check_length(step, total_steps, *, workdir):
  """Refuses to resume a run whose checkpoint lies past the run's new length.

  Evaluating it would replace the run's summary with one that reports a
  step beyond the config's length, and its config.json with the shorter
  config. The run stays as it was; the error says how to get what was meant.
  """
  if step > total_steps:
    raise ValueError(
        f"{workdir} holds a checkpoint at step {step}, past this config's "
        f"{total_steps} steps (config.total_steps or config.total_epochs): the "
        f"run is longer than that already. Resume it with its own length "
        f"({os.path.join(workdir, CONFIG_FILE)}), evaluate it with python -m "
        f"vit_jax.evaluate --workdir={workdir}, or start a new workdir")


def _without_params(state):
  return {key: state[key] for key in state.keys() if key != "params"}


def _check_same_dtypes(saved, expected, *, source, what):
  """Raises unless each array of ``saved`` has the dtype of its namesake."""
  wanted = dict(tree_util.flatten_named(expected))
  for name, leaf in tree_util.flatten_named(saved):
    if leaf.dtype != wanted[name].dtype:
      raise ValueError(f"{source}: {what} {name} is {leaf.dtype} in the "
                       f"checkpoint but {wanted[name].dtype} in the model")
