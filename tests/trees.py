"""Comparisons of parameter and gradient trees, leaf by leaf, each failure named."""
import jax
import numpy as np

from vit_jax import tree_util


def _named_leaf_pairs(actual, expected):
  """(name, actual leaf, expected leaf) of two trees of one structure."""
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for (name, a), (_, e) in zip(tree_util.flatten_named(actual),
                               tree_util.flatten_named(expected)):
    yield name, a, e


def assert_trees_close(actual, expected, **tolerance):
  """Every leaf within ``tolerance`` (`np.testing.assert_allclose`'s)."""
  for name, a, e in _named_leaf_pairs(actual, expected):
    np.testing.assert_allclose(a, e, err_msg=name, **tolerance)


def assert_trees_equal(actual, expected):
  """Every leaf equal to the bit."""
  for name, a, e in _named_leaf_pairs(actual, expected):
    np.testing.assert_array_equal(a, e, err_msg=name)


def assert_gradients_close(actual, expected, *, relative):
  """Every gradient within ``relative`` times the largest of ``expected``.

  Against the tree's largest gradient, not each leaf's own: some gradients
  (a key projection's bias, which the softmax cancels) are zero in exact
  arithmetic, and only rounding is left of them.
  """
  scale = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(expected))
  assert_trees_close(actual, expected, atol=relative * scale)
