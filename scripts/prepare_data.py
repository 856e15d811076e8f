"""Builds a local-files TFDS dataset into a data_dir, never downloading.

Training reads prepared TFDS records; this prepares them once, up front, so
that a training job never stalls or fails on dataset generation.

  python scripts/prepare_data.py --dataset=fashion_mnist_local \
      --data_dir=data/tfds [--manual_dir=/usr/share/datasets/fashion-mnist]
"""
import pathlib
import sys

from absl import app
from absl import flags
import tensorflow_datasets as tfds

# Lets the script run from a checkout where vit_jax is not pip-installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import vit_jax.data.builders  # noqa: E402,F401 (registers the local builders)

_DATASET = flags.DEFINE_string("dataset", "fashion_mnist_local",
                               "Registered TFDS name of the dataset to build.")
_DATA_DIR = flags.DEFINE_string("data_dir", None,
                                "Directory the TFDS records are written to.",
                                required=True)
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None,
    "Directory holding the source files; defaults to the builder's own "
    "default (for fashion_mnist_local, where Debian installs them).")


def main(argv: list[str]) -> None:
  del argv  # No positional arguments.
  builder = tfds.builder(_DATASET.value, data_dir=_DATA_DIR.value)
  if builder.is_prepared():
    print(f"{builder.name} is already prepared in {builder.data_dir}.")
    return
  config = tfds.download.DownloadConfig(manual_dir=_MANUAL_DIR.value,
                                        try_download_gcs=False)
  try:
    builder.download_and_prepare(download_config=config)
  except FileNotFoundError as e:
    sys.exit(f"prepare_data: {e}")
  print(f"Prepared {builder.name} in {builder.data_dir}: "
        + ", ".join(f"{name} {split.num_examples}"
                    for name, split in builder.info.splits.items()))


if __name__ == "__main__":
  app.run(main)
