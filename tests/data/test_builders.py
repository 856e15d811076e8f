"""Tests for the demo's transfer datasets: Fashion-MNIST's halves and sklearn's digits.

The halves are built from small synthetic IDX files (the real files take
seconds a half); the digits from scikit-learn's own bundled file, as users do.
"""
import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

import vit_jax.data.builders  # noqa: F401 (registers the builders)
from configs import common
from scripts import prepare_data
from vit_jax.runtime import cli
from vit_jax.data.builders import fashion_mnist_local, sklearn_digits

import fake_data

NUM_TRAIN, NUM_TEST = 60, 25
HALVES = {"first5": (0, 1, 2, 3, 4), "last5": (5, 6, 7, 8, 9)}


def examples(builder, split):
  """A split's (images (N, H, W), labels) in the order the records are read."""
  found = list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))
  return (np.stack([e["image"][..., 0] for e in found]),
          np.array([e["label"] for e in found]))


@pytest.fixture(scope="module")
def halves(tmp_path_factory):
  """Both halves built once from fake files: ({config: builder}, written arrays)."""
  manual_dir = tmp_path_factory.mktemp("manual")
  data_dir = tmp_path_factory.mktemp("data")
  arrays = fake_data.write_fashion_mnist_files(
      manual_dir, num_train=NUM_TRAIN, num_test=NUM_TEST, learnable=False)
  built = {}
  for config in HALVES:
    builder = tfds.builder(f"fashion_mnist_halves/{config}", data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual_dir)))
    built[config] = builder
  return built, arrays


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
  builder = tfds.builder("sklearn_digits",
                         data_dir=str(tmp_path_factory.mktemp("data")))
  builder.download_and_prepare()
  return builder


@pytest.mark.parametrize("config", HALVES)
def test_halves_class_names_are_the_originals_of_their_classes(halves, config):
  builder = halves[0][config]
  assert builder.info.features["label"].names == [
      fashion_mnist_local.CLASS_NAMES[c] for c in HALVES[config]]
  assert builder.info.features["image"].shape == (28, 28, 1)


@pytest.mark.parametrize("config", HALVES)
@pytest.mark.parametrize("split", ["train", "test"])
def test_halves_are_their_classes_images_in_file_order_relabelled_from_0(
    halves, config, split):
  built, arrays = halves
  written_images, written_labels = arrays[split]
  keep = np.isin(written_labels, HALVES[config])
  images, labels = examples(built[config], split)
  assert built[config].info.splits[split].num_examples == keep.sum()
  np.testing.assert_array_equal(images, written_images[keep])
  np.testing.assert_array_equal(labels, written_labels[keep] - HALVES[config][0])
  assert set(labels) <= set(range(5))


def test_halves_split_every_image_between_them(halves):
  built, _ = halves
  for split, count in (("train", NUM_TRAIN), ("test", NUM_TEST)):
    assert sum(b.info.splits[split].num_examples for b in built.values()) == count


def test_real_fashion_mnist_halves_have_the_presets_published_sizes():
  manual_dir = pathlib.Path(fashion_mnist_local.DEFAULT_MANUAL_DIR)
  if not (manual_dir / fashion_mnist_local.SPLIT_FILES["train"][1]).exists():
    pytest.skip(f"Fashion-MNIST is not installed in {manual_dir}")
  for split, (images, labels) in fashion_mnist_local.SPLIT_FILES.items():
    _, found = fashion_mnist_local.read_split(manual_dir / images,
                                              manual_dir / labels)
    for config, classes in HALVES.items():
      published = common.DATASETS[f"fashion_mnist_{config}"]["published_sizes"]
      assert np.isin(found, classes).sum() == published[split], (config, split)


def test_digits_split_counts_and_class_names(digits):
  assert {name: split.num_examples for name, split in digits.info.splits.items()
          } == common.DATASETS["digits"]["published_sizes"] == {"train": 1_297,
                                                               "test": 500}
  assert digits.info.features["label"].names == [str(d) for d in range(10)]
  assert digits.info.features["image"].shape == (8, 8, 1)


def test_digits_are_sklearns_scaled_to_0_255_in_its_order(digits):
  from sklearn import datasets
  expected = datasets.load_digits()
  scaled = np.round(expected.images * 255 / 16).astype(np.uint8)
  train_images, train_labels = examples(digits, "train")
  test_images, test_labels = examples(digits, "test")
  np.testing.assert_array_equal(np.concatenate([train_images, test_images]), scaled)
  np.testing.assert_array_equal(np.concatenate([train_labels, test_labels]),
                                expected.target)
  assert len(test_labels) == 500
  assert (scaled.min(), scaled.max()) == (0, 255)
  # The contiguous test split still holds every digit, 46 to 51 of each.
  assert np.bincount(test_labels).min() >= 46


@pytest.mark.parametrize("preset", ["fashion_mnist_first5", "fashion_mnist_last5",
                                    "digits"])
def test_transfer_presets_match_their_builders(preset):
  data = common.dataset_config(preset)
  builder = tfds.builder(data.name)
  assert builder.info.features["label"].num_classes == data.num_classes
  assert builder.info.features["image"].shape[0] == common.DATASETS[preset]["image_px"]
  assert data.prepare.startswith("python scripts/prepare_data.py --dataset=" +
                                 data.name.split("/")[0])


def test_prepare_data_builds_several_then_skips_them(tmp_path, capsys):
  fake_data.write_fashion_mnist_files(tmp_path, num_train=20, num_test=10)
  argv = ["prepare_data", "--dataset=fashion_mnist_halves/last5,sklearn_digits",
          f"--data_dir={tmp_path / 'data'}", f"--manual_dir={tmp_path}"]
  cli.call(prepare_data.main, prepare_data.FLAGS, argv)
  printed = capsys.readouterr().out
  assert "Prepared sklearn_digits in " in printed
  assert "train 1297, test 500" in printed  # --manual_dir is not its business
  assert "Prepared fashion_mnist_halves/last5 in " in printed
  cli.call(prepare_data.main, prepare_data.FLAGS, argv)
  assert capsys.readouterr().out.count("already prepared") == 2


def test_prepare_data_refuses_a_tfds_dataset_that_downloads(tmp_path):
  # It used to start downloading cifar10, against its promise never to.
  argv = ["prepare_data", "--dataset=cifar10", f"--data_dir={tmp_path / 'data'}"]
  with pytest.raises(SystemExit) as error:
    cli.call(prepare_data.main, prepare_data.FLAGS, argv)
  assert str(error.value) == (
      "error: --dataset=cifar10 is a tfds dataset that downloads its files; this script "
      "builds none such (this project's offline ones are in vit_jax/data/builders/: "
      "fashion_mnist_local, fashion_mnist_halves/first5, fashion_mnist_halves/last5, "
      f"sklearn_digits). Prepare it with `tfds build cifar10 --data_dir={tmp_path / 'data'}` "
      "on a machine with network access")
  assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("dataset", ["", "sklearn_digits,"])
def test_prepare_data_refuses_an_empty_dataset_name(tmp_path, dataset):
  # --dataset= used to build nothing and say nothing.
  argv = ["prepare_data", f"--dataset={dataset}", f"--data_dir={tmp_path / 'data'}"]
  with pytest.raises(SystemExit) as error:
    cli.call(prepare_data.main, prepare_data.FLAGS, argv)
  assert str(error.value) == (
      f"error: --dataset={dataset} is empty or holds an empty name; name the datasets to "
      "build, comma-separated (this project's offline ones are in vit_jax/data/builders/: "
      "fashion_mnist_local, fashion_mnist_halves/first5, fashion_mnist_halves/last5, "
      "sklearn_digits)")
  assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("dataset, data_dir, problem", [
    ("fashion_mnist_halves/third5", "data", "--dataset=fashion_mnist_halves/third5: "
     "fashion_mnist_halves has no builder config 'third5'; valid: "
     "fashion_mnist_halves/first5, fashion_mnist_halves/last5"),
    ("sklearn_digits:3.0.0", "data", "--dataset=sklearn_digits:3.0.0: sklearn_digits has "
     "no version 3.0.0; valid: 1.0.0; without :VERSION it builds 1.0.0"),
    ("sklearn_digits", "afile", "--data_dir={tmp}/afile is a file; it is the directory "
     "the TFDS records are written to (made if need be)"),
    ("sklearn_digits", "afile/data", "--data_dir={tmp}/afile/data lies under "
     "{tmp}/afile, a file; it is the directory the TFDS records are written to (made "
     "if need be)"),
], ids=["unknown_config", "unknown_version", "data_dir_is_a_file",
        "data_dir_under_a_file"])
def test_prepare_data_names_a_config_version_or_data_dir_it_cannot_use(
    tmp_path, dataset, data_dir, problem):
  # They used to end in tfds's ValueError and AssertionError, and in
  # NotADirectoryError, as tracebacks.
  (tmp_path / "afile").write_text("kept")
  argv = ["prepare_data", f"--dataset={dataset}", f"--data_dir={tmp_path / data_dir}"]
  with pytest.raises(SystemExit) as error:
    cli.call(prepare_data.main, prepare_data.FLAGS, argv)
  assert str(error.value) == f"error: {problem.format(tmp=tmp_path)}"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
  assert (tmp_path / "afile").read_text() == "kept"
