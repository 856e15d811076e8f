"""The published layout of ViT parameters: flat '/'-joined names in an .npz.

`save_npz` writes it; `load_npz` reads it, and renames the tensors of the
other layouts of the same model (flax.optim and big_vision checkpoints, Linen
numbering, scanned blocks) to the published names on the way. `flatten`,
which every writer goes through, gives a scanned model's stacked blocks
their published per-layer names (`layer_stack`).
"""
import os
import re
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import tree_util
from vit_jax.models import layer_stack

POSEMB = "Transformer/posembed_input/pos_embedding"


def flatten(params):
  """{'a': {'b': x}} -> {'a/b': np.asarray(x)}, stacked blocks unstacked.

  The layers of stacked blocks are views of the one host copy.
  """
  host = layer_stack.unstack(jax.tree.map(np.asarray, params))
  return dict(tree_util.flatten_named(host))


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
    rf"^(Transformer/encoderblock(?:_\d+)?/)({'|'.join(_LINEN_BLOCK_NAMES)})/")
# Pre-Linen flax (before 0.3.6) made GroupNorm's scale and bias of shape
# (1, 1, 1, C), and the published hybrids' stems keep that shape
# (vision_transformer's R50+ViT-B_16, AugReg's R+Ti/16, R26+S/32, R50+L/32);
# vision_transformer's and big_vision's loaders squeeze them, as this one does.
_STEM_GROUP_NORM_RE = re.compile(r"(^|/)gn(\d+|_root|_proj)/(scale|bias)$")
# big_vision keeps the position embeddings at the top level (and with
# `scan=True` stacks the blocks, which `layer_stack.unstack` undoes).
_BIG_VISION_POSEMB = "pos_embedding"


def _published_names(flat):
  """Renames the tensors of an older or foreign layout to the published names."""
  for prefix in _PARAMS_PREFIXES:
    if prefix + "embedding/kernel" in flat:
      flat = {n[len(prefix):]: v for n, v in flat.items() if n.startswith(prefix)}
  if _BIG_VISION_POSEMB in flat and "cls" in flat:
    flat = {**flat, _BIG_VISION_POSEMB: _with_class_token_row(flat[_BIG_VISION_POSEMB])}
  return {_LINEN_BLOCK_RE.sub(lambda m: m[1] + _LINEN_BLOCK_NAMES[m[2]] + "/",
                             POSEMB if n == _BIG_VISION_POSEMB else n):
          _squeezed_stem_group_norm(n, v) for n, v in flat.items()}


def _squeezed_stem_group_norm(name, value):
  """A hybrid stem's GroupNorm scale or bias of shape (1, 1, 1, C) as (C,)."""
  if _STEM_GROUP_NORM_RE.search(name) and value.ndim == 4 and value.shape[:3] == (1, 1, 1):
    return value.reshape(-1)
  return value


def _with_class_token_row(posemb):
  """big_vision's table (one row a patch) with a zero row for the class token.

  big_vision (``pool_type='tok'``) adds the position embeddings to the patches
  before it prepends the class token, so the token gets none; the published
  layout has a row for it, which a row of zeros makes the same model.
  """
  return np.concatenate([np.zeros_like(posemb[:, :1]), posemb], axis=1)


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
  return layer_stack.unstack(unflatten(_published_names(flat)))
