"""Parameter names as '/'-joined paths, and regex masks over them.

One mechanism serves every per-parameter choice (weight decay, sharding, and
whatever comes next): a regex over the published name, e.g.
``Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel``.
"""
import re

import jax


def path_name(path):
  """'/'-joins a jax key path: (DictKey('a'), DictKey('b')) -> 'a/b'."""
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def flatten_named(tree):
  """[(name, leaf)] of a pytree, names as in the published checkpoints."""
  return [(path_name(p), leaf)
          for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def regex_mask(tree, pattern):
  """A pytree of bools like ``tree``: True where the leaf's name matches."""
  regex = re.compile(pattern)
  return jax.tree_util.tree_map_with_path(
      lambda p, _: bool(regex.fullmatch(path_name(p))), tree)
