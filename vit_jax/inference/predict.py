"""Class probabilities of image files, and the names of the classes.

Images go through the evaluation preprocessing of the config (`pp.eval`), so
they reach the model exactly as the run's eval images did. Classes are named
by the dataset's tfds `ClassLabel` where it has names; the probabilities are
those of the run's loss (softmax or sigmoid). `python -m vit_jax.predict` is
the command line.
"""
import importlib.util
import os

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vit_jax.data import builders  # noqa: F401  (registers the offline builders)
from vit_jax.data import config_fields, preprocess, sources, tf_errors
from vit_jax.train import losses, workdir_files

TOP_K = 5


def class_names(data_config):
  """Class names by index, or None where the data has none.

  For tfds, the dataset's ClassLabel: only its metadata is read, so names are
  found for a registered dataset even where its data is not prepared. For
  TFRecords, the manifest's ``classes``; for image folders, the class
  folders' names (both need the data).
  """
  if data_config.get("source", config_fields.DEFAULT_SOURCE) != "tfds":
    try:
      return sources.get_source(data_config).class_names
    except sources.DatasetNotPreparedError:
      return None
  try:
    builder = tfds.builder(data_config.name, data_dir=data_config.data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    return None
  label = dict(builder.info.features.items()).get("label")
  return list(label.names) if isinstance(label, tfds.features.ClassLabel) else None


def preprocess_image(pp, image):
  """One image (encoded bytes or uint8 HWC) through the ops ``pp`` of an eval spec.

  Eval specs end with label ops (e.g. ``onehot(10)``); a placeholder label
  lets the spec run unchanged, and only the image is kept.
  """
  return pp({"image": image, "label": tf.constant(0, tf.int64)})["image"].numpy()


def load_images(paths, pp_spec):
  """Image files as one float32 batch, preprocessed by ``pp_spec``.

  A file that is missing or not an image is a ValueError naming it.
  """
  pp = preprocess.parse(pp_spec)
  images = []
  for path in paths:
    try:
      images.append(preprocess_image(pp, tf.io.read_file(path)))
    except tf.errors.OpError as e:
      raise ValueError(f"{path}: cannot read it as an image (PNG, JPEG, GIF, "
                       f"BMP): {tf_errors.reason(e)}") from None
  return np.stack(images).astype(np.float32)


def config_from_file(spec):
  """The config of ``configs/X.py:args``, or of a run's config.json."""
  if spec.endswith(".json"):
    return workdir_files.read_config(spec)
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise FileNotFoundError(f"--config={spec}: {path} does not exist")
  if not path.endswith(".py"):
    raise ValueError(f"--config={spec}: {path} is neither a config file "
                     f"(configs/X.py[:args]) nor a run's config.json")
  module_spec = importlib.util.spec_from_file_location("config_file", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def class_probabilities(config, model, params, paths):
  """(len(paths), num_classes) class probabilities of the image files ``paths``."""
  images = load_images(paths, config.pp.eval)
  apply = jax.jit(model.apply, static_argnames="train")
  logits = apply({"params": params}, images, train=False)
  return np.asarray(losses.PROBABILITIES[config.loss](logits))


def top_classes(probabilities, names, k=TOP_K):
  """[(class name or index, probability)] of the ``k`` most probable classes.

  ``names`` may name fewer classes than the model has (a data source may);
  the others go by their index.
  """
  best = np.argsort(-probabilities)[:k]
  return [(names[i] if names and i < len(names) else str(i), float(probabilities[i]))
          for i in best]
