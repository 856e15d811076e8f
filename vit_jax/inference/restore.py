"""A finished run's model and parameters, as they are, for inference and export."""
from vit_jax import tree_util
from vit_jax.models import build, pretrained


def restore_model(config, path, *, step=None):
  """The model ``config`` describes and the parameters at ``path``, for inference.

  ``path`` is anything `read_params` reads. Unlike `load_pretrained`, nothing
  is adapted: every parameter must match the model in name and shape.
  """
  model = build.model_from_config(config)
  # A bare timm state dict does not say its heads; the config does.
  params = pretrained.read_params(path, step=step,
                                  num_heads=getattr(model, "num_heads", None))
  tree_util.check_same_arrays(params, build.abstract_params(model, config.image_size),
                              source=path)
  return model, params
