"""Examples and a runner shared by the preprocessing op tests."""
import numpy as np
import tensorflow as tf

from vit_jax.data import preprocess

MODES = ["eager", "dataset"]


def run(spec: str, features: dict, mode: str) -> dict:
  """Applies `spec` to one example, eagerly or as a tf.data map (graph)."""
  fn = preprocess.parse(spec)
  if mode == "eager":
    out = fn(features)
  else:
    out = next(iter(tf.data.Dataset.from_tensors(features).map(fn)))
  return {k: v.numpy() for k, v in out.items()}


def random_image(height=20, width=24, channels=3, seed=0) -> np.ndarray:
  return np.random.RandomState(seed).randint(
      0, 256, (height, width, channels)).astype(np.uint8)


def example(image, seed=(1, 2), **extra) -> dict:
  """An example as the input pipeline gives it: image, label and '_rng'."""
  return {"image": tf.constant(image), "label": tf.constant(3, tf.int64),
          "_rng": tf.constant(seed, tf.int64), **extra}


def jpeg_example(seed=(1, 2)) -> dict:
  return example(tf.io.encode_jpeg(random_image(32, 40)), seed)
