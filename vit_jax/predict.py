r"""Prints the top-5 classes of image files, from a run or a checkpoint.

  python -m vit_jax.predict --workdir=runs/demo/finetune shirt.png boot.jpg
  python -m vit_jax.predict --checkpoint=ViT-B_16_cifar10.npz \
      --config=configs/finetune.py:variant=B/16,data=cifar10 cat.jpg

Images go through the evaluation preprocessing of the config (`pp.eval`), so
they reach the model exactly as the run's eval images did. Classes are named
by the dataset's tfds `ClassLabel` where it has names; the scores are the
probabilities of the run's loss (softmax or sigmoid).
"""
import argparse
import importlib.util
import os
import re

# TensorFlow only decodes images here; its C++ start-up chatter is noise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402  (after the environment above)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from vit_jax.data import builders  # noqa: E402,F401  (registers the offline builders)
from vit_jax.data import preprocess, sources  # noqa: E402
from vit_jax.inference import restore  # noqa: E402
from vit_jax.train import losses, workdir_files  # noqa: E402

TOP_K = 5


def class_names(data_config):
  """Class names by index, or None where the data has none.

  For tfds, the dataset's ClassLabel: only its metadata is read, so names are
  found for a registered dataset even where its data is not prepared. For
  TFRecords, the manifest's ``classes``; for image folders, the class
  folders' names (both need the data).
  """
  if data_config.get("source", "tfds") != "tfds":
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
      # TF wraps the reason: "{{function_node ...}} REASON [Op:DecodeImage] ...".
      reason = re.sub(r"^\{\{.*?\}\}\s*|\s*\[Op:.*$", "", e.message.splitlines()[0])
      raise ValueError(f"{path}: cannot read it as an image (PNG, JPEG, GIF, "
                       f"BMP): {reason}") from None
  return np.stack(images).astype(np.float32)


def config_from_file(spec):
  """The config of ``configs/X.py:args``, or of a run's config.json."""
  if spec.endswith(".json"):
    return workdir_files.read_config(spec)
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise FileNotFoundError(f"--config={spec}: {path} does not exist")
  module_spec = importlib.util.spec_from_file_location("config_file", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg or None)


def top_classes(probabilities, names, k=TOP_K):
  """[(class name or index, probability)] of the ``k`` most probable classes."""
  best = np.argsort(-probabilities)[:k]
  return [(names[i] if names else str(i), float(probabilities[i])) for i in best]


def main(argv=None):
  parser = argparse.ArgumentParser(
      prog="python -m vit_jax.predict", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, GIF, BMP)")
  parser.add_argument("--workdir",
                      help="a run's workdir: its config and latest checkpoint")
  parser.add_argument("--checkpoint", help="parameters to use instead: a .npz, a "
                      "workdir or a checkpoint step directory")
  parser.add_argument("--config", help="without --workdir: configs/X.py:args or a "
                      "run's config.json")
  args = parser.parse_args(argv)
  if bool(args.workdir) == bool(args.config):
    parser.error("give either --workdir, or --checkpoint with --config")
  if args.config and not args.checkpoint:
    parser.error("--config needs --checkpoint")

  if args.workdir:
    config = workdir_files.read_config(args.workdir)
  else:
    config = config_from_file(args.config)
  model, params = restore.restore_model(config, args.checkpoint or args.workdir)
  try:
    images = load_images(args.images, config.pp.eval)
  except ValueError as e:
    parser.error(str(e))
  apply = jax.jit(model.apply, static_argnames="train")
  logits = apply({"params": params}, images, train=False)
  probabilities = np.asarray(losses.PROBABILITIES[config.loss](logits))
  names = class_names(config.data)
  for path, image_probabilities in zip(args.images, probabilities):
    print(path)
    for name, probability in top_classes(image_probabilities, names):
      print(f"  {100 * probability:6.2f}%  {name}")


if __name__ == "__main__":
  main()
