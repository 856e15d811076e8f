"""Which label a tfds dataset's examples carry: a feature, or one derived from others.

`config.data.label` names a feature that holds the class (``label``,
``label_azimuth``, ImageNet ReaL's ``real_label``: a list of classes per
image) or a label of `DERIVED`, computed from other features, as VTAB's
structured tasks define theirs. The source (`sources.TfdsSource`) reads the
image and what the label needs, nothing else.

Each rule follows google-research/task_adaptation, the code that defines
VTAB-1k (``task_adaptation/data/*.py``, commit ed9b417):

- ``clevr_count_all`` (clevr.py, ``_count_preprocess_fn``): the number of
  objects minus 3. A CLEVR scene holds 3 to 10 objects: 8 classes.
- ``clevr_closest_object_distance`` (clevr.py,
  ``_closest_object_preprocess_fn``): the depth (the third pixel coordinate)
  of the nearest object, in the bins between 0, 8, 8.5, 9, 9.5, 10 and 100:
  6 classes.
- ``dsprites_x_position_16``, ``dsprites_orientation_16`` (dsprites.py, with
  ``num_classes=16``): the 32 x positions and 40 orientations, neighbouring
  values grouped into 16 classes: ``floor(value / (32 / 16))`` and
  ``floor(value / (40 / 16))``.
- ``kitti_closest_vehicle_distance`` (kitti.py,
  ``_closest_vehicle_distance_pp``): the depth (location z, in metres) of the
  nearest Car, Van or Truck (types 0-2), in the bins between -100, 8, 20 and
  999; a scene without a vehicle counts as 1000 m. 4 classes: under 8 m, 8 to
  20 m, over 20 m, no vehicle.

SmallNORB's azimuth (18 classes) and elevation (9) are features of their
own (``label_azimuth``, ``label_elevation``), as in smallnorb.py.
"""
from collections.abc import Callable
from typing import NamedTuple

import tensorflow as tf


class Label(NamedTuple):
  """How a dataset's label is read: the features it needs and how it is computed.

  ``reads`` names those features as `tfds.decode.PartialDecoding` takes
  them (``{"objects": {"size": True}}``); ``num_classes`` is None where the
  feature does not say; ``compute`` maps the decoded features to the label.
  """
  reads: dict
  num_classes: int | None
  compute: Callable[[dict], tf.Tensor]


def _bin(value, edges):
  """The bin of ``value``: the index of the last of the sorted ``edges`` below it.

  task_adaptation's ``reduce_max(where(edges - value < 0))``; -1 where no
  edge lies below (which the source's label check then refuses).
  """
  below = tf.cast(tf.constant(edges, value.dtype) < value, tf.int64)
  return tf.reduce_sum(below) - 1


CLEVR_DISTANCE_EDGES = (0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0)
KITTI_DISTANCE_EDGES = (-100.0, 8.0, 20.0, 999.0)
# tfds's kitti object types, in order: Car, Van, Truck, then the others.
KITTI_VEHICLE_TYPES = 3
_NO_VEHICLE_DEPTH = 1000.0


def clevr_count_all(features):
  return tf.size(features["objects"]["size"], out_type=tf.int64) - 3


def clevr_closest_object_distance(features):
  depth = features["objects"]["pixel_coords"][:, 2]
  return _bin(tf.reduce_min(depth), CLEVR_DISTANCE_EDGES)


def _grouped(feature, values, num_classes):
  """A rule: ``features[feature]``, one of ``values`` ids, in ``num_classes`` groups."""
  factor = values / num_classes

  def compute(features):
    value = tf.cast(features[feature], tf.float32)
    return tf.cast(tf.math.floordiv(value, factor), tf.int64)
  return compute


def kitti_closest_vehicle_distance(features):
  objects = features["objects"]
  vehicle_depth = tf.boolean_mask(objects["location"][:, 2],
                                  objects["type"] < KITTI_VEHICLE_TYPES)
  nearest = tf.reduce_min(tf.concat([vehicle_depth, [_NO_VEHICLE_DEPTH]], axis=0))
  return _bin(nearest, KITTI_DISTANCE_EDGES)


DERIVED = {
    "clevr_count_all": Label({"objects": {"size": True}}, 8, clevr_count_all),
    "clevr_closest_object_distance": Label(
        {"objects": {"pixel_coords": True}}, 6, clevr_closest_object_distance),
    "dsprites_x_position_16": Label(
        {"label_x_position": True}, 16, _grouped("label_x_position", 32, 16)),
    "dsprites_orientation_16": Label(
        {"label_orientation": True}, 16, _grouped("label_orientation", 40, 16)),
    "kitti_closest_vehicle_distance": Label(
        {"objects": {"type": True, "location": True}}, 4,
        kitti_closest_vehicle_distance),
}


def for_dataset(name, features, dataset):
  """The `Label` that ``name`` (config.data.label) is in tfds ``features``.

  A name that is neither a feature of ``dataset`` nor a derived label whose
  features it has is a ValueError listing both kinds.
  """
  if name in DERIVED:
    label = DERIVED[name]
    missing = sorted(set(label.reads) - set(features))
    if missing:
      raise ValueError(f"config.data.label={name!r} is derived from {missing}, "
                       f"which dataset {dataset!r} does not have")
    return label
  if name not in features:
    raise ValueError(
        f"config.data.label={name!r}: dataset {dataset!r} has no such feature; "
        f"its features: {', '.join(sorted(features))}; derived labels: "
        f"{', '.join(sorted(DERIVED))}")
  return Label({name: True}, getattr(features[name], "num_classes", None),
               lambda decoded: decoded[name])
