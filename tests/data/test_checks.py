"""The data is checked as it is read: labels, manifests, splits, and streams
of nothing but corrupt images. Each refusal is one message naming the file."""
import json
import os
import re
import threading

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from vit_jax.data import checks, input_pipeline, sources, tfrecords

NUM = 10  # classes, and examples per split; example i has class i
PP = f"decode|resize(8)|value_range(-1,1)|onehot({NUM})"


def jpeg(index):
  return tf.io.encode_jpeg(np.full((12, 12, 3), index * 20, np.uint8)).numpy()


def write_split(out_dir, split="train", *, labels=range(NUM), images=None):
  """Two shards of ``split``: records 0-4 in the first, 5-9 in the second."""
  images = images or [jpeg(i) for i in range(len(labels))]
  tfrecords.write_split(str(out_dir), split, [(image, [int(label)]) for image, label
                                              in zip(images, labels)], num_shards=2)
  return [os.path.join(out_dir, f"{split}-{shard:05d}-of-00002.tfrecord")
          for shard in range(2)]


def make_source(data_dir, **overrides):
  config = dict(source="tfrecord", name="tiny", data_dir=str(data_dir),
                pattern="{split}-*.tfrecord", strict=False, num_classes=NUM,
                train_split="train", eval_splits={}, shuffle_buffer=1, cache=False)
  config.update(overrides)
  return sources.get_source(ml_collections.ConfigDict(config))


def set_manifest_count(data_dir, path, change):
  manifest_path = os.path.join(data_dir, sources.MANIFEST)
  with open(manifest_path) as f:
    manifest = json.load(f)
  manifest["files"][os.path.basename(path)] += change
  with open(manifest_path, "w") as f:
    json.dump(manifest, f)
  return manifest_path


def first_error(read, timeout=60):
  """The exception ``read()`` raises, within ``timeout`` seconds (a thread bounds the wait)."""
  outcome = []

  def run():
    try:
      read()
      outcome.append("no error")
    except Exception as error:  # noqa: BLE001  (the test inspects it)
      outcome.append(error)
  reader = threading.Thread(target=run, daemon=True)
  reader.start()
  reader.join(timeout)
  assert outcome, f"neither yielded nor failed within {timeout} s"
  return outcome[0]


@pytest.mark.parametrize("bad_label", [NUM, -1])
def test_a_label_outside_the_classes_stops_training_and_eval_naming_the_record(
    tmp_path, bad_label):
  labels = list(range(NUM))
  labels[7] = bad_label
  _, second = write_split(tmp_path, labels=labels)
  source = make_source(tmp_path)
  message = (f"^label {bad_label} of {re.escape(second)}:2 is outside \\[0, {NUM}\\) "
             f"\\(config.data.num_classes\\); fix the data or the class count$")
  with pytest.raises(ValueError, match=message):
    next(input_pipeline.train_batches(source, PP, global_batch=NUM, seed=0))
  with pytest.raises(ValueError, match=message):
    list(input_pipeline.EvalData(source, PP, "train", image_size=8, global_batch=4))


@pytest.mark.parametrize("labels", [[], [3, 4]])
def test_a_record_without_one_label_stops_a_single_label_run_naming_it(tmp_path, labels):
  """No label would be an all-zero target, two a two-hot one; a multi-label
  dataset takes both."""
  records = [(jpeg(i), [i]) for i in range(NUM)]
  records[7] = (jpeg(7), labels)
  tfrecords.write_split(str(tmp_path), "train", records, num_shards=2)
  second = os.path.join(tmp_path, "train-00001-of-00002.tfrecord")
  message = (f"^{re.escape(second)}:2 has {len(labels)} labels \\[{','.join(map(str, labels))}"
             f"\\], and a single-label dataset one each; fix the data, or set "
             f"config.data.multi_label=True for labels of several classes$")
  with pytest.raises(ValueError, match=message):
    list(input_pipeline.EvalData(make_source(tmp_path), PP, "train", image_size=8, global_batch=4))
  batches = list(input_pipeline.EvalData(make_source(tmp_path, multi_label=True), PP,
                                         "train", image_size=8, global_batch=10))
  rows = [[float(c in (labels if i == 7 else [i])) for c in range(NUM)] for i in range(NUM)]
  assert sorted(batches[0]["labels"].tolist()) == sorted(rows)


@pytest.mark.parametrize("encoded", ["raw_pixels", "bad_body"])
def test_a_stream_of_only_corrupt_images_stops_instead_of_spinning(tmp_path, encoded):
  """Raw pixels fail the cheap check; JPEG markers around zeros fail only when
  decoded. Either way the endless stream would skip them forever."""
  good = jpeg(1)
  image = {"raw_pixels": np.zeros((12, 12, 3), np.uint8).tobytes(),
           "bad_body": good[:3] + bytes(60) + good[-2:]}[encoded]
  write_split(tmp_path, images=[image] * NUM)
  batches = input_pipeline.train_batches(make_source(tmp_path), PP, global_batch=2, seed=0)
  error = first_error(lambda: next(batches))
  assert isinstance(error, ValueError), error
  assert re.fullmatch(
      f"the last {checks.MAX_CORRUPT_IN_A_ROW} images read were all corrupt or "
      f"undecodable, the last of them {re.escape(str(tmp_path))}/train-0000[01]-of-00002"
      r"\.tfrecord:\d; the training stream would skip them forever\. Are the images "
      r"encoded JPEG, PNG, GIF or BMP files\? \(config\.data\.strict=True stops at "
      r"the first\)", str(error)), error


def test_a_few_corrupt_images_in_a_row_are_skipped_still(tmp_path):
  images = [jpeg(i) for i in range(NUM)]
  images[3:6] = [b"not an image"] * 3
  write_split(tmp_path, images=images)
  stats = input_pipeline.InputStats()
  batch = next(input_pipeline.train_batches(make_source(tmp_path), PP, global_batch=7,
                                            seed=0, stats=stats))
  assert sorted(np.argmax(batch["labels"], -1)) == [0, 1, 2, 6, 7, 8, 9]
  assert stats.corrupt_images == 3


@pytest.mark.parametrize("change, holds", [(+2, "5"), (-2, "more")])
def test_a_train_shard_that_disagrees_with_its_manifest_stops_the_stream_naming_both(
    tmp_path, change, holds):
  _, second = write_split(tmp_path)
  manifest = set_manifest_count(tmp_path, second, change)
  batches = input_pipeline.train_batches(make_source(tmp_path), PP, global_batch=4, seed=0)
  with pytest.raises(ValueError) as error:
    for _ in range(5):
      next(batches)
  assert str(error.value) == (
      f"{manifest} lists {5 + change} records for {second} ('train') but it holds "
      f"{holds}; re-index it with scripts/make_tfrecords.py --index_only "
      f"--out_dir={tmp_path}")


@pytest.mark.parametrize("scheme", ["", "file://"], ids=["local", "gfile"])
@pytest.mark.parametrize("change, holds", [
    (+3, "5"), (-1, "more"), ("cut", "4 records and a truncated one")])
def test_an_eval_shard_that_disagrees_with_its_manifest_is_found_before_the_run(
    tmp_path, change, holds, scheme):
  write_split(tmp_path)
  _, second = write_split(tmp_path, "test")
  if change == "cut":  # the last record loses its last bytes
    with open(second, "r+b") as f:
      f.truncate(os.path.getsize(second) - 10)
    manifest = os.path.join(tmp_path, sources.MANIFEST)
  else:
    manifest = set_manifest_count(tmp_path, second, change)
  source = make_source(f"{scheme}{tmp_path}", eval_splits={"test": "test"})
  with pytest.raises(ValueError) as error:
    sources.check_splits(source)
  listed = 5 + (0 if change == "cut" else change)
  assert str(error.value) == (
      f"{scheme}{manifest} lists {listed} records for {scheme}{second} ('test') but "
      f"it holds {holds}; re-index it with scripts/make_tfrecords.py --index_only "
      f"--out_dir={scheme}{tmp_path}")


def test_shards_that_agree_with_their_manifest_pass_every_check(tmp_path):
  write_split(tmp_path)
  write_split(tmp_path, "test")
  source = make_source(tmp_path, eval_splits={"test": "test", "minival": "train[80%:]"},
                       train_split="train[:80%]")
  sources.check_splits(source)
  assert sum(b["mask"].sum() for b in input_pipeline.EvalData(
      source, PP, "test", image_size=8, global_batch=4)) == NUM


@pytest.mark.parametrize("overrides, message", [
    (dict(pattern="*.tfrecord"),
     "config.data.eval_splits.test shares records with config.data.train_split: both "
     "read records [0, 5) of {d}/test-00000-of-00002.tfrecord, so the evaluation would "
     "score examples the model trained on (config.data.pattern='*.tfrecord' has no "
     "{{split}}, so every split reads the same files)"),
    (dict(train_split="train[:60%]", eval_splits={"minival": "train[50%:]"}),
     "config.data.eval_splits.minival shares records with config.data.train_split: "
     "both read records [0, 1) of {d}/train-00001-of-00002.tfrecord, so the "
     "evaluation would score examples the model trained on"),
    (dict(eval_splits={"test": "test[:150%]"}),
     "config.data.eval_splits.test: split 'test[:150%]': 150% lies outside the split "
     "of 10 records; valid bounds: -100% to 100%"),
    (dict(train_split="train[20:]"),
     "config.data.train_split: split 'train[20:]': 20 lies outside the split of 10 "
     "records; valid bounds: -10 to 10"),
], ids=["pattern_without_split", "overlapping_slices", "percent_past_the_end",
        "index_past_the_end"])
def test_splits_that_leak_or_lie_outside_the_data_are_refused_before_the_run(
    tmp_path, overrides, message):
  write_split(tmp_path)
  write_split(tmp_path, "test")
  source = make_source(tmp_path, **{"eval_splits": {"test": "test"}, **overrides})
  with pytest.raises(ValueError) as error:
    sources.check_splits(source)
  assert str(error.value) == message.format(d=tmp_path)


def tfds_source(data_dir, **overrides):
  from configs import common
  config = common.dataset_config("fashion_mnist", data_dir=data_dir)
  config.update(overrides)
  return config


def test_a_tfds_split_that_is_not_there_is_named_with_the_valid_ones(fashion_data_dir):
  source = sources.get_source(tfds_source(fashion_data_dir, eval_splits={"val": "validation"}))
  with pytest.raises(ValueError) as error:
    sources.check_splits(source)
  assert str(error.value) == ("config.data.eval_splits.val: dataset "
                              "'fashion_mnist_local' has no split 'validation'; "
                              "valid: test, train")


def test_a_tfds_dataset_with_more_classes_than_the_config_is_refused(fashion_data_dir):
  with pytest.raises(ValueError) as error:
    sources.get_source(tfds_source(fashion_data_dir, num_classes=5))
  assert str(error.value) == ("dataset 'fashion_mnist_local' has 10 classes (its "
                              "'label' feature), more than config.data.num_classes=5")
