"""The pixel normalisation a preprocessing string amounts to, as the PyTorch
libraries state it: a per-channel mean and std of [0, 1] pixels.

timm's `pretrained_cfg` and Hugging Face's `preprocessor_config.json` say how
their models' inputs were normalised in these terms; our preprocessing says
it as ops (`value_range(-1, 1)`, `vgg_value_range`). Exports write ours in
theirs, and inference on an imported checkpoint compares the two.
"""
import numpy as np
import tensorflow as tf

from vit_jax.data import preprocess
from vit_jax.inference import predict


def channel_ranges(pp_spec, image_size):
  """What ``pp_spec`` maps black and white pixels to, per RGB channel: two
  arrays of 3 (they differ by channel under vgg_value_range)."""
  pp = preprocess.parse(pp_spec)
  black, white = (predict.preprocess_image(pp, tf.fill([image_size, image_size, 3],
                                                       tf.constant(v, tf.uint8)))
                  for v in (0, 255))
  return black.reshape(-1, 3).min(axis=0), white.reshape(-1, 3).max(axis=0)


def mean_and_std(black, white):
  """The per-channel mean and std of [0, 1] pixels that timm and transformers
  take to reach a model's input, black to ``black`` and white to ``white``:
  0.5, 0.5 for [-1, 1]."""
  black, white = np.asarray(black, np.float64), np.asarray(white, np.float64)
  std = 1 / (white - black)
  return [float(m) for m in -black * std], [float(s) for s in std]


def of_preprocessing(pp_spec, image_size):
  """(mean, std) per channel that ``pp_spec`` feeds a model."""
  return mean_and_std(*channel_ranges(pp_spec, image_size))
