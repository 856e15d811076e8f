"""The model a run's config describes, and its parameters, fresh or abstract.

Training, inference, the cost estimate and the benchmark all build the model
and draw its parameters here, so the four agree on what a config means: the
same class count, the same init input and, for a given seed, the same values.
"""
import jax
import jax.numpy as jnp

from vit_jax.models.variants import get_model


def model_from_config(config):
  """The model of ``config.variant`` (any family), its ``config.model`` fields
  and class count."""
  return get_model(config.variant, num_classes=config.data.num_classes,
                   **config.model)


def init_params(model, image_size, *, seed):
  """Fresh parameters of ``model`` for square RGB images of side ``image_size``.

  Drawn in one compiled program: run op by op, an initialisation (which runs
  the model's forward pass) compiles each of its hundreds of operations on
  its own. Under an enclosing `jax.jit` or `jax.eval_shape` it is traced
  into that program as is.
  """
  def init(key):
    images = jnp.zeros((1, image_size, image_size, 3))
    return model.init(key, images, train=False)["params"]
  return jax.jit(init)(jax.random.key(seed))


def abstract_params(model, image_size):
  """The parameters' names, shapes and dtypes (`jax.eval_shape`), allocating nothing."""
  return jax.eval_shape(lambda: init_params(model, image_size, seed=0))
