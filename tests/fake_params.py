"""Parameters for tests: distinct random values for a model's abstract tree."""
import numpy as np

from vit_jax import tree_util


def random_flat(abstract, seed=0):
  """Distinct random values for every parameter, by published name."""
  rng = np.random.default_rng(seed)
  return {name: rng.random(leaf.shape, np.float32)
          for name, leaf in tree_util.flatten_named(abstract)}
