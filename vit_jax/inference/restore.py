"""A finished run's model and parameters, as they are, for inference and export."""
import jax
import jax.numpy as jnp

from vit_jax import models, tree_util
from vit_jax.models import pretrained


def restore_model(config, path, *, step=None):
  """The model ``config`` describes and the parameters at ``path``, for inference.

  ``path`` is anything `read_params` reads. Unlike `load_pretrained`, nothing
  is adapted: every parameter must match the model in name and shape.
  """
  model = models.get_model(config.variant, num_classes=config.data.num_classes,
                           **config.model)
  images = jnp.zeros((1, config.image_size, config.image_size, 3))
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.key(0), images, train=False)["params"])
  params = pretrained.read_params(path, step=step)
  tree_util.check_same_arrays(params, abstract, source=path)
  return model, params
