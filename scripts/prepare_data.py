"""Builds this project's offline TFDS datasets into a data_dir, never downloading.

Training reads prepared TFDS records; this prepares them once, up front, so
that a training job never stalls or fails on dataset generation. The local
builders (vit_jax/data/builders/):

  fashion_mnist_local          Fashion-MNIST, 60,000 train, 10,000 test
  fashion_mnist_halves/first5  its classes 0-4, 30,000 train, 5,000 test
  fashion_mnist_halves/last5   its classes 5-9 as labels 0-4, the same sizes
  sklearn_digits               scikit-learn's 8x8 digits, 1,297 train, 500 test

The Fashion-MNIST ones read Debian's IDX files (`apt-get install
dataset-fashion-mnist`) from --manual_dir; sklearn_digits reads the file
inside the scikit-learn wheel and ignores --manual_dir.

  python scripts/prepare_data.py --data_dir=data/tfds \
      --dataset=fashion_mnist_local,fashion_mnist_halves/first5,sklearn_digits \
      [--manual_dir=/usr/share/datasets/fashion-mnist]

A dataset already prepared in --data_dir is left as it is. Source files that
are missing end it with one line naming them.
"""
from absl import app, flags

from vit_jax.runtime import cli

FLAGS = cli.command_flags(__name__)
_DATASET = flags.DEFINE_list(
    "dataset", ["fashion_mnist_local"],
    "Registered TFDS names of the datasets to build, comma-separated; a "
    "builder config after a slash (fashion_mnist_halves/first5).",
    flag_values=FLAGS)
_DATA_DIR = flags.DEFINE_string("data_dir", None,
                                "Directory the TFDS records are written to.",
                                required=True, flag_values=FLAGS)
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None,
    "Directory holding the source files; defaults to each builder's own "
    "default (for the Fashion-MNIST ones, where Debian installs them). "
    "Builders that need no files (sklearn_digits) ignore it.",
    flag_values=FLAGS)


# This project's offline builders, the only ones this script builds.
_OFFLINE = ("this project's offline ones are in vit_jax/data/builders/: "
            "fashion_mnist_local, fashion_mnist_halves/first5, "
            "fashion_mnist_halves/last5, sklearn_digits")


def offline_builder(tfds, builders, name, data_dir):
  """The builder of ``--dataset=name`` (NAME[/CONFIG][:VERSION]), refused with
  one line where ``name`` is no offline builder of this project, or names a
  config or version it does not have (tfds's own errors are tracebacks)."""
  try:
    dataset, kwargs = tfds.core.naming.parse_builder_name_kwargs(name, data_dir=data_dir)
  except ValueError:
    raise app.UsageError(f"--dataset={name} is no dataset name; the form is "
                         f"NAME[/CONFIG][:VERSION] ({_OFFLINE})") from None
  try:
    builder_cls = tfds.builder_cls(str(dataset))
  except tfds.core.registered.DatasetNotFoundError:
    raise app.UsageError(
        f"--dataset={name} is not a registered tfds dataset ({_OFFLINE})") from None
  # Any other tfds builder (cifar10, say) would download its files here,
  # which this script promises never to do.
  if not builder_cls.__module__.startswith(builders.__name__):
    raise app.UsageError(
        f"--dataset={name} is a tfds dataset that downloads its files; this "
        f"script builds none such ({_OFFLINE}). Prepare it with "
        f"`tfds build {name} --data_dir={data_dir}` on a machine with "
        f"network access")
  extra = sorted(set(kwargs) - {"config", "version", "data_dir"})
  if extra:
    raise app.UsageError(f"--dataset={name} passes builder arguments "
                         f"({', '.join(extra)}); the form is NAME[/CONFIG][:VERSION] "
                         f"({_OFFLINE})")
  configs = [config.name for config in builder_cls.BUILDER_CONFIGS]
  config = kwargs.get("config")
  if config is not None and config not in configs:
    valid = (", ".join(f"{dataset}/{c}" for c in configs) if configs
             else f"{dataset} (it has no builder configs)")
    raise app.UsageError(f"--dataset={name}: {dataset} has no builder config "
                         f"{config!r}; valid: {valid}")
  version = kwargs.pop("version", None)
  builder = tfds.builder(str(dataset), **kwargs)
  if (version not in (None, "experimental_latest")
      and not any(v.match(version) for v in builder.versions)):
    raise app.UsageError(
        f"--dataset={name}: {dataset} has no version {version}; valid: "
        f"{', '.join(str(v) for v in builder.versions)}; without :VERSION it "
        f"builds {builder.version}")
  return builder if version is None else tfds.builder(name, data_dir=data_dir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # --dataset= (absl's empty list) would build nothing, and say nothing of it.
  if not _DATASET.value or not all(name.strip() for name in _DATASET.value):
    raise app.UsageError(f"--dataset={','.join(_DATASET.value)} is empty or holds an "
                         f"empty name; name the datasets to build, comma-separated "
                         f"({_OFFLINE})")
  cli.check_no_file_in_the_way("data_dir", _DATA_DIR.value,
                                  "it is the directory the TFDS records are written "
                                  "to (made if need be)")
  import tensorflow_datasets as tfds  # after flag parsing: --help is fast

  from vit_jax.data import builders  # noqa: F401  (registers the local builders)

  builders_by_name = {}
  for name in _DATASET.value:  # every name checked before anything is built
    builders_by_name[name] = offline_builder(tfds, builders, name, _DATA_DIR.value)
  config = tfds.download.DownloadConfig(manual_dir=_MANUAL_DIR.value,
                                        try_download_gcs=False)
  for name, builder in builders_by_name.items():
    if builder.is_prepared():
      print(f"{name} is already prepared in {builder.data_dir}.")
      continue
    builder.download_and_prepare(download_config=config)
    print(f"Prepared {name} in {builder.data_dir}: "
          + ", ".join(f"{split} {info.num_examples}"
                      for split, info in builder.info.splits.items()))


if __name__ == "__main__":
  cli.run(main)
