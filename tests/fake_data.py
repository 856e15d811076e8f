"""Tiny Fashion-MNIST look-alikes, written as IDX files and built with tfds.

The images are learnable on purpose: class k has a bright bar at rows
2k..2k+2 over faint noise, so a tiny ViT reaches high accuracy in a few dozen
steps and tests can assert on accuracy rather than only on shapes.
"""
import gzip
import pathlib

import numpy as np
import tensorflow_datasets as tfds

import vit_jax.data.builders  # noqa: F401 (registers the builders)
from vit_jax.data.builders import fashion_mnist_local


def write_idx(path, array, magic):
  """Writes ``array`` (uint8) as a gzipped IDX file with the given magic."""
  header = magic.to_bytes(4, "big") + b"".join(
      d.to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def bar_images(labels, rng):
  """28x28 uint8 images whose bar position encodes the label."""
  images = rng.randint(0, 40, (len(labels), 28, 28))
  for image, label in zip(images, labels):
    image[4 + 2 * label: 6 + 2 * label, 2:26] = 255
  return images.astype(np.uint8)


def write_fashion_mnist_files(manual_dir, *, num_train, num_test,
                              learnable=True, seed=0):
  """Writes the four IDX files; returns {split: (images, labels)}."""
  rng = np.random.RandomState(seed)
  arrays = {}
  for split, count in (("train", num_train), ("test", num_test)):
    labels = rng.randint(0, 10, count).astype(np.uint8)
    images = (bar_images(labels, rng) if learnable
              else rng.randint(0, 256, (count, 28, 28)).astype(np.uint8))
    images_name, labels_name = fashion_mnist_local.SPLIT_FILES[split]
    write_idx(pathlib.Path(manual_dir) / images_name, images, 0x803)
    write_idx(pathlib.Path(manual_dir) / labels_name, labels, 0x801)
    arrays[split] = (images, labels)
  return arrays


def build_fashion_mnist(manual_dir, data_dir):
  builder = tfds.builder("fashion_mnist_local", data_dir=str(data_dir))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder
