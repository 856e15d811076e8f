"""General ops: value ranges, label targets and the features kept."""
import numpy as np
import tensorflow as tf

from vit_jax.data.preprocess.registry import RNG_KEY, Op, on_image, register


# ImageNet's per-channel pixel mean and std on [0, 1], the normalisation of
# most PyTorch-trained checkpoints (timm's IMAGENET_DEFAULT_MEAN/STD).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _per_channel(op_name: str, name: str, value) -> np.ndarray:
  """A number, or one per RGB channel, as float32 that broadcasts over an image."""
  values = list(value) if isinstance(value, (list, tuple)) else [value]
  if len(values) not in (1, 3) or not all(
      isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
    raise ValueError(f"{op_name}: {name} must be a number or 3 numbers, one per RGB "
                     f"channel; got {value!r}.")
  return np.asarray(values if len(values) == 3 else values[0], np.float32)


@register("value_range")
def value_range(vmin: float = -1, vmax: float = 1, in_min=0, in_max=255,
                clip_values: bool = False) -> Op:
  """Maps 'image' linearly from [in_min, in_max] to float32 [vmin, vmax].

  As big_vision's: [-1, 1] unless told, the input range a number or one per
  channel, and `clip_values` clamps what falls outside (after a bicubic
  resize of a float image, say).
  """
  if not isinstance(clip_values, bool):  # a string such as 'False' would clip
    raise ValueError(f"value_range: clip_values must be True or False, got "
                     f"{clip_values!r}.")
  low = _per_channel("value_range", "in_min", in_min)
  high = _per_channel("value_range", "in_max", in_max)
  if np.any(low == high):
    raise ValueError(f"value_range: in_min={in_min!r} and in_max={in_max!r} give an "
                     f"empty input range; they must differ (in every channel), e.g. "
                     f"in_min=0, in_max=255.")
  scale = (vmax - vmin) / (high - low)

  def fn(image):
    image = (tf.cast(image, tf.float32) - low) * scale + vmin
    return tf.clip_by_value(image, min(vmin, vmax), max(vmin, vmax)) if clip_values else image

  return on_image(fn)


@register("vgg_value_range")
def vgg_value_range(mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Op:
  """Per-channel (pixel / 255 - mean) / std: what timm's and Hugging Face's
  checkpoints state as `mean` and `std` (of [0, 1] pixels), ImageNet's unless told.

  big_vision's op of this name takes them times 255; this one takes them as
  the PyTorch libraries' configs write them, and refuses what looks like the
  other scale.
  """
  mean_values = _per_channel("vgg_value_range", "mean", mean)
  std_values = _per_channel("vgg_value_range", "std", std)
  if np.any(mean_values > 1) or np.any(std_values > 1):
    raise ValueError(f"vgg_value_range: mean={mean!r}, std={std!r} look like values "
                     f"of 0..255 pixels; give them of [0, 1] pixels, as timm's "
                     f"pretrained_cfg and Hugging Face's image_mean/image_std do "
                     f"(e.g. mean={IMAGENET_MEAN}, std={IMAGENET_STD}).")
  if np.any(std_values <= 0):
    raise ValueError(f"vgg_value_range: std must be above 0, got {std!r}.")
  return on_image(lambda image: (tf.cast(image, tf.float32) / 255 - mean_values) / std_values)


@register("onehot")
def onehot(num_classes: int, key: str = "label", key_result: str = "labels",
           on: float = 1.0, off: float = 0.0) -> Op:
  """Encodes `key` as float32 targets in `key_result`.

  A scalar label becomes a one-hot vector; a vector of labels becomes a
  multi-hot vector (each listed class on), so multi-label data works with
  the same spec.
  """
  if num_classes < 1:
    raise ValueError(f"onehot: num_classes must be at least 1, got {num_classes}.")

  def op(features):
    if key not in features:
      raise KeyError(f"onehot: no feature {key!r} to encode; available: "
                     f"{sorted(features)}. Name it with key=.")
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
