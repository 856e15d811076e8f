"""Fashion-MNIST as a TFDS dataset built from local IDX files, never downloaded.

tfds' own 'fashion_mnist' fetches the files over the network; machines
without network access get them from Debian's `dataset-fashion-mnist`
package (or a copy) instead, so this builder reads them from `manual_dir`.
"""
import dataclasses
import gzip
import inspect
import os

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

DEFAULT_MANUAL_DIR = "/usr/share/datasets/fashion-mnist"

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
               "Shirt", "Sneaker", "Bag", "Ankle boot")

# Per split: (images file, labels file), the names the upstream release uses.
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

IMAGE_SIZE = 28

# IDX magic numbers: two zero bytes, the element type (0x08 = uint8), and the
# number of dimensions.
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801

_FILE_NAMES = tuple(name for pair in SPLIT_FILES.values() for name in pair)


def read_idx(path: os.PathLike | str, magic: int) -> np.ndarray:
  """Reads a gzipped uint8 IDX file whose header must start with `magic`."""
  try:
    with gzip.open(path, "rb") as f:
      data = f.read()
  except (gzip.BadGzipFile, EOFError) as e:
    raise ValueError(f"{path} is not a complete gzip file: {e}") from e
  found = int.from_bytes(data[:4], "big")
  if found != magic:
    raise ValueError(f"{path} is not an IDX file of the expected kind: magic "
                     f"number {found:#010x}, expected {magic:#010x}.")
  num_dims = magic & 0xFF
  header_size = 4 + 4 * num_dims
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big")
                for i in range(num_dims))
  if len(data) - header_size != int(np.prod(shape)):
    raise ValueError(f"{path} is truncated or padded: header says shape "
                     f"{shape}, found {len(data) - header_size} values.")
  return np.frombuffer(data, np.uint8, offset=header_size).reshape(shape)


def read_split(images_path: os.PathLike | str,
               labels_path: os.PathLike | str) -> tuple[np.ndarray, np.ndarray]:
  """One split's images (N, 28, 28) and labels (N,), uint8, in file order."""
  images = read_idx(images_path, _IMAGES_MAGIC)
  labels = read_idx(labels_path, _LABELS_MAGIC)
  if len(images) != len(labels):
    raise ValueError(f"{images_path} has {len(images)} images but "
                     f"{labels_path} has {len(labels)} labels.")
  return images, labels


def check_manual_files(manual_dir: os.PathLike | str) -> None:
  """Raises FileNotFoundError, naming the path, for a missing IDX file."""
  for name in _FILE_NAMES:
    path = epath.Path(manual_dir) / name
    if not path.exists():
      raise FileNotFoundError(
          f"Fashion-MNIST file {path} is missing: run `apt-get install "
          f"dataset-fashion-mnist` (installs the files into "
          f"{DEFAULT_MANUAL_DIR}) or copy {', '.join(_FILE_NAMES)} into "
          f"{manual_dir}.")


class FashionMnistLocal(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST: 60,000 train, 10,000 test 28x28 grey images, 10 classes."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Built from the upstream IDX files."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Run `apt-get install dataset-fashion-mnist`, which installs the files "
      f"into {DEFAULT_MANUAL_DIR} (the default manual_dir), or copy the four "
      f"files {', '.join(_FILE_NAMES)} into manual_dir.")

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    """The builder's module file, where tfds looks for optional metadata files.

    tfds' own lookup uses the `importlib_resources` backport, which it does
    not install on Python >= 3.9 (tensorflow/datasets#11212), so it would
    fail for any builder that lives in a package. The class's own module,
    not this one, so that subclasses (fashion_mnist_halves) get theirs.
    """
    return epath.Path(inspect.getfile(cls))

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="Zalando's Fashion-MNIST article images, read from local "
                    "IDX files.",
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 1)),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=("image", "label"),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    )

  def download_and_prepare(
      self, *, download_config: tfds.download.DownloadConfig | None = None,
      **kwargs) -> None:
    """Prepares from local files only, defaulting to DEFAULT_MANUAL_DIR.

    The default lets the Debian package work without any flags. The files are
    checked before tfds starts writing, so a missing one is reported by path.
    """
    config = download_config or tfds.download.DownloadConfig()
    config = dataclasses.replace(
        config, manual_dir=config.manual_dir or DEFAULT_MANUAL_DIR,
        try_download_gcs=False)
    if not self.is_prepared():
      check_manual_files(config.manual_dir)
    super().download_and_prepare(download_config=config, **kwargs)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = dl_manager.manual_dir
    return {
        split: self._generate_examples(manual_dir / images, manual_dir / labels)
        for split, (images, labels) in SPLIT_FILES.items()
    }

  def _generate_examples(self, images_path: epath.Path,
                         labels_path: epath.Path):
    images, labels = read_split(images_path, labels_path)
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {"image": image[..., np.newaxis], "label": int(label)}
