"""Whether a workdir's run can resume under a given config."""
import os

from vit_jax.train import workdir_files
from vit_jax.train.workdir_files import CHECKPOINT_SUBDIR, CONFIG_FILE


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
    saved = workdir_files.read_config(path)
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
