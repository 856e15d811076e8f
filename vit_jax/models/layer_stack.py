"""The encoder blocks' two layouts: one subtree per layer, or one stacked subtree.

A ViT without ``scan`` names its blocks ``Transformer/encoderblock_{i}/...``,
the published layout; with ``scan`` they are one ``Transformer/encoderblock/
...`` whose arrays carry a leading layer axis. Whatever a run used, files
keep the published layout and any file loads into either model, so every
reader and writer converts here, with one pair of functions: parameters,
the optimizer moments and EMA that shadow them (any tree: dicts, lists,
tuples and optax's named tuples are walked), concrete arrays (numpy or
jax) and abstract ones (`jax.ShapeDtypeStruct`, orbax's array metadata),
whose shardings follow the layer axis.
"""
from collections.abc import Mapping
import re

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

STACKED_BLOCKS = "encoderblock"
_BLOCK_RE = re.compile(rf"^{STACKED_BLOCKS}_(\d+)$")


def block_name(layer: int) -> str:
  """The published name of block ``layer``: 'encoderblock_3'."""
  return f"{STACKED_BLOCKS}_{layer}"


def is_stacked(tree) -> bool:
  """Whether ``tree`` holds stacked blocks (a mapping with an 'encoderblock' key)."""
  if isinstance(tree, Mapping):
    return STACKED_BLOCKS in tree or any(is_stacked(v) for v in tree.values())
  if isinstance(tree, (list, tuple)):
    return any(is_stacked(v) for v in tree)
  return False


def to_layout(tree, *, stacked: bool):
  """``tree`` with its blocks stacked (``stacked``) or one subtree per layer.

  A tree already in that layout comes back as it is.
  """
  if is_stacked(tree) == stacked:
    return tree
  return _convert(tree, _stack_blocks if stacked else _unstack_blocks)


def like(tree, reference):
  """``tree`` in the layout of ``reference`` (e.g. a model's abstract parameters)."""
  return to_layout(tree, stacked=is_stacked(reference))


def stack(tree):
  """The scanned layout of ``tree``: blocks stacked along a new leading axis."""
  return to_layout(tree, stacked=True)


def unstack(tree):
  """The published layout of ``tree``: one 'encoderblock_{i}' subtree per layer."""
  return to_layout(tree, stacked=False)


def _convert(tree, convert_blocks):
  """Applies ``convert_blocks`` to every mapping of ``tree``, innermost first."""
  if isinstance(tree, Mapping):
    return convert_blocks({k: _convert(v, convert_blocks) for k, v in tree.items()})
  if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # optax's states
    return type(tree)(*(_convert(v, convert_blocks) for v in tree))
  if isinstance(tree, (list, tuple)):
    return type(tree)(_convert(v, convert_blocks) for v in tree)
  return tree


def _stack_blocks(node):
  layers = sorted((int(m[1]), k) for k in node if (m := _BLOCK_RE.match(k)))
  if not layers:
    return node
  if [i for i, _ in layers] != list(range(len(layers))):
    raise ValueError(f"encoder blocks {[k for _, k in layers]} are not numbered "
                     f"0..{len(layers) - 1}; cannot stack them")
  blocks = [node[k] for _, k in layers]
  rest = {k: v for k, v in node.items() if not _BLOCK_RE.match(k)}
  return {**rest, STACKED_BLOCKS: jax.tree.map(_stack_leaves, *blocks)}


def _unstack_blocks(node):
  if STACKED_BLOCKS not in node:
    return node
  stacked = node[STACKED_BLOCKS]
  depths = {leaf.shape[0] for leaf in jax.tree.leaves(stacked) if hasattr(leaf, "shape")}
  if len(depths) != 1:
    raise ValueError(f"stacked encoder blocks of different depths {sorted(depths)}")
  depth, = depths
  rest = {k: v for k, v in node.items() if k != STACKED_BLOCKS}
  return {**rest, **{block_name(i): jax.tree.map(lambda leaf, i=i: _layer(leaf, i), stacked)
                     for i in range(depth)}}


def _is_abstract(leaf):
  """A shape and dtype without data: a ShapeDtypeStruct or orbax's array metadata."""
  return (hasattr(leaf, "shape") and hasattr(leaf, "dtype")
          and not isinstance(leaf, (np.ndarray, np.generic, jax.Array)))


def _stack_leaves(*layers):
  first = layers[0]
  if _is_abstract(first):
    return jax.ShapeDtypeStruct((len(layers), *first.shape), first.dtype,
                                sharding=_with_layer_axis(getattr(first, "sharding", None)))
  # Device arrays stay on their devices (inside a jit: traced); host arrays on the host.
  return jnp.stack(layers) if isinstance(first, jax.Array) else np.stack(layers)


def _layer(leaf, i):
  if _is_abstract(leaf):
    return jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype,
                                sharding=_without_layer_axis(getattr(leaf, "sharding", None)))
  return leaf[i]


def _with_layer_axis(sharding):
  """A stacked array's sharding: the layer's, with the layer axis not split."""
  if isinstance(sharding, NamedSharding):
    return NamedSharding(sharding.mesh, P(None, *sharding.spec))
  return None


def _without_layer_axis(sharding):
  """One layer's sharding: the stacked array's, without its layer axis."""
  if isinstance(sharding, NamedSharding):
    return NamedSharding(sharding.mesh, P(*sharding.spec[1:]))
  return None
