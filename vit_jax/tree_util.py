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


def check_same_arrays(loaded, expected, *, source, what="parameter"):
  """Raises unless ``loaded`` has exactly the array names and shapes of ``expected``.

  ``expected`` may be abstract (``jax.eval_shape`` of the model's init). The
  error names the first array, in name order, that is missing, extra or
  of another shape, with both shapes: a file written for another variant,
  width or depth is recognised from that one line.
  """
  have = {name: tuple(leaf.shape) for name, leaf in flatten_named(loaded)}
  want = {name: tuple(leaf.shape) for name, leaf in flatten_named(expected)}
  problems = []
  for name in sorted(have.keys() | want.keys()):
    if name not in have:
      problems.append(f"{what} {name} of the model is missing in the checkpoint")
    elif name not in want:
      problems.append(f"{what} {name} of the checkpoint is not in the model")
    elif have[name] != want[name]:
      problems.append(f"{what} {name} has shape {have[name]} in the "
                      f"checkpoint but {want[name]} in the model")
  if problems:
    raise ValueError(f"{source}: {problems[0]} ({len(problems)} mismatching "
                     f"in all)")
