"""A finished run's model and parameters, as they are, for inference and export."""
import numpy as np
from absl import logging

from vit_jax import tree_util
from vit_jax.inference import normalisation
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
  check_normalisation(config, path)
  pretrained.check_function(path, model)
  return model, params


def check_normalisation(config, path):
  """Warns where ``config.pp.eval`` feeds the checkpoint at ``path`` other
  pixels than the ones its timm or Hugging Face config states it was trained on.

  An imported model is scored as it is, so the difference would cost
  accuracy without a word (ImageNet's mean and std against our [-1, 1]).
  Returns whether the two agree (or the checkpoint states nothing).
  """
  stated = pretrained.stated_normalisation(path)
  if stated is None:
    return True
  fed = normalisation.of_preprocessing(config.pp.eval, config.image_size)
  if np.allclose(stated, fed, rtol=1e-3, atol=1e-3):
    return True
  logging.warning("%s states its model was trained on pixels normalised with %s (of "
                  "[0, 1] pixels), but config.pp.eval (%s) feeds it %s; put %s in "
                  "place of its value range for the checkpoint's own accuracy.",
                  path, pretrained.describe_normalisation(*stated), config.pp.eval,
                  pretrained.describe_normalisation(*fed),
                  pretrained.vgg_value_range_op(*stated))
  return False
