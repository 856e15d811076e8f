"""Parameters for tests: a model's abstract tree, and distinct random values."""
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import tree_util


def abstract_params(model, size):
  images = jnp.zeros((1, size, size, 3))
  return jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False)["params"])


def random_flat(abstract, seed=0):
  """Distinct random values for every parameter, by published name."""
  rng = np.random.default_rng(seed)
  return {name: rng.random(leaf.shape, np.float32)
          for name, leaf in tree_util.flatten_named(abstract)}
