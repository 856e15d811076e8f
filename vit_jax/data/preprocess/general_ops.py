"""General ops: value ranges, label targets and the features kept."""
import tensorflow as tf

from vit_jax.data.preprocess.registry import RNG_KEY, Op, on_image, register


@register("value_range")
def value_range(vmin: float, vmax: float, in_min: float = 0,
                in_max: float = 255) -> Op:
  """Maps 'image' linearly from [in_min, in_max] to float32 [vmin, vmax]."""
  if in_max == in_min:
    raise ValueError(f"value_range: in_min and in_max are both {in_min}; the "
                     f"input range must not be empty (e.g. in_min=0, in_max=255).")
  scale = (vmax - vmin) / (in_max - in_min)

  def fn(image):
    return (tf.cast(image, tf.float32) - in_min) * scale + vmin

  return on_image(fn)


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
