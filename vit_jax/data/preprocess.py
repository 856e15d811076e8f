"""Preprocessing ops, registered by name and composed from a spec string.

Configs describe input processing as text, e.g.
``"decode|inception_crop(224)|flip_lr|value_range(-1,1)|onehot(10)"``, so an
experiment's augmentation can be changed from the command line without code.
`parse` turns such a spec into one function over a features dict of tf tensors;
it works eagerly and inside `tf.data.Dataset.map`.

Random ops are stateless: each one draws its seed from the per-example key
``features['_rng']`` (attached by `add_example_seeds`), so an input pipeline
yields the same augmented examples every time it is replayed from the same
position, which makes training reproducible and resumable.
"""
import ast
import math
from collections.abc import Callable, Sequence

import tensorflow as tf

Features = dict[str, tf.Tensor]
Op = Callable[[Features], Features]

RNG_KEY = "_rng"

_REGISTRY: dict[str, Callable[..., Op]] = {}

# Inception-style crops keep a box whose aspect ratio is within 3/4..4/3.
_INCEPTION_ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
# The whole image as one box, in the normalised [ymin, xmin, ymax, xmax] form
# the bounding-box samplers expect; crops are sampled relative to it.
_WHOLE_IMAGE_BOX = [[[0.0, 0.0, 1.0, 1.0]]]
_JPEG_START = b"\xff\xd8\xff"  # SOI and the first marker's lead byte


def register(name: str) -> Callable[[Callable[..., Op]], Callable[..., Op]]:
  """Makes an op factory usable by `name` in spec strings."""

  def decorator(factory: Callable[..., Op]) -> Callable[..., Op]:
    if name in _REGISTRY:
      raise ValueError(f"Preprocessing op {name!r} is already registered.")
    _REGISTRY[name] = factory
    return factory

  return decorator


def registered_ops() -> list[str]:
  """Names usable in spec strings, sorted, for error messages and docs."""
  return sorted(_REGISTRY)


def parse(spec: str) -> Op:
  """Builds the function that applies the '|'-separated ops of `spec` in order.

  Each piece is an op name, bare (``flip_lr``) or called with literal
  arguments (``resize(224, method='bicubic')``). The returned function drops
  '_rng' from its result, so seeds never leak into batches.

  Raises:
    ValueError: if a piece is not an op call, names an unknown op, or its
      arguments do not fit the op.
  """
  ops = [] if not spec.strip() else [
      _parse_op(piece, spec) for piece in spec.split("|")]

  def apply_all(features: Features) -> Features:
    for op in ops:
      features = op(features)
    return {k: v for k, v in features.items() if k != RNG_KEY}

  return apply_all


def _parse_op(piece: str, spec: str) -> Op:
  """Turns one piece of `spec`, e.g. ``resize(224)``, into a ready op."""
  piece = piece.strip()
  if not piece:
    raise ValueError(f"Malformed preprocessing spec {spec!r}: empty op "
                     "between '|' separators.")
  try:
    node = ast.parse(piece, mode="eval").body
  except SyntaxError:
    raise ValueError(f"Malformed preprocessing op {piece!r}: not a call "
                     "like name(arg, key=value).") from None
  if isinstance(node, ast.Name):
    name, args, kwargs = node.id, [], {}
  elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
    name = node.func.id
    try:
      args = [ast.literal_eval(a) for a in node.args]
      kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    except ValueError:
      raise ValueError(f"Malformed preprocessing op {piece!r}: arguments must "
                       "be Python literals.") from None
    if None in kwargs:
      raise ValueError(f"Malformed preprocessing op {piece!r}: '**' is not "
                       "supported.")
  else:
    raise ValueError(f"Malformed preprocessing op {piece!r}: expected a name "
                     "or a call like name(arg, key=value).")
  if name not in _REGISTRY:
    raise ValueError(f"Unknown preprocessing op {name!r} in {piece!r}; "
                     f"registered ops: {', '.join(registered_ops())}.")
  try:
    return _REGISTRY[name](*args, **kwargs)
  except TypeError as e:
    raise ValueError(f"Bad arguments in preprocessing op {piece!r}: {e}") from e


def add_example_seeds(ds: tf.data.Dataset, seed: int) -> tf.data.Dataset:
  """Attaches to element i of `ds` the random key fold_in([0, seed], i).

  The key depends only on `seed` and the element's position, so replaying
  the dataset (or skipping to a position on resume) gives identical
  augmentations. Apply it after `repeat()` so that each epoch's pass over an
  example draws fresh randomness.
  """
  base = tf.constant([0, seed], tf.int64)

  def attach(index, features):
    rng = tf.random.experimental.stateless_fold_in(base, index)
    return {**features, RNG_KEY: rng}

  return ds.enumerate().map(attach, num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=True)


def _take_seed(features: Features, op_name: str) -> tuple[Features, tf.Tensor]:
  """Splits '_rng' into a seed for this op and a fresh key for later ops.

  Consuming the key this way gives every random op in a spec (even the same
  op twice) its own independent seed.
  """
  if RNG_KEY not in features:
    raise ValueError(
        f"Preprocessing op {op_name!r} is random and needs a per-example seed "
        f"in features[{RNG_KEY!r}]; attach one with "
        "preprocess.add_example_seeds(ds, seed) before mapping.")
  next_rng, op_seed = tf.unstack(
      tf.random.experimental.stateless_split(features[RNG_KEY], num=2))
  return {**features, RNG_KEY: next_rng}, op_seed


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
  """Accepts a size as int (square) or (height, width)."""
  if isinstance(size, int):
    return size, size
  height, width = size
  return int(height), int(width)


def _resize(image: tf.Tensor, size: tuple[int, int] | tf.Tensor,
            method: str) -> tf.Tensor:
  """Resizes keeping `image`'s dtype, so uint8 stays uint8 for value_range."""
  resized = tf.image.resize(image, size, method=method)
  if image.dtype.is_integer:
    return tf.saturate_cast(tf.round(resized), image.dtype)
  return tf.cast(resized, image.dtype)


def _on_image(fn: Callable[[tf.Tensor], tf.Tensor]) -> Op:
  """Lifts an image -> image function to an op over features['image']."""

  def op(features: Features) -> Features:
    return {**features, "image": fn(features["image"])}

  return op


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

  return _on_image(fn)


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
  target = _hw(size)

  def op(features):
    features, seed = _take_seed(features, "decode_jpeg_and_inception_crop")
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

    is_jpeg = tf.strings.substr(data, 0, len(_JPEG_START)) == _JPEG_START
    image = tf.cond(is_jpeg, jpeg_window, whole_image_crop)
    return {**features, "image": _resize(image, target, method)}

  return op


def _inception_box(image_shape, seed, area_min, area_max):
  """Begin and size of a random box of `area_min`..`area_max` % of the image."""
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      image_shape, _WHOLE_IMAGE_BOX, seed=seed,
      area_range=(area_min / 100, area_max / 100),
      aspect_ratio_range=_INCEPTION_ASPECT_RATIO_RANGE,
      use_image_if_no_bounding_boxes=True)
  return begin, crop_size


@register("resize")
def resize(size: int | Sequence[int], method: str = "bilinear") -> Op:
  """Resizes 'image' to exactly `size`, ignoring its aspect ratio."""
  target = _hw(size)
  return _on_image(lambda image: _resize(image, target, method))


@register("resize_small")
def resize_small(smaller_size: int, method: str = "bilinear") -> Op:
  """Resizes 'image' so its shorter side is `smaller_size`, keeping aspect."""

  def fn(image):
    height_width = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = smaller_size / tf.reduce_min(height_width)
    target = tf.cast(tf.round(height_width * scale), tf.int32)
    return _resize(image, target, method)

  return _on_image(fn)


@register("central_crop")
def central_crop(size: int | Sequence[int]) -> Op:
  """Crops `size` from the centre of 'image' (evaluation-time crop)."""
  height, width = _hw(size)

  def fn(image):
    offset_y = (tf.shape(image)[0] - height) // 2
    offset_x = (tf.shape(image)[1] - width) // 2
    return tf.image.crop_to_bounding_box(image, offset_y, offset_x, height,
                                         width)

  return _on_image(fn)


@register("random_crop")
def random_crop(size: int | Sequence[int]) -> Op:
  """Crops `size` from a random position of 'image'."""
  height, width = _hw(size)

  def op(features):
    features, seed = _take_seed(features, "random_crop")
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
  target = _hw(size)

  def op(features):
    features, seed = _take_seed(features, "inception_crop")
    image = features["image"]
    begin, crop_size = _inception_box(tf.shape(image), seed, area_min, area_max)
    cropped = tf.slice(image, begin, crop_size)
    return {**features, "image": _resize(cropped, target, method)}

  return op


@register("flip_lr")
def flip_lr() -> Op:
  """Mirrors 'image' left-right with probability 1/2."""

  def op(features):
    features, seed = _take_seed(features, "flip_lr")
    image = tf.image.stateless_random_flip_left_right(features["image"], seed)
    return {**features, "image": image}

  return op


@register("value_range")
def value_range(vmin: float, vmax: float, in_min: float = 0,
                in_max: float = 255) -> Op:
  """Maps 'image' linearly from [in_min, in_max] to float32 [vmin, vmax]."""
  scale = (vmax - vmin) / (in_max - in_min)

  def fn(image):
    return (tf.cast(image, tf.float32) - in_min) * scale + vmin

  return _on_image(fn)


@register("onehot")
def onehot(num_classes: int, key: str = "label", key_result: str = "labels",
           on: float = 1.0, off: float = 0.0) -> Op:
  """Encodes `key` as float32 targets in `key_result`.

  A scalar label becomes a one-hot vector; a vector of labels becomes a
  multi-hot vector (each listed class on), so multi-label data works with
  the same spec.
  """

  def op(features):
    labels = features[key]
    if labels.shape.rank not in (0, 1):
      raise ValueError(f"onehot: features[{key!r}] must be a scalar or a "
                       f"vector of class ids, got shape {labels.shape}.")
    hot = tf.one_hot(labels, num_classes, dtype=tf.float32)
    if labels.shape.rank == 1:
      hot = tf.minimum(tf.reduce_sum(hot, axis=0), 1.0)
    return {**features, key_result: off + (on - off) * hot}

  return op


@register("keep")
def keep(*keys: str) -> Op:
  """Drops every feature but `keys` (and '_rng', which later ops may need)."""

  def op(features):
    missing = [k for k in keys if k not in features]
    if missing:
      raise KeyError(f"keep: no feature(s) {missing}; available: "
                     f"{sorted(features)}.")
    return {k: v for k, v in features.items() if k in keys or k == RNG_KEY}

  return op


# Encoded-image checks. Cheap (a few byte comparisons, no decoding), so the
# input pipeline can run them on every record, also on those a resumed run
# skips, and drop truncated or foreign files before they reach a decoder.
_SIGNATURES = {  # format: (leading bytes, trailing marker, bytes it may sit from the end)
    "jpeg": (_JPEG_START, b"\xff\xd9", 32),  # some writers pad after EOI
    "png": (b"\x89PNG\r\n\x1a\n", b"IEND", 8),  # IEND, then its 4-byte CRC
    "gif": (b"GIF8", b";", 0),
    "bmp": (b"BM", b"", 0),
}
_CHECK_PAD = b"\0" * 64


def is_decodable(data: tf.Tensor) -> tf.Tensor:
  """Whether encoded bytes look like a whole JPEG, PNG, GIF or BMP image.

  Checks the format's leading signature and its end marker (JPEG EOI, PNG
  IEND, GIF trailer), which catches truncated, empty and foreign files. A
  file with intact markers and a damaged body can still fail to decode;
  the pipeline skips those at decode time.
  """
  head = tf.strings.join([data, _CHECK_PAD])
  tail = tf.strings.join([_CHECK_PAD, data])
  valid = tf.constant(False)
  for leading, marker, slack in _SIGNATURES.values():
    ok = tf.strings.substr(head, 0, len(leading)) == leading
    if marker:
      ends = [tf.strings.substr(tail, -(len(marker) + offset), len(marker)) == marker
              for offset in range(slack + 1)]
      ok = ok & tf.reduce_any(tf.stack(ends))
    valid = valid | ok
  return valid


def blank_jpeg() -> tf.Tensor:
  """A small mid-grey JPEG, the stand-in for a corrupt image at eval time."""
  return tf.io.encode_jpeg(tf.fill([32, 32, 3], tf.constant(128, tf.uint8)))


# --------------------------------------------------------------------------
# RandAugment (Cubuk et al. 2020): `num_layers` ops drawn uniformly per
# example, each at strength `magnitude` on the paper's 0..10 scale, on uint8
# images. Geometric ops fill uncovered pixels with grey. Equalize and cutout
# of the paper's list are left out.
# --------------------------------------------------------------------------
_MAX_MAGNITUDE = 10.0
_FILL = 128


def _blend(image, degenerate, factor):
  """image + factor * (image - degenerate), as PIL's ImageEnhance does."""
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
  if not 0 <= magnitude <= _MAX_MAGNITUDE:
    raise ValueError(f"randaug: magnitude must be in 0..{_MAX_MAGNITUDE:g}, "
                     f"got {magnitude}.")
  ops = list(randaug_ops(magnitude).values())

  def op(features):
    features, seed = _take_seed(features, "randaug")
    image = features["image"]
    if image.dtype != tf.uint8:
      raise ValueError(f"randaug works on decoded uint8 images; got "
                       f"{image.dtype.name}. Put it after decode and before value_range.")
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
