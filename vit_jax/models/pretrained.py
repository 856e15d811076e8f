"""Pre-trained parameters: reading them from anywhere, fitting them to a new model.

Fine-tuning reads parameters from any of: a workdir (its latest step), one
step directory, or a ``.npz`` in the layout of the published ViT checkpoints
(`npz`). `load_pretrained` then fits them to the new model: head
re-initialised, pre_logits dropped when the new model has none, and the
position embeddings resampled to the new patch grid (`posemb`).
"""
import os

import jax
import numpy as np

from vit_jax import tree_util
from vit_jax.models import npz, posemb
from vit_jax.train import checkpoints
from vit_jax.train.workdir_files import CHECKPOINT_SUBDIR

HEAD_PREFIXES = ("head/",)


def read_params(path, *, step=None):
  """Parameters from a .npz, a run's workdir, or one checkpoint step dir.

  A workdir gives its latest step, or ``step``. A run that kept an EMA of its
  parameters is read through the EMA, which is what its evaluation reported.
  """
  found = locate(path, step=step)
  if isinstance(found, str):
    return npz.load_npz(found)
  state = checkpoints.restore_on_host(*found)
  params = state.get("ema_params") or state["params"]
  return jax.tree.map(np.asarray, params)


def locate(path, *, step=None):
  """What `read_params` reads at ``path``: a .npz path, or (manager, step).

  Cheap (paths and checkpoint metadata only), so a run checks its
  ``config.init`` before anything heavy; a path that holds no parameters is
  an error naming it.
  """
  if step is not None and not os.path.isdir(os.path.join(path, CHECKPOINT_SUBDIR)):
    raise ValueError(f"a step ({step}) picks a checkpoint of a workdir, and "
                     f"{path!r} is no workdir")
  if path.endswith(".npz"):
    if not os.path.exists(path):
      raise FileNotFoundError(f"checkpoint file {path} does not exist")
    return path
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, CHECKPOINT_SUBDIR)):
    checkpoint_dir = os.path.join(path, CHECKPOINT_SUBDIR)
    manager = checkpoints.manager_at(checkpoint_dir, read_only=True)
    steps = manager.all_steps()
    if not steps:
      raise FileNotFoundError(f"no committed checkpoint in {checkpoint_dir}")
    if step is None:
      step = max(steps)
    elif step not in steps:
      raise FileNotFoundError(f"no committed checkpoint of step {step} in "
                              f"{checkpoint_dir}; it has steps {sorted(steps)}")
    return manager, step
  if os.path.basename(path).isdigit() and os.path.isdir(path):
    return checkpoints.manager_at(os.path.dirname(path), read_only=True), int(
        os.path.basename(path))
  raise FileNotFoundError(
      f"{path!r} is neither a .npz file, a workdir with a "
      f"'{CHECKPOINT_SUBDIR}' folder, nor a checkpoint step directory")


def load_pretrained(path, init_params, *, new_grid, num_prefix_tokens,
                    posemb_method="bilinear"):
  """Fits the parameters at ``path`` to a model whose fresh ones are ``init_params``.

  The head keeps its fresh (zero) initialisation for the new classes; a
  pre_logits layer the new model lacks is dropped; the position embeddings
  are resampled to ``new_grid``; every other tensor must match in name and
  shape (see `tree_util.check_same_arrays`).
  """
  loaded = npz.flatten(read_params(path))
  fresh = npz.flatten(init_params)
  keep_pre_logits = any(name.startswith("pre_logits/") for name in fresh)
  fitted = {name: value for name, value in loaded.items()
            if not name.startswith(HEAD_PREFIXES)
            and (keep_pre_logits or not name.startswith("pre_logits/"))}
  fitted.update({name: value for name, value in fresh.items()
                 if name.startswith(HEAD_PREFIXES)})
  if npz.POSEMB in fitted:
    fitted[npz.POSEMB] = posemb.resample_posemb(
        fitted[npz.POSEMB], new_grid, num_prefix_tokens=num_prefix_tokens,
        method=posemb_method)
  tree_util.check_same_arrays(fitted, fresh, source=path)
  return npz.unflatten({name: value.astype(fresh[name].dtype, copy=False)
                       for name, value in fitted.items()})
