"""RandAugment (Cubuk et al. 2020), the `randaug` op, with big_vision's 16 ops.

`num_layers` ops drawn uniformly per example, each at strength `magnitude`,
on uint8 images. The op list is the one big_vision's `randaug` (TF models'
autoaugment.py) draws from: auto_contrast, equalize, invert, rotate,
posterize, solarize, color, contrast, brightness, sharpness, shear_x/y,
translate_x/y, cutout and solarize_add. Strength 10 is the paper's
strongest (30 degree rotations, 0.3 shears, 100 px shifts and 80 px cutouts
at 224 px, both scaled with the image); AugReg also used 15 and 20, so up to
30 is accepted, the ops going on linearly until they saturate.

By default every strength-driven op is the identity at 0, as in timm's
"increasing" variants, whose enhance ops (color, contrast, brightness,
sharpness) go either way from the identity with even odds: brighter or
darker, more or less saturated. `increasing=False` takes TF models' posterize,
solarize and enhance strengths, so that `randaug(2, 15, increasing=False)`
is the AugReg ViTs' `randaug(2, 15)`, but for TF models' contrast, which
blends towards the pixel count / 256 rather than the mean grey: a slip not
copied (docs/input_pipelines.md). Geometric ops and cutout fill with grey,
as there.
"""
import math
from collections.abc import Callable

import tensorflow as tf

from vit_jax.data.preprocess.registry import Op, register, take_seed

_PAPER_MAX_MAGNITUDE = 10.0  # strength 10 is the paper's strongest setting
_MAX_MAGNITUDE = 30.0  # past AugReg's 20; mostly a guard against typos
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
  """Each channel stretched to 0..255, as PIL's. The product comes before the
  quotient: both are whole numbers, so the division is the only rounding and
  a channel's highest value lands on 255, where a float32 255 / (high - low)
  first left it at 254 for 32 of the possible ranges."""
  image = tf.cast(image, tf.float32)
  low = tf.reduce_min(image, axis=[0, 1], keepdims=True)
  high = tf.reduce_max(image, axis=[0, 1], keepdims=True)
  stretched = (image - low) * 255 / tf.maximum(high - low, 1)
  return tf.saturate_cast(tf.where(high > low, stretched, image), tf.uint8)


def _sharpness(image):
  """Blurs with PIL's smoothing kernel, to uint8 before the blend as TF
  models' sharpness; the border keeps the original pixels."""
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13
  kernel = tf.tile(kernel[:, :, tf.newaxis, tf.newaxis], [1, 1, 3, 1])
  blurred = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[tf.newaxis], kernel,
                                   [1, 1, 1, 1], "VALID")[0]
  blurred = tf.pad(tf.saturate_cast(blurred, tf.uint8), [[1, 1], [1, 1], [0, 0]])
  inner = tf.pad(tf.ones_like(blurred[1:-1, 1:-1]), [[1, 1], [1, 1], [0, 0]])
  return tf.where(inner > 0, blurred, image)


def _equalize(image):
  """Per-channel histogram equalization with PIL's ImageOps.equalize lookup table.

  PIL spreads the pixels but the brightest value's evenly over 255 steps,
  and leaves a channel as it is where those are fewer than 255.
  """
  def channel(values):
    values = tf.cast(values, tf.int32)
    histogram = tf.math.bincount(tf.reshape(values, [-1]), minlength=256, maxlength=256)
    step = (tf.reduce_sum(histogram) - histogram[tf.reduce_max(values)]) // 255
    safe_step = tf.maximum(step, 1)
    table = tf.minimum((safe_step // 2 + tf.cumsum(histogram, exclusive=True)) // safe_step,
                       255)
    return tf.where(step > 0, tf.gather(table, values), values)

  return tf.cast(tf.stack([channel(image[..., c]) for c in range(3)], axis=-1), tf.uint8)


def _cutout(image, half_side, seed):
  """Greys a square of side 2 * half_side, centred anywhere, clipped at the edges."""
  height, width = tf.unstack(tf.shape(image)[:2])
  centre = tf.random.stateless_uniform([2], seed, 0, 1)
  row = tf.cast(centre[0] * tf.cast(height, tf.float32), tf.int32)
  column = tf.cast(centre[1] * tf.cast(width, tf.float32), tf.int32)
  half = tf.cast(tf.round(half_side * tf.cast(tf.minimum(height, width), tf.float32)),
                 tf.int32)
  within = lambda index, centre: (index >= centre - half) & (index < centre + half)
  inside = (within(tf.range(height), row)[:, tf.newaxis]
            & within(tf.range(width), column)[tf.newaxis, :])[..., tf.newaxis]
  return tf.where(inside, tf.constant(_FILL, tf.uint8), image)


def _sign(seed):
  """+1 or -1, even odds: which way a symmetric op (rotate, shear, shift) goes."""
  return tf.where(tf.random.stateless_uniform([], seed) < 0.5, -1.0, 1.0)


def _strengths(level: float, increasing: bool) -> tuple[int, int, float]:
  """(posterize's shift, solarize's threshold, enhance ops' factor) at ``level``.

  Increasing: each the identity at 0 (shift 0, threshold 256, factor 1),
  stronger with the level; the factor, ``1 + 0.9 * level``, is the upward
  one of timm's two (`randaug_ops` draws which). Otherwise what TF models' (big_vision's) ops do
  on a CPU host: ``level * 4`` bits kept, where a shift TensorFlow cannot
  make (8 at level 0, negative past 2) keeps 1 bit, as its clamp to 7 does;
  a threshold of ``level * 256`` that TensorFlow wraps to uint8, so that
  every pixel inverts at levels 0, 1 and 2 and those of 128 or more at 1.5;
  and a factor of ``0.1 + 1.8 * level`` (the identity at 0.5).
  """
  if increasing:
    return (min(7, int(round(4 * level))), max(0, int(round(256 - 256 * level))),
            1.0 + 0.9 * level)
  shift = 8 - int(4 * level)
  return (shift if 0 <= shift <= 7 else 7), int(256 * level) % 256, 0.1 + 1.8 * level


def randaug_ops(magnitude: float, increasing: bool = True) -> dict[str, Callable]:
  """name -> fn(uint8 image, seed); the seed draws a symmetric op's direction
  and the cutout's place, and with ``increasing`` the enhance ops' direction.
  ``increasing`` picks the strength mappings of posterize, solarize and the
  enhance ops (`_strengths`)."""
  level = magnitude / _PAPER_MAX_MAGNITUDE
  posterize_shift, threshold, enhance = _strengths(level, increasing)

  def factor(seed):
    """The enhance ops' factor: increasing, 1 -/+ its distance from 1 with
    even odds and at least 0.1, as timm's; otherwise the one factor."""
    if not increasing:
      return enhance
    return tf.maximum(0.1, 1.0 + _sign(seed) * (enhance - 1.0))

  def shift(image, seed, axis):
    size = tf.cast(tf.shape(image)[1 - axis], tf.float32)
    pixels = _sign(seed) * level * 100 / 224 * size  # 100 px at 224 px, as the reference
    rows = [[1., 0., -pixels], [0., 1., 0.]] if axis == 0 else [[1., 0., 0.], [0., 1., -pixels]]
    return _transform(image, rows + [[0., 0., 1.]])

  def shear(image, seed, axis):
    amount = _sign(seed) * level * 0.3
    rows = [[1., amount, 0.], [0., 1., 0.]] if axis == 0 else [[1., 0., 0.], [amount, 1., 0.]]
    return _transform(image, rows + [[0., 0., 1.]])

  grey = lambda image: tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
  mean = lambda image: tf.fill(tf.shape(image), tf.cast(
      tf.reduce_mean(tf.cast(tf.image.rgb_to_grayscale(image), tf.float32)), tf.uint8))
  return dict([
      ("auto_contrast", lambda image, seed: _auto_contrast(image)),
      ("equalize", lambda image, seed: _equalize(image)),
      ("invert", lambda image, seed: 255 - image),
      ("rotate", lambda image, seed: _rotate(image, _sign(seed) * 30 * level)),
      ("posterize", lambda image, seed: tf.bitwise.left_shift(
          tf.bitwise.right_shift(image, posterize_shift), posterize_shift)),
      ("solarize", lambda image, seed: tf.where(
          tf.cast(image, tf.int32) >= threshold, 255 - image, image)),
      ("color", lambda image, seed: _blend(image, grey(image), factor(seed))),
      ("contrast", lambda image, seed: _blend(image, mean(image), factor(seed))),
      ("brightness", lambda image, seed: _blend(image, tf.zeros_like(image), factor(seed))),
      ("sharpness", lambda image, seed: _blend(image, _sharpness(image), factor(seed))),
      ("shear_x", lambda image, seed: shear(image, seed, 0)),
      ("shear_y", lambda image, seed: shear(image, seed, 1)),
      ("translate_x", lambda image, seed: shift(image, seed, 0)),
      ("translate_y", lambda image, seed: shift(image, seed, 1)),
      ("cutout", lambda image, seed: _cutout(image, level * 40 / 224, seed)),
      ("solarize_add", lambda image, seed: tf.where(
          image < 128, tf.saturate_cast(tf.cast(image, tf.int32) + int(110 * level), tf.uint8),
          image)),
  ])


@register("randaug")
def randaug(num_layers: int = 2, magnitude: float = 10, increasing: bool = True) -> Op:
  """RandAugment on a uint8 RGB 'image': `num_layers` random ops in a row.

  `magnitude` runs from 0 (by default every op but auto_contrast, equalize
  and invert the identity) through 10, the paper's strongest, up to 30.
  `increasing=False` takes TF models' strengths for posterize, solarize and
  the enhance ops instead, which big_vision's randaug and so the AugReg
  recipes ran with (`_strengths`).
  """
  if not isinstance(increasing, bool):
    raise ValueError(f"randaug: increasing must be True or False, got {increasing!r}.")
  if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
    raise ValueError(f"randaug: num_layers must be a whole number >= 0, got "
                     f"{num_layers!r}.")
  if not 0 <= magnitude <= _MAX_MAGNITUDE:
    raise ValueError(f"randaug: magnitude must be in 0..{_MAX_MAGNITUDE:g}, "
                     f"got {magnitude}.")
  ops = list(randaug_ops(magnitude, increasing).values())

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
      choice_seed, op_seed = layer_seeds[2 * layer], layer_seeds[2 * layer + 1]
      index = tf.random.stateless_uniform([], choice_seed, 0, len(ops), tf.int32)
      shape = image.shape
      image = tf.switch_case(index, [
          (lambda fn=fn, image=image: tf.ensure_shape(fn(image, op_seed), shape))
          for fn in ops])
    return {**features, "image": image}

  return op
