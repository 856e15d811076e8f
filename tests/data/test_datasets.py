"""Tests for the local Fashion-MNIST builder and scripts/prepare_data.py.

They build from tiny synthetic IDX files, so they run offline and fast.
"""
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

import vit_jax.data.builders  # noqa: F401 (registers the builders)
from vit_jax.data.builders import fashion_mnist_local

import fake_data
from repo_root import REPO_PATH as REPO_ROOT

NUM_TRAIN, NUM_TEST = 20, 7


def write_fake_fashion_mnist(manual_dir: pathlib.Path) -> dict:
  """Writes the four IDX files of random images; returns {split: (images, labels)}."""
  return fake_data.write_fashion_mnist_files(
      manual_dir, num_train=NUM_TRAIN, num_test=NUM_TEST, learnable=False)


build = fake_data.build_fashion_mnist


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """A dataset built once from fake files: (builder, written arrays)."""
  manual_dir = tmp_path_factory.mktemp("manual")
  arrays = write_fake_fashion_mnist(manual_dir)
  return build(manual_dir, tmp_path_factory.mktemp("data")), arrays


def test_split_counts_and_features(built):
  builder, _ = built
  assert builder.info.splits["train"].num_examples == NUM_TRAIN
  assert builder.info.splits["test"].num_examples == NUM_TEST
  assert builder.info.features["image"].shape == (28, 28, 1)
  assert builder.info.features["label"].names == list(
      fashion_mnist_local.CLASS_NAMES)


@pytest.mark.parametrize("split", ["train", "test"])
def test_examples_equal_the_written_arrays(built, split):
  builder, arrays = built
  images, labels = arrays[split]
  found = sorted(
      (example["image"][..., 0].tobytes(), int(example["label"]))
      for example in tfds.as_numpy(builder.as_dataset(split=split)))
  assert found == sorted(
      (image.tobytes(), int(label)) for image, label in zip(images, labels))


def test_image_dtype_and_shape(built):
  builder, _ = built
  example = next(iter(tfds.as_numpy(builder.as_dataset(split="test"))))
  assert example["image"].shape == (28, 28, 1)
  assert example["image"].dtype == np.uint8
  assert 0 <= example["label"] < 10


def test_missing_file_is_named_with_install_instructions(tmp_path):
  write_fake_fashion_mnist(tmp_path)
  missing = tmp_path / "t10k-labels-idx1-ubyte.gz"
  missing.unlink()
  with pytest.raises(FileNotFoundError) as error:
    build(tmp_path, tmp_path / "data")
  assert str(missing) in str(error.value)
  assert "apt-get install dataset-fashion-mnist" in str(error.value)


def test_bad_magic_number_names_the_file(tmp_path):
  write_fake_fashion_mnist(tmp_path)
  corrupt = tmp_path / "train-labels-idx1-ubyte.gz"
  fake_data.write_idx(corrupt, np.zeros(NUM_TRAIN, np.uint8), 0x1234)
  with pytest.raises(ValueError, match="magic number") as error:
    build(tmp_path, tmp_path / "data")
  assert str(corrupt) in str(error.value)


def run_prepare_data(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, str(REPO_ROOT / "scripts" / "prepare_data.py"), *args],
      capture_output=True, text=True, timeout=120, check=False)


def test_prepare_data_exits_with_one_line_when_files_missing(tmp_path):
  result = run_prepare_data("--dataset=fashion_mnist_local",
                            f"--data_dir={tmp_path / 'data'}",
                            f"--manual_dir={tmp_path / 'empty'}")
  assert result.returncode == 1, result.stderr  # vit_jax.runtime.cli's status for an error
  message = result.stderr.strip().splitlines()[-1]
  assert message.startswith("error: ")  # vit_jax.runtime.cli: one line, no traceback
  assert str(tmp_path / "empty" / "train-images-idx3-ubyte.gz") in message
  assert "apt-get install dataset-fashion-mnist" in message
  assert not (tmp_path / "data" / "fashion_mnist_local").exists()


def test_prepare_data_builds_then_skips(tmp_path):
  write_fake_fashion_mnist(tmp_path)
  flags = ["--dataset=fashion_mnist_local", f"--data_dir={tmp_path / 'data'}",
           f"--manual_dir={tmp_path}"]
  first = run_prepare_data(*flags)
  assert first.returncode == 0, first.stderr
  assert f"train {NUM_TRAIN}, test {NUM_TEST}" in first.stdout
  second = run_prepare_data(*flags)
  assert second.returncode == 0, second.stderr
  assert "already prepared" in second.stdout
