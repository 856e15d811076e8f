"""Image ops: decoding, crops, resizes and flips of features['image'].

Sizes are an int (square) or (height, width). Resizes keep the image's
dtype, so a uint8 image stays uint8 until `value_range` maps it to floats.
"""
from collections.abc import Sequence

import tensorflow as tf

from vit_jax.data import config_fields
from vit_jax.data.preprocess.registry import Op, on_image, register, take_seed

# Inception-style crops keep a box whose aspect ratio is within 3/4..4/3.
_INCEPTION_ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
# The whole image as one box, in the normalised [ymin, xmin, ymax, xmax] form
# the bounding-box samplers expect; crops are sampled relative to it.
_WHOLE_IMAGE_BOX = [[[0.0, 0.0, 1.0, 1.0]]]
JPEG_START = b"\xff\xd8\xff"  # SOI and the first marker's lead byte
# The interpolations `tf.image.resize` knows (`tf.image.ResizeMethod`).
RESIZE_METHODS = ("area", "bicubic", "bilinear", "gaussian", "lanczos3", "lanczos5",
                  "mitchellcubic", "nearest")


def _checked_size(op_name: str, size: int | Sequence[int]) -> tuple[int, int]:
  """(height, width) of `size`, refused when not positive.

  Checked as the spec is parsed: TensorFlow would only fail on the first
  image, deep inside tf.data, without naming the op.
  """
  height, width = config_fields.height_width(size)
  if height < 1 or width < 1:
    raise ValueError(f"{op_name}: size {size!r} must be positive, e.g. 224 or "
                     f"(224, 160).")
  return height, width


def _checked_method(op_name: str, method: str) -> str:
  """`method`, refused as the spec is parsed unless `tf.image.resize` knows it."""
  if method not in RESIZE_METHODS:
    raise ValueError(f"{op_name}: unknown method {method!r}; valid: "
                     f"{', '.join(RESIZE_METHODS)}.")
  return method


def _checked_antialias(op_name: str, antialias) -> None:
  """Refuses a non-bool: a string such as 'False' would turn antialiasing on."""
  if not isinstance(antialias, bool):
    raise ValueError(f"{op_name}: antialias must be True or False, got {antialias!r}.")


def _checked_areas(op_name: str, area_min: float, area_max: float) -> None:
  """Refuses an area range TensorFlow would not sample from.

  An inverted range (area_min > area_max) would not fail: TensorFlow would
  silently keep the whole image, so the crop would never augment.
  """
  if not 0 < area_min <= area_max <= 100:
    raise ValueError(f"{op_name}: area_min={area_min} and area_max={area_max} "
                     f"must satisfy 0 < area_min <= area_max <= 100 (percent of "
                     f"the image).")


def _resize(image: tf.Tensor, size: tuple[int, int] | tf.Tensor,
            method: str, antialias: bool = False) -> tf.Tensor:
  """Resizes keeping `image`'s dtype, so uint8 stays uint8 for value_range.

  Integers are rounded to the nearest level, as PIL rounds (timm's and
  Hugging Face's resizes) and nearest the original ViT's float pipeline;
  big_vision's cast truncates, half a level darker on average.
  """
  resized = tf.image.resize(image, size, method=method, antialias=antialias)
  if image.dtype.is_integer:
    return tf.saturate_cast(tf.round(resized), image.dtype)
  return tf.cast(resized, image.dtype)


def _fix_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
  """Converts a uint8 HWC (or HW) image to `channels` (1 or 3) channels.

  Grey (+alpha) becomes RGB by repeating grey; RGB(A) becomes grey by
  luminance; alpha is dropped.
  """
  if image.shape.rank == 2:
    image = image[..., tf.newaxis]
  if channels == 3:
    convert = lambda: tf.tile(image[..., :1], [1, 1, 3])
    needs_convert = lambda num_channels: num_channels < 3
  else:
    convert = lambda: tf.image.rgb_to_grayscale(image[..., :3])
    needs_convert = lambda num_channels: num_channels >= 3
  keep_first = lambda: image[..., :channels]
  if image.shape[-1] is not None:
    fixed = convert() if needs_convert(image.shape[-1]) else keep_first()
  else:
    fixed = tf.cond(needs_convert(tf.shape(image)[-1]), convert, keep_first)
  fixed.set_shape([None, None, channels])
  return fixed


@register("decode")
def decode(channels: int = 3) -> Op:
  """Decodes PNG/JPEG/GIF/BMP bytes in 'image' to a uint8 HWC tensor.

  An image that is already a uint8 tensor (e.g. from tfds with decoding left
  on) only has its channel count fixed, so specs work for both kinds of data.
  """
  if channels not in (1, 3):
    raise ValueError(f"decode: channels must be 1 or 3, got {channels}.")

  def fn(image):
    if image.dtype == tf.string:
      image = tf.io.decode_image(image, channels=channels,
                                 expand_animations=False)
    return _fix_channels(image, channels)

  return on_image(fn)


@register("decode_jpeg_and_inception_crop")
def decode_jpeg_and_inception_crop(size: int | Sequence[int],
                                   area_min: float = 5,
                                   area_max: float = 100,
                                   method: str = "bilinear") -> Op:
  """Inception crop of encoded bytes, decoding only the cropped window of a JPEG.

  Sampling the box from the JPEG header and decoding just that window is
  much cheaper than decoding the full image and cropping afterwards. Any
  other format (a PNG dataset, or ImageNet's PNG files named .JPEG) is
  decoded whole and cropped with the same box, as ``decode|inception_crop``
  would. Areas are percentages of the image.
  """
  target = _checked_size("decode_jpeg_and_inception_crop", size)
  _checked_method("decode_jpeg_and_inception_crop", method)
  _checked_areas("decode_jpeg_and_inception_crop", area_min, area_max)

  def op(features):
    features, seed = take_seed(features, "decode_jpeg_and_inception_crop")
    data = features["image"]

    def jpeg_window():
      begin, crop_size = _inception_box(tf.image.extract_jpeg_shape(data), seed,
                                        area_min, area_max)
      window = tf.stack([begin[0], begin[1], crop_size[0], crop_size[1]])
      return tf.image.decode_and_crop_jpeg(data, window, channels=3)

    def whole_image_crop():
      image = tf.io.decode_image(data, channels=3, expand_animations=False)
      begin, crop_size = _inception_box(tf.shape(image), seed, area_min, area_max)
      return tf.slice(image, begin, crop_size)

    is_jpeg = tf.strings.substr(data, 0, len(JPEG_START)) == JPEG_START
    image = tf.cond(is_jpeg, jpeg_window, whole_image_crop)
    return {**features, "image": _resize(image, target, method)}

  return op


def _inception_box(image_shape, seed, area_min, area_max):
  """Begin and size of a random box of `area_min`..`area_max` % of the image.

  ``min_object_covered`` defaults to 0.1 in TensorFlow: with the whole image
  as the object, no box under 10% of the image would ever be drawn. The
  references (vision_transformer, big_vision) pass 0, so boxes go down to
  `area_min`.
  """
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      image_shape, _WHOLE_IMAGE_BOX, seed=seed, min_object_covered=0,
      area_range=(area_min / 100, area_max / 100),
      aspect_ratio_range=_INCEPTION_ASPECT_RATIO_RANGE,
      use_image_if_no_bounding_boxes=True)
  return begin, crop_size


@register("resize")
def resize(size: int | Sequence[int], method: str = "bilinear",
           antialias: bool = False) -> Op:
  """Resizes 'image' to exactly `size`, ignoring its aspect ratio.

  `antialias` widens the kernel when shrinking, as PIL's resizes (and so
  timm's and Hugging Face's eval transforms) do; off by default, as
  big_vision's.
  """
  target = _checked_size("resize", size)
  _checked_method("resize", method)
  _checked_antialias("resize", antialias)
  return on_image(lambda image: _resize(image, target, method, antialias))


@register("resize_small")
def resize_small(smaller_size: int, method: str = "area", antialias: bool = False) -> Op:
  """Resizes 'image' so its shorter side is `smaller_size`, keeping aspect.

  Area interpolation by default, as big_vision's evaluation resizes: each
  output pixel averages the input pixels it covers, so shrinking a large
  image does not alias the way bilinear sampling of a few pixels does.
  `antialias` is `resize`'s, for the other methods (timm's eval: bicubic).
  """
  _checked_antialias("resize_small", antialias)
  if isinstance(smaller_size, bool) or not isinstance(smaller_size, int) or smaller_size < 1:
    raise ValueError(f"resize_small: smaller_size must be a positive int, the "
                     f"shorter side in pixels, e.g. 256; got {smaller_size!r}.")
  _checked_method("resize_small", method)

  def fn(image):
    height_width = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = smaller_size / tf.reduce_min(height_width)
    target = tf.cast(tf.round(height_width * scale), tf.int32)
    return _resize(image, target, method, antialias)

  return on_image(fn)


@register("central_crop")
def central_crop(size: int | Sequence[int]) -> Op:
  """Crops `size` from the centre of 'image' (evaluation-time crop)."""
  height, width = _checked_size("central_crop", size)

  def fn(image):
    offset_y = (tf.shape(image)[0] - height) // 2
    offset_x = (tf.shape(image)[1] - width) // 2
    return tf.image.crop_to_bounding_box(image, offset_y, offset_x, height,
                                         width)

  return on_image(fn)


@register("random_crop")
def random_crop(size: int | Sequence[int]) -> Op:
  """Crops `size` from a random position of 'image'."""
  height, width = _checked_size("random_crop", size)

  def op(features):
    features, seed = take_seed(features, "random_crop")
    image = features["image"]
    crop_shape = tf.stack([height, width, tf.shape(image)[-1]])
    cropped = tf.image.stateless_random_crop(image, crop_shape, seed=seed)
    cropped.set_shape([height, width, image.shape[-1]])
    return {**features, "image": cropped}

  return op


@register("inception_crop")
def inception_crop(size: int | Sequence[int], area_min: float = 5,
                   area_max: float = 100, method: str = "bilinear") -> Op:
  """Random box of `area_min`..`area_max` % of 'image', resized to `size`."""
  target = _checked_size("inception_crop", size)
  _checked_method("inception_crop", method)
  _checked_areas("inception_crop", area_min, area_max)

  def op(features):
    features, seed = take_seed(features, "inception_crop")
    image = features["image"]
    begin, crop_size = _inception_box(tf.shape(image), seed, area_min, area_max)
    cropped = tf.slice(image, begin, crop_size)
    return {**features, "image": _resize(cropped, target, method)}

  return op


@register("flip_lr")
def flip_lr() -> Op:
  """Mirrors 'image' left-right with probability 1/2."""

  def op(features):
    features, seed = take_seed(features, "flip_lr")
    image = tf.image.stateless_random_flip_left_right(features["image"], seed)
    return {**features, "image": image}

  return op
