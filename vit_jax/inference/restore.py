"""A finished run's model and parameters, as they are, for inference and export."""
from vit_jax import tree_util
from vit_jax.models import build, layer_stack, pretrained


def restore_model(config, path, *, step=None):
  """The model ``config`` describes and the parameters at ``path``, for inference.

  ``path`` is anything `read_params` reads. Unlike `load_pretrained`, nothing
  is adapted: every parameter must match the model in name and shape. The
  blocks come in the model's layout (stacked where ``config.model.scan``).
  """
  model = build.model_from_config(config)
  # A bare timm state dict does not say its heads; the config does.
  params = pretrained.read_params(path, step=step,
                                  num_heads=getattr(model, "num_heads", None))
  expected = build.abstract_params(model, config.image_size)
  params = layer_stack.like(params, expected)
  tree_util.check_same_arrays(params, expected, source=path)
  return model, params
