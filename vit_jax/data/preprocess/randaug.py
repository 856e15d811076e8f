"""RandAugment (Cubuk et al. 2020), the `randaug` op.

`num_layers` ops drawn uniformly per example, each at strength `magnitude`
on the paper's 0..10 scale, on uint8 images. Geometric ops fill uncovered
pixels with grey. Equalize and cutout of the paper's list are left out.
"""
import math
from collections.abc import Callable

import tensorflow as tf

from vit_jax.data.preprocess.registry import Op, register, take_seed

_MAX_MAGNITUDE = 10.0
_FILL = 128


def _blend(image, degenerate, factor):
  """degenerate + factor * (image - degenerate), as PIL's ImageEnhance does."""
  image, degenerate = tf.cast(image, tf.float32), tf.cast(degenerate, tf.float32)
  return tf.saturate_cast(degenerate + factor * (image - degenerate), tf.uint8)


def _transform(image, matrix):
  """Applies a 3x3 output->input pixel map (row-major, last row 0 0 1)."""
  transform = tf.reshape(tf.cast(matrix, tf.float32), [9])[:8]
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=image[tf.newaxis], transforms=transform[tf.newaxis],
      output_shape=tf.shape(image)[:2], fill_value=float(_FILL),
      interpolation="NEAREST", fill_mode="CONSTANT")[0]


def _rotate(image, degrees):
  height, width = [tf.cast(d, tf.float32) for d in tf.unstack(tf.shape(image)[:2])]
  angle = degrees * math.pi / 180
  cos, sin = tf.cos(angle), tf.sin(angle)
  cx, cy = (width - 1) / 2, (height - 1) / 2
  return _transform(image, [[cos, -sin, cx - cos * cx + sin * cy],
                            [sin, cos, cy - sin * cx - cos * cy], [0., 0., 1.]])


def _auto_contrast(image):
  image = tf.cast(image, tf.float32)
  low = tf.reduce_min(image, axis=[0, 1], keepdims=True)
  high = tf.reduce_max(image, axis=[0, 1], keepdims=True)
  scale = tf.where(high > low, 255 / tf.maximum(high - low, 1), 1.0)
  offset = tf.where(high > low, low, 0.0)
  return tf.saturate_cast((image - offset) * scale, tf.uint8)


def _sharpness(image):
  """Blurs with PIL's smoothing kernel; the border keeps the original pixels."""
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13
  kernel = tf.tile(kernel[:, :, tf.newaxis, tf.newaxis], [1, 1, 3, 1])
  blurred = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[tf.newaxis], kernel,
                                   [1, 1, 1, 1], "VALID")[0]
  blurred = tf.pad(blurred, [[1, 1], [1, 1], [0, 0]])
  inner = tf.pad(tf.ones_like(blurred[1:-1, 1:-1]), [[1, 1], [1, 1], [0, 0]])
  return tf.where(inner > 0, blurred, tf.cast(image, tf.float32))


def randaug_ops(magnitude: float) -> dict[str, Callable]:
  """name -> fn(uint8 image, sign); `sign` (+-1) mirrors the symmetric ops."""
  level = magnitude / _MAX_MAGNITUDE
  enhance = 1.0 + 0.9 * level  # factor 1 is identity, as in PIL's enhancers

  def shift(image, sign, axis):
    size = tf.cast(tf.shape(image)[1 - axis], tf.float32)
    pixels = sign * level * 0.45 * size  # 100 px at 224 px, as the reference
    rows = [[1., 0., -pixels], [0., 1., 0.]] if axis == 0 else [[1., 0., 0.], [0., 1., -pixels]]
    return _transform(image, rows + [[0., 0., 1.]])

  def shear(image, sign, axis):
    amount = sign * level * 0.3
    rows = [[1., amount, 0.], [0., 1., 0.]] if axis == 0 else [[1., 0., 0.], [amount, 1., 0.]]
    return _transform(image, rows + [[0., 0., 1.]])

  grey = lambda image: tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
  mean = lambda image: tf.fill(tf.shape(image), tf.cast(
      tf.reduce_mean(tf.cast(tf.image.rgb_to_grayscale(image), tf.float32)), tf.uint8))
  bits = 8 - int(round(4 * level))  # 8 bits (identity) down to 4
  threshold = int(round(256 - 256 * level))
  return dict([
      ("identity", lambda image, sign: image),
      ("auto_contrast", lambda image, sign: _auto_contrast(image)),
      ("invert", lambda image, sign: 255 - image),
      ("rotate", lambda image, sign: _rotate(image, sign * 30 * level)),
      ("posterize", lambda image, sign: tf.bitwise.left_shift(
          tf.bitwise.right_shift(image, 8 - bits), 8 - bits)),
      ("solarize", lambda image, sign: tf.where(
          tf.cast(image, tf.int32) >= threshold, 255 - image, image)),
      ("solarize_add", lambda image, sign: tf.where(
          image < 128, tf.saturate_cast(tf.cast(image, tf.int32) + int(110 * level), tf.uint8),
          image)),
      ("color", lambda image, sign: _blend(image, grey(image), enhance)),
      ("contrast", lambda image, sign: _blend(image, mean(image), enhance)),
      ("brightness", lambda image, sign: _blend(image, tf.zeros_like(image), enhance)),
      ("sharpness", lambda image, sign: _blend(image, _sharpness(image), enhance)),
      ("shear_x", lambda image, sign: shear(image, sign, 0)),
      ("shear_y", lambda image, sign: shear(image, sign, 1)),
      ("translate_x", lambda image, sign: shift(image, sign, 0)),
      ("translate_y", lambda image, sign: shift(image, sign, 1)),
  ])


@register("randaug")
def randaug(num_layers: int = 2, magnitude: float = 10) -> Op:
  """RandAugment on a uint8 RGB 'image': `num_layers` random ops in a row."""
  if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
    raise ValueError(f"randaug: num_layers must be a whole number >= 0, got "
                     f"{num_layers!r}.")
  if not 0 <= magnitude <= _MAX_MAGNITUDE:
    raise ValueError(f"randaug: magnitude must be in 0..{_MAX_MAGNITUDE:g}, "
                     f"got {magnitude}.")
  ops = list(randaug_ops(magnitude).values())

  def op(features):
    features, seed = take_seed(features, "randaug")
    image = features["image"]
    if image.dtype != tf.uint8:
      raise ValueError(f"randaug works on decoded uint8 images; got "
                       f"{image.dtype.name}. Put it after decode and before value_range.")
    if image.shape[-1] not in (3, None):  # its colour ops work on RGB
      raise ValueError(f"randaug works on RGB images of 3 channels; got shape "
                       f"{image.shape}. Decode with decode (3 channels), not "
                       f"decode(1).")
    layer_seeds = tf.random.experimental.stateless_split(seed, 2 * num_layers)
    for layer in range(num_layers):
      choice_seed, sign_seed = layer_seeds[2 * layer], layer_seeds[2 * layer + 1]
      index = tf.random.stateless_uniform([], choice_seed, 0, len(ops), tf.int32)
      sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
      shape = image.shape
      image = tf.switch_case(index, [
          (lambda fn=fn, image=image: tf.ensure_shape(fn(image, sign), shape))
          for fn in ops])
    return {**features, "image": image}

  return op
