"""Builds a local-files TFDS dataset into a data_dir, never downloading.

Training reads prepared TFDS records; this prepares them once, up front, so
that a training job never stalls or fails on dataset generation.

  python scripts/prepare_data.py --dataset=fashion_mnist_local \
      --data_dir=data/tfds [--manual_dir=/usr/share/datasets/fashion-mnist]

Source files that are missing end it with one line naming them.
"""
from absl import app, flags

from vit_jax.runtime import cli

FLAGS = cli.command_flags(__name__)
_DATASET = flags.DEFINE_string("dataset", "fashion_mnist_local",
                               "Registered TFDS name of the dataset to build.",
                               flag_values=FLAGS)
_DATA_DIR = flags.DEFINE_string("data_dir", None,
                                "Directory the TFDS records are written to.",
                                required=True, flag_values=FLAGS)
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None,
    "Directory holding the source files; defaults to the builder's own "
    "default (for fashion_mnist_local, where Debian installs them).",
    flag_values=FLAGS)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import tensorflow_datasets as tfds  # after flag parsing: --help is fast

  from vit_jax.data import builders  # noqa: F401  (registers the local builders)

  try:
    builder = tfds.builder(_DATASET.value, data_dir=_DATA_DIR.value)
  except tfds.core.registered.DatasetNotFoundError:
    raise app.UsageError(f"--dataset={_DATASET.value} is not a registered tfds "
                         "dataset (this project's offline ones are in "
                         "vit_jax/data/builders/, e.g. fashion_mnist_local)") from None
  if builder.is_prepared():
    print(f"{builder.name} is already prepared in {builder.data_dir}.")
    return
  config = tfds.download.DownloadConfig(manual_dir=_MANUAL_DIR.value,
                                        try_download_gcs=False)
  builder.download_and_prepare(download_config=config)
  print(f"Prepared {builder.name} in {builder.data_dir}: "
        + ", ".join(f"{name} {split.num_examples}"
                    for name, split in builder.info.splits.items()))


if __name__ == "__main__":
  cli.run(main)
