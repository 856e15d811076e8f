"""scikit-learn's 8x8 handwritten digits as a TFDS dataset, never downloaded.

`sklearn.datasets.load_digits` reads the 1,797 images from a file inside the
scikit-learn wheel (the test part of UCI's optdigits), so preparing needs
neither network access nor a manual_dir. Pixels are counts 0..16 of the
4x4 blocks of the original 32x32 bitmaps; they are stored as uint8 0..255,
`round(v * 255 / 16)` (numpy's rounding: v = 8, the only half, gives 128).

Splits, in sklearn's order (records are not shuffled):

  train  the first 1,297 images (128-132 of each digit)
  test   the last 500 (46-51 of each digit)

A contiguous split rather than a seeded, stratified one: it needs no seed or
sampling code to reproduce (`load_digits().images[1297:]` is the test set),
and sklearn's file already cycles through the digits, so both parts come out
nearly balanced anyway. It is what sklearn's own digits example does
(train_test_split(shuffle=False)).
"""
import dataclasses
import inspect

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

NUM_IMAGES = 1_797
NUM_TRAIN = 1_297  # the test split is the remaining 500
IMAGE_SIZE = 8
MAX_VALUE = 16  # load_digits' pixel values are 0..16
CLASS_NAMES = tuple(str(digit) for digit in range(10))


def load_images() -> tuple[np.ndarray, np.ndarray]:
  """All 1,797 images (N, 8, 8) as uint8 0..255 and their labels, in sklearn's order."""
  try:
    from sklearn import datasets  # imported here: registering needs no sklearn
  except ImportError as e:
    raise ImportError("sklearn_digits reads its images from scikit-learn: "
                      "`pip install scikit-learn` (setup.py installs it)") from e
  digits = datasets.load_digits()
  images = np.round(digits.images * (255 / MAX_VALUE)).astype(np.uint8)
  if images.shape != (NUM_IMAGES, IMAGE_SIZE, IMAGE_SIZE):
    raise ValueError(f"sklearn's load_digits gave images of shape "
                     f"{images.shape}, expected ({NUM_IMAGES}, 8, 8).")
  return images, digits.target.astype(np.int64)


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
  """Handwritten digits: 1,297 train, 500 test 8x8 grey images, 10 classes."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "sklearn.datasets.load_digits, split 1,297/500 "
                            "in its order."}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """This module's file (see FashionMnistLocal.code_path for why)."""
    return epath.Path(inspect.getfile(cls))

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Optical recognition of handwritten digits (UCI optdigits, "
                    "test part) as bundled with scikit-learn: 8x8 blocks "
                    "counts scaled to 0..255.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 1)),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=("image", "label"),
        homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html"
                 "#optical-recognition-of-handwritten-digits-dataset",
        # sklearn's order, so that the splits and their slices are the images
        # at those positions of load_digits().
        disable_shuffling=True,
    )

  def download_and_prepare(
      self, *, download_config: tfds.download.DownloadConfig | None = None,
      **kwargs) -> None:
    """Prepares from scikit-learn's bundled file; never asks tfds' servers."""
    config = download_config or tfds.download.DownloadConfig()
    config = dataclasses.replace(config, try_download_gcs=False)
    super().download_and_prepare(download_config=config, **kwargs)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # nothing to download or read from manual_dir
    images, labels = load_images()
    return {
        "train": self._generate_examples(images, labels, range(NUM_TRAIN)),
        "test": self._generate_examples(images, labels,
                                        range(NUM_TRAIN, NUM_IMAGES)),
    }

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray,
                         indices: range):
    for index in indices:  # the key is the image's index in load_digits()
      yield index, {"image": images[index][..., np.newaxis],
                    "label": int(labels[index])}
