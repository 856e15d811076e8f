"""Pre-trained parameters: reading them from anywhere, fitting them to a new model.

Fine-tuning reads parameters from any of: a workdir (its latest step), one
step directory, a ``.npz`` in the layout of the published ViT checkpoints
(`npz`), a timm state dict (``.safetensors``, ``.pth``, ``.bin``; timm's
config.json beside it when there is one) or a timm hub directory
(`timm_format`), and a Hugging Face ViT directory (`hf_format`).
`load_pretrained` then fits them to the new model: head re-initialised,
pre_logits dropped when the new model has none, and the position embeddings
resampled to the new patch grid (`posemb`).

`read_params` gives the published layout, one subtree per encoder block,
whatever wrote the file; `load_pretrained` hands back the new model's own
layout (stacked blocks for a scanned model, `layer_stack`).
"""
import dataclasses
import os
import re
from typing import Any

import jax.numpy as jnp
import numpy as np
from absl import logging

from vit_jax import tree_util
from vit_jax.models import hf_format, layer_stack, npz, posemb, timm_format
from vit_jax.train import checkpoints
from vit_jax.train.workdir_files import CHECKPOINT_SUBDIR

# The classifiers that fine-tuning replaces: the ViT's and hybrid's, and the
# 1x1 conv of a BiT ResNet.
HEAD_PREFIXES = ("head/", "head_dist/", "resnet/head/")
# 'google/vit-base-patch16-224', 'hf-hub:timm/vit_base_patch16_224.augreg_in21k'.
_HUB_NAME = re.compile(r"(?:hf[-_]hub:)?([\w.-]+/[\w.-]+)")
_QUERY_KERNEL = "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"

ACCEPTED = (f"a .npz file; a timm or Hugging Face state dict "
            f"({', '.join(timm_format.STATE_DICT_SUFFIXES)}); a Hugging Face ViT or "
            f"timm directory (with {timm_format.CONFIG_FILE}); a workdir with a "
            f"'{CHECKPOINT_SUBDIR}' folder; a checkpoint step directory")


@dataclasses.dataclass(frozen=True)
class Located:
  """What `read_params` reads: ``kind`` and where.

  kind: 'npz', 'timm' (a state-dict file or hub directory), 'hf' (a model
  directory, or its weights file) or 'orbax' (``manager`` and ``step``).
  """
  kind: str
  path: str
  manager: Any = None
  step: int | None = None


def read_params(path, *, step=None, num_heads=None):
  """Parameters from any checkpoint `locate` finds, as a nested dict of arrays.

  Blocks come in the published layout, however the run that wrote them kept
  them.

  A workdir gives its latest step, or ``step``. A run that kept an EMA of its
  parameters is read through the EMA, which is what its evaluation reported.
  ``num_heads`` is for a timm state dict without a config.json, whose shapes
  do not tell the heads.
  """
  found = locate(path, step=step)
  if found.kind == "npz":
    params = npz.load_npz(found.path)
  elif found.kind == "timm":
    params = timm_format.load(found.path, num_heads=num_heads)
  elif found.kind == "hf":
    params = hf_format.load(found.path)
  else:
    params = layer_stack.unstack(
        checkpoints.restore_params_on_host(found.manager, found.step))
  _check_finite(params, path)
  return params


def _check_finite(params, path):
  """Refuses parameters with a NaN or an infinity, naming the first such
  tensor: fine-tuned, the run would stop at its first step blaming its own
  loss; used for predictions, every score would be NaN."""
  for name, value in tree_util.flatten_named(params):
    value = np.asarray(value)
    if jnp.issubdtype(value.dtype, jnp.inexact):  # bfloat16 too
      bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
      if bad:
        raise ValueError(f"{path}: parameter {name} holds {bad} NaN or infinite "
                         f"value(s) of {np.size(value)}; a checkpoint of a run that "
                         f"diverged? Take an earlier step or another file")


def _model_directory_kind(path):
  """'hf' or 'timm' for a directory with a model config.json, else None."""
  config_path = os.path.join(path, timm_format.CONFIG_FILE)
  if not os.path.isfile(config_path):
    return None
  try:
    config = timm_format.read_json(config_path)
  except ValueError:  # not JSON: not a model directory
    return None
  if hf_format.is_hf_config(config):
    if config["model_type"] not in hf_format.MODEL_TYPES:
      raise ValueError(f"{path}: a Hugging Face model of model_type "
                       f"{config['model_type']!r}; this ViT reads model_type "
                       f"{', '.join(map(repr, hf_format.MODEL_TYPES))}")
    return "hf"
  return "timm" if timm_format.is_timm_config(config) else None


def locate(path, *, step=None):
  """Where and what `read_params` reads at ``path``: a `Located`.

  Cheap (paths, config.json and checkpoint metadata only), so a run checks
  its ``config.init`` before anything heavy; a path that holds no parameters
  is an error naming it and the kinds accepted.
  """
  if step is not None and not os.path.isdir(os.path.join(path, CHECKPOINT_SUBDIR)):
    raise ValueError(f"a step ({step}) picks a checkpoint of a workdir, and "
                     f"{path!r} is no workdir")
  given = path
  if path.endswith(".npz"):
    if not os.path.exists(path):
      raise FileNotFoundError(f"checkpoint file {path} does not exist")
    return Located("npz", path)
  if path.endswith(timm_format.STATE_DICT_SUFFIXES):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"checkpoint file {path} does not exist")
    # A Hugging Face directory's weights name the directory's config.json.
    beside = os.path.dirname(os.path.abspath(path))
    return Located(_model_directory_kind(beside) or "timm", path)
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
    return Located("orbax", path, manager, step)
  if os.path.basename(path).isdigit() and os.path.isdir(path):
    return Located("orbax", path,
                   checkpoints.manager_at(os.path.dirname(path), read_only=True),
                   int(os.path.basename(path)))
  kind = os.path.isdir(path) and _model_directory_kind(path)
  if kind:
    timm_format.weights_file(path)  # raises: a config without weights
    return Located(kind, path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path!r} does not exist{_hub_name_hint(given)}; "
                            f"a checkpoint is one of: {ACCEPTED}")
  raise FileNotFoundError(f"{path!r} is none of the checkpoints accepted: {ACCEPTED}")


def _library_directory(path):
  """('timm' or 'hf', directory) where ``path`` is a timm or Hugging Face model
  directory, or a state dict with one around it; else None.

  Cheap, without `locate`, which opens a workdir's checkpoints: only such a
  directory states how its model was fed and computes.
  """
  if os.path.isdir(path):
    directory = path
    kind = _model_directory_kind(directory)
  elif path.endswith(timm_format.STATE_DICT_SUFFIXES) and os.path.isfile(path):
    directory = os.path.dirname(os.path.abspath(path))
    kind = _model_directory_kind(directory) or "timm"
  else:
    return None
  return (kind, directory) if kind else None


def _library_config(kind, directory, name):
  """The JSON file ``name`` of a `_library_directory`, or None where it is
  missing or, beside a timm state dict, someone else's."""
  config_path = os.path.join(directory, name)
  if not os.path.isfile(config_path):
    return None
  config = timm_format.read_json(config_path)
  if not isinstance(config, dict) or (kind == "timm"
                                      and not timm_format.is_timm_config(config)):
    return None
  return config


def stated_normalisation(path):
  """(mean, std) of [0, 1] pixels that a timm or Hugging Face checkpoint at
  ``path`` states its model was fed (timm's pretrained_cfg, transformers'
  preprocessor_config.json), or None where it states none."""
  found = _library_directory(path)
  if found is None:
    return None
  kind, directory = found
  if kind == "hf":
    config = _library_config(kind, directory, hf_format.PREPROCESSOR_FILE)
    keys = ("image_mean", "image_std")
  else:
    config = _library_config(kind, directory, timm_format.CONFIG_FILE)
    keys = ("mean", "std")
  if config is None:
    return None
  config = config.get("pretrained_cfg") or config
  if config.get("do_normalize") is False or not all(k in config for k in keys):
    return None
  stated = tuple(timm_format.per_channel(config[k]) for k in keys)
  return stated if all(len(values) == 3 for values in stated) else None


def stated_function(path):
  """What the config.json of a timm or Hugging Face checkpoint at ``path`` says
  its model computes, where ours has a setting for it: {config.model field:
  value} (`timm_format.stated_function`); a timm state dict without one,
  timm's defaults. {} for our own checkpoints."""
  return _stated_function(path)[0]


_AS_STATED = "by its config.json"
# LayerNorm epsilons below this are all far below trained activations' variance.
_NEGLIGIBLE_EPSILON = 1e-5


def _stated_function(path):
  """`stated_function`, and what says so."""
  found = _library_directory(path)
  if found is None:
    return {}, None
  config = _library_config(*found, timm_format.CONFIG_FILE)
  if found[0] == "hf":
    return (hf_format.stated_function(config, source=path), _AS_STATED) if config else ({}, None)
  if config is None:
    return (timm_format.stated_function({}, source=path),
            "timm's default, with no config.json beside it")
  return timm_format.stated_function(config, source=path), _AS_STATED


_GELU_NAMES = {"exact": "exact (erf)", "tanh": "tanh-approximated", "quick": "quick"}


def check_function(path, model):
  """Logs where the checkpoint at ``path`` computes otherwise than ``model``,
  naming the setting that computes the checkpoint's function.

  Another GELU is a warning: the tanh and exact forms differ by at most 5e-4
  at any input, which moved random timm ViTs' logits by 2e-4 to 4e-4 of their
  magnitude (docs/checkpoints.md); fine-tuning adapts, but a model evaluated
  as it is computes another function than the one its library does. Another
  LayerNorm epsilon is a note where either is `_NEGLIGIBLE_EPSILON` or more
  (CLIP's 1e-5 against our 1e-6); Hugging Face's ViTs state 1e-12, a
  difference far below float32's resolution, which goes unmentioned.
  Returns whether the two agree (within that).
  """
  stated, where = _stated_function(path)
  agree = True
  for field, value in stated.items():
    ours = getattr(model, field, None)
    if ours is None or ours == value or (field == "layer_norm_epsilon"
                                         and max(ours, value) < _NEGLIGIBLE_EPSILON):
      continue
    agree = False
    if field == "gelu":
      logging.warning("%s computes the %s GELU, %s, and the model the %s one "
                      "(model.gelu=%s): set --config.model.gelu=%s to compute the "
                      "checkpoint's function.", path, _GELU_NAMES[value], where,
                      _GELU_NAMES[ours], ours, value)
    else:
      logging.info("%s normalises with a LayerNorm epsilon of %g, %s, and the model with "
                   "%g: set --config.model.%s=%g to compute the checkpoint's function.",
                   path, value, where, ours, field, value)
  return agree


def note_normalisation(path):
  """Logs a checkpoint's stated pixel normalisation where it is not [-1, 1]'s.

  Our configs feed [-1, 1] (mean = std = 0.5); many PyTorch-trained
  checkpoints were fed ImageNet's per-channel mean and std instead, which
  `vgg_value_range` gives. Fine-tuning adapts to either, but evaluating such
  a checkpoint as it is needs its own.
  """
  stated = stated_normalisation(path)
  if stated is None or np.allclose(stated, 0.5):
    return
  logging.info("%s was trained on pixels normalised with %s (of [0, 1] pixels); %s in "
               "config.pp.train and config.pp.eval feeds it the same, where "
               "value_range(-1, 1) feeds mean = std = 0.5.", path,
               describe_normalisation(*stated), vgg_value_range_op(*stated))


def _rounded(values):
  return tuple(round(v, 4) for v in values)


def describe_normalisation(mean, std):
  """'mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)'."""
  return f"mean={_rounded(mean)}, std={_rounded(std)}"


def vgg_value_range_op(mean, std):
  """The preprocessing op that feeds a model pixels normalised with ``mean``, ``std``."""
  return f"vgg_value_range({describe_normalisation(mean, std)})"


def _hub_name_hint(given):
  """For a missing path that reads like 'org/model': hub names are not downloaded.

  A Hugging Face or timm user writes the hub name that from_pretrained and
  create_model accept; runs here read local files only (hosts may have no
  network), so the error says how to get the files.
  """
  match = _HUB_NAME.fullmatch(given)
  if not match:
    return ""
  return (f" (a Hugging Face or timm hub name is not downloaded: fetch it with "
          f"`hf download {match[1]} --local-dir DIR` and pass DIR)")


def _num_heads(params):
  """The heads of a ViT's fresh parameters (the query kernel is (D, heads, Dh))."""
  query = params.get(_QUERY_KERNEL)
  return query.shape[1] if query is not None and query.ndim == 3 else None


# Parts of a ViT a config switches, by a parameter name's ending, and the
# settings that switch them on and off: a checkpoint with one the model
# lacks, or the reverse, names the setting. (Attention pooling is off with
# the checkpoint's own classifier.)
_SWITCHED_PARTS = (
    ("MAPHead_0/probe", "attention pooling", "model.classifier=map", None),
    ("/query_ln/scale", "query/key normalisation", "model.qk_norm=True",
     "model.qk_norm=False"),
    # Any initial value: the checkpoint's scales replace it.
    ("/LayerScale_0/scale", "layer scale", "model.layer_scale_init=1e-5",
     "model.layer_scale_init=None"),
    ("Transformer/pre_norm/scale", "a LayerNorm before the blocks", "model.pre_norm=True",
     "model.pre_norm=False"),
    ("fc_norm/scale", "a LayerNorm after pooling", "model.fc_norm=True",
     "model.fc_norm=False"),
    ("dist", "a distillation token", "model.distillation_token=True",
     "model.distillation_token=False"),
)


def _check_switched_parts(loaded, fresh, source):
  """A one-line error naming the config setting where ``loaded`` (a
  checkpoint) and ``fresh`` (the model) differ in a part a setting switches."""
  for ending, what, on, off in _SWITCHED_PARTS:
    in_checkpoint, in_model = (any(name.endswith(ending) for name in flat)
                               for flat in (loaded, fresh))
    if in_checkpoint and not in_model:
      raise ValueError(f"{source}: the checkpoint has {what}, the model not: "
                       f"fine-tune it with --config.{on}")
    if in_model and not in_checkpoint:
      off = off or f"model.classifier={'token' if 'cls' in loaded else 'gap'}"
      raise ValueError(f"{source}: the model has {what}, the checkpoint none: "
                       f"fine-tune it with --config.{off}")
  in_checkpoint, in_model = (flat["registers"].shape[1] if "registers" in flat else 0
                             for flat in (loaded, fresh))
  if in_checkpoint != in_model:
    raise ValueError(f"{source}: the checkpoint has {in_checkpoint} register tokens, the "
                     f"model {in_model}: fine-tune it with "
                     f"--config.model.num_registers={in_checkpoint}")


def fresh_heads(params):
  """The tensors of fresh ``params`` that `load_pretrained` keeps: the heads
  for the new classes, by published name. Of the rest of a fresh tree only
  the names, shapes and dtypes are read."""
  return {name: value for name, value in tree_util.flatten_named(params)
          if name.startswith(HEAD_PREFIXES)}


def load_pretrained(path, init_params, *, new_grid, num_prefix_tokens,
                    posemb_method=posemb.DEFAULT_METHOD, model=None):
  """Fits the parameters at ``path`` to a model whose fresh ones are ``init_params``.

  Of ``init_params`` only `fresh_heads` are read for their values, the rest
  for their names, shapes and dtypes. The head keeps its fresh (zero) initialisation for the new classes; a
  pre_logits layer the new model lacks is dropped; the position embeddings
  are resampled to ``new_grid`` by ``posemb_method`` (a name of
  `posemb.RESAMPLE_METHODS`); every other tensor must match in name and
  shape (see `tree_util.check_same_arrays`). ``model``, the new one, is
  checked against what a library's checkpoint states (`check_function`).
  """
  fresh = npz.flatten(init_params)
  note_normalisation(path)
  if model is not None:
    check_function(path, model)
  # A timm state dict without its config.json does not state its heads (no
  # shape does): fine-tuning keeps the architecture, so the new model's are
  # taken, and logged.
  loaded = npz.flatten(read_params(path, num_heads=_num_heads(fresh)))
  _check_switched_parts(loaded, fresh, path)
  keep_pre_logits = any(name.startswith("pre_logits/") for name in fresh)
  fitted = {name: value for name, value in loaded.items()
            if not name.startswith(HEAD_PREFIXES)
            and (keep_pre_logits or not name.startswith("pre_logits/"))}
  fitted.update({name: value for name, value in fresh.items()
                 if name.startswith(HEAD_PREFIXES)})
  # Every other tensor first: a checkpoint of the other classifier ('gap' for
  # 'token', or back) is then named by its class token, rather than by
  # position embeddings whose patch tokens, counted with the wrong prefix,
  # form no grid.
  tree_util.check_same_arrays(*({name: value for name, value in flat.items()
                                 if name != npz.POSEMB} for flat in (fitted, fresh)),
                              source=path)
  if npz.POSEMB in fitted:
    fitted[npz.POSEMB] = posemb.resample_posemb(
        fitted[npz.POSEMB], new_grid, num_prefix_tokens=num_prefix_tokens,
        method=posemb_method)
  tree_util.check_same_arrays(fitted, fresh, source=path)
  return layer_stack.like(npz.unflatten({name: value.astype(fresh[name].dtype, copy=False)
                                         for name, value in fitted.items()}), init_params)
