"""Sources: TFRecord shards and image folders, process shares, resume, corrupt images."""
import glob
import json
import os
import re
import shutil
import threading

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from vit_jax.inference import predict
from vit_jax.data import corrupt_images, input_pipeline, sources, splits
from vit_jax.data import tfrecords

NUM = 24  # examples and classes; example i has class i (and i+1 mod NUM when
# multi-label), both mod NUM where a test writes more examples
PP = f"decode|resize(8)|value_range(-1,1)|onehot({NUM})"


def image(index, size=12):
  """A flat colour per example, so JPEG keeps it recognisable."""
  return np.full((size, size, 3), index * 10, np.uint8)


def write_tfrecords(out_dir, *, num_shards, multi_label=False, split="train", num=NUM):
  labels = np.zeros((num, NUM), np.int64)
  classes = np.arange(num) % NUM
  labels[np.arange(num), classes] = 1
  if multi_label:
    labels[np.arange(num), (classes + 1) % NUM] = 1
  examples = tfrecords.array_examples(np.stack([image(c) for c in classes]), labels)
  return tfrecords.write_split(str(out_dir), split, examples, num_shards=num_shards,
                               classes=[f"class{i}" for i in range(NUM)])


def data_config(source, data_dir, **overrides):
  config = dict(source=source, name=source, data_dir=str(data_dir),
                pattern="{split}-*.tfrecord" if source == "tfrecord" else "{split}",
                strict=False, num_classes=NUM, multi_label=False,
                train_split="train", eval_splits={}, shuffle_buffer=64,
                cache=False, prepare="scripts/make_tfrecords.py")
  config.update(overrides)
  return ml_collections.ConfigDict(config)


def make_source(kind, data_dir, **overrides):
  return sources.get_source(data_config(kind, data_dir, **overrides))


@pytest.fixture(scope="module")
def tfrecord_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("tfrecords")
  write_tfrecords(out, num_shards=4)
  return out


@pytest.fixture(scope="module")
def folder_dir(tmp_path_factory):
  """train/classK/*.jpg|png: JPEGs for even examples, PNGs for odd ones."""
  root = tmp_path_factory.mktemp("folder")
  for i in range(NUM):
    folder = root / "train" / f"class{i:02d}"
    folder.mkdir(parents=True)
    encode = tf.io.encode_png if i % 2 else tf.io.encode_jpeg
    (folder / f"img.{'png' if i % 2 else 'jpg'}").write_bytes(encode(image(i)).numpy())
  (root / "train" / "class00" / "notes.txt").write_text("not an image")
  return root


def classes_of(batches):
  """Class ids of single-label batches (the argmax of the one-hot targets)."""
  return [int(c) for b in batches for c in np.argmax(b["labels"], axis=-1)]


def test_split_slices_count_records_in_file_order(tfrecord_dir):
  source = make_source("tfrecord", tfrecord_dir)
  assert source.num_examples("train") == NUM
  assert source.num_examples("train[:25%]") == 6
  assert source.num_examples("train[25%:]") == 18
  assert source.num_examples("train[5:-3]") == 16
  assert source.class_names[:2] == ["class0", "class1"]
  with pytest.raises(ValueError, match="not 'name' or a slice"):
    splits.parse_split("train[1%:5]")


def test_a_sliced_eval_split_reads_exactly_its_records(tfrecord_dir):
  eval_data = input_pipeline.EvalData(make_source("tfrecord", tfrecord_dir), PP,
                                      "train[5:-3]", image_size=8, global_batch=8)
  batches = list(eval_data)
  masks = np.concatenate([b["mask"] for b in batches])
  labels = np.concatenate([b["labels"] for b in batches])[masks]
  assert sorted(np.argmax(labels, -1)) == list(range(5, NUM - 3))
  assert eval_data.num_examples == 16 and len(batches) == 2


# 3 files of 8 records: 12 records each, not 2 files to one and 1 to the other.
@pytest.mark.parametrize("num_shards", [4, 3, 1])
def test_two_processes_read_disjoint_even_shares_that_make_the_whole_split(tmp_path,
                                                                          num_shards):
  write_tfrecords(tmp_path, num_shards=num_shards)
  source = make_source("tfrecord", tmp_path)
  assert source.process_counts("train", 2) == [NUM // 2, NUM // 2]
  seen = []
  for index in range(2):
    batches = input_pipeline.train_batches(source, PP, global_batch=8, seed=0,
                                           process_index=index, process_count=2)
    epoch = classes_of(next(batches) for _ in range(NUM // 8))  # 3 batches of 4
    assert len(set(epoch)) == NUM // 2  # each example of the share once
    seen.append(set(epoch))
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(range(NUM))


@pytest.mark.parametrize("source", ["tfrecord", "folder"])
def test_a_resumed_stream_equals_the_uninterrupted_one(source, tfrecord_dir, folder_dir):
  data = make_source(source, tfrecord_dir if source == "tfrecord" else folder_dir)
  pp = f"decode|inception_crop(8)|flip_lr|value_range(-1,1)|onehot({NUM})"

  def stream(start_step):
    return input_pipeline.train_batches(data, pp, global_batch=5, seed=7,
                                        start_step=start_step)
  full = [next(b) for b in [stream(0)] for _ in range(9)]  # crosses an epoch
  resumed = stream(6)
  for expected in full[6:]:
    got = next(resumed)
    np.testing.assert_array_equal(got["image"], expected["image"])
    np.testing.assert_array_equal(got["labels"], expected["labels"])
  assert classes_of(full[:4]) != classes_of(full[4:8])  # shuffled per epoch


@pytest.mark.parametrize("source", ["tfrecord", "folder"])
def test_a_cached_source_reads_its_files_once(source, tfrecord_dir, folder_dir, tmp_path):
  data_dir = tmp_path / "data"
  shutil.copytree(tfrecord_dir if source == "tfrecord" else folder_dir, data_dir)
  batches = input_pipeline.train_batches(
      make_source(source, data_dir, cache=True, strict=True), PP, global_batch=8,
      seed=0)  # strict: a file read again would fail, not be skipped
  first_epoch = classes_of(next(batches) for _ in range(NUM // 8))
  shutil.rmtree(data_dir)  # later epochs can only come from the cache
  # More epochs than the pipeline's prefetch buffers could have read ahead.
  later_epochs = [classes_of(next(batches) for _ in range(NUM // 8))
                  for _ in range(10)]
  for epoch in later_epochs:
    assert sorted(epoch) == list(range(NUM))
  assert first_epoch != later_epochs[0]  # still shuffled per epoch


def test_predictions_name_classes_from_the_manifest_or_the_folders(
    tfrecord_dir, folder_dir, tmp_path):
  assert predict.class_names(data_config("tfrecord", tfrecord_dir)) == [
      f"class{i}" for i in range(NUM)]
  assert predict.class_names(data_config("folder", folder_dir)) == [
      f"class{i:02d}" for i in range(NUM)]
  assert predict.class_names(data_config("tfrecord", tmp_path)) is None  # no data here


def test_a_folder_of_jpegs_and_pngs_reads_every_image_with_its_class(folder_dir):
  source = make_source("folder", folder_dir)
  assert source.num_examples("train") == NUM
  eval_data = input_pipeline.EvalData(
      source, f"decode|value_range(0,255)|onehot({NUM})", "train", image_size=8, global_batch=10)
  batches = list(eval_data)
  mask = np.concatenate([b["mask"] for b in batches])
  images = np.concatenate([b["image"] for b in batches])[mask]
  classes = np.argmax(np.concatenate([b["labels"] for b in batches])[mask], -1)
  assert sorted(classes) == list(range(NUM))
  np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), classes * 10, atol=2)


def listings(monkeypatch):
  """The directories `sources` lists from now on, in order."""
  listed, real = [], sources._listdir
  monkeypatch.setattr(sources, "_listdir", lambda d: listed.append(d) or real(d))
  return listed


def test_one_folder_source_lists_each_directory_once_for_sizes_eval_and_train(
    folder_dir, monkeypatch):
  listed = listings(monkeypatch)
  source = make_source("folder", folder_dir, train_split="train[:50%]")
  assert source.num_examples("train[:50%]") == NUM // 2
  list(input_pipeline.EvalData(source, PP, "train[50%:]", image_size=8, global_batch=12))
  next(input_pipeline.train_batches(source, PP, global_batch=4, seed=0))
  assert len(listed) == len(set(listed)) == 1 + NUM  # the split, each class folder


@pytest.mark.slow
def test_a_run_builds_its_folder_source_once(folder_dir, tmp_path, monkeypatch):
  """The train loop passes one source to the split sizes, eval and training."""
  from conftest import tiny_config
  from vit_jax import train

  listed = listings(monkeypatch)
  pp = f"decode|resize(16)|value_range(-1,1)|onehot({NUM})"
  config = tiny_config(
      str(folder_dir), total_steps=3, log_every=1, eval_every=3, checkpoint_every=3,
      eval_batch=8, data=data_config("folder", folder_dir, train_split="train[:50%]",
                                     eval_splits={"val": "train[50%:]"}),
      **{"pp.train": pp, "pp.eval": pp})
  summary = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert summary["eval"]["val"]["num_examples"] == NUM // 2
  assert len(listed) == len(set(listed)) == 1 + NUM  # the split, each class folder


def test_a_folder_split_is_sliced_over_a_seeded_shuffle_of_its_files(folder_dir):
  """Listed class by class, a held-out slice would hold the last classes only."""
  source = make_source("folder", folder_dir)
  halves = []
  for split in ("train[:50%]", "train[50%:]"):
    eval_data = input_pipeline.EvalData(source, PP, split, image_size=8, global_batch=12)
    batch = next(iter(eval_data))
    halves.append(sorted(np.argmax(batch["labels"][batch["mask"]], -1)))
  assert len(halves[0]) == len(halves[1]) == NUM // 2
  assert halves[0] != list(range(NUM // 2))  # not the first classes
  assert sorted(halves[0] + halves[1]) == list(range(NUM))
  again = next(iter(input_pipeline.EvalData(source, PP, "train[:50%]", image_size=8,
                                            global_batch=12)))
  assert sorted(np.argmax(again["labels"][again["mask"]], -1)) == halves[0]


def test_multi_label_records_give_multi_hot_targets(tmp_path):
  write_tfrecords(tmp_path, num_shards=2, multi_label=True)
  eval_data = input_pipeline.EvalData(make_source("tfrecord", tmp_path, multi_label=True),
                                      PP, "train[:3]", image_size=8, global_batch=4)
  labels = next(iter(eval_data))["labels"][:3]
  assert [np.flatnonzero(row).tolist() for row in labels] == [[0, 1], [1, 2], [2, 3]]


def corrupt_shards(out_dir, *, intact_markers=False):
  """Two shards of 12; record 3 of the second (example 15) is a corrupt JPEG.

  Truncated, or with ``intact_markers`` its start and end markers around a
  body of zeros: that passes `corrupt_images.is_decodable` and fails only when
  decoded.
  """
  write_tfrecords(out_dir, num_shards=2)
  good = tf.io.encode_jpeg(image(15)).numpy()
  path = os.path.join(out_dir, "train-00001-of-00002.tfrecord")
  records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
  bad = good[:3] + bytes(60) + good[-2:] if intact_markers else good[:len(good) // 2]
  assert bool(corrupt_images.is_decodable(tf.constant(bad))) == intact_markers
  records[3] = tfrecords._example(bad, [15])
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)
  return path


@pytest.mark.parametrize("intact_markers", [False, True], ids=["truncated", "bad_body"])
def test_a_corrupt_jpeg_is_skipped_and_counted(tmp_path, intact_markers):
  corrupt_shards(tmp_path, intact_markers=intact_markers)
  source = make_source("tfrecord", tmp_path)
  stats = input_pipeline.InputStats()
  batches = input_pipeline.train_batches(source, PP, global_batch=23, seed=0, stats=stats)
  epochs = classes_of([next(batches), next(batches)])  # two epochs of 23 good ones
  assert sorted(epochs[:23]) == sorted(epochs[23:]) == [c for c in range(NUM) if c != 15]
  assert stats.corrupt_images == 2  # once per epoch
  eval_data = input_pipeline.EvalData(source, PP, "train", image_size=8, global_batch=8)
  assert sum(b["mask"].sum() for b in eval_data) == NUM  # scored as blank
  assert eval_data.corrupt_images == 1


@pytest.mark.parametrize("intact_markers", [False, True], ids=["truncated", "bad_body"])
@pytest.mark.parametrize("geometry, size", [("", 12), ("|central_crop(10)", 10)])
def test_a_corrupt_image_is_blanked_at_the_models_size_without_a_resize(
    tmp_path, intact_markers, geometry, size):
  """The blank stand-in is the model's size, so an eval preprocessing without
  a resize (images already at that size, or cropped to it) batches it; a
  fixed small blank did not."""
  corrupt_shards(tmp_path, intact_markers=intact_markers)  # images are 12 px
  pp = f"decode{geometry}|value_range(-1,1)|onehot({NUM})"
  eval_data = input_pipeline.EvalData(make_source("tfrecord", tmp_path), pp, "train",
                                      image_size=size, global_batch=8)
  batches = list(eval_data)
  assert {b["image"].shape for b in batches} == {(8, size, size, 3)}
  assert sum(b["mask"].sum() for b in batches) == NUM
  assert eval_data.corrupt_images == 1
  scored = np.concatenate([b["image"][b["mask"]] for b in batches])
  flat = lambda value: np.abs(scored - (value / 255 * 2 - 1)).max(axis=(1, 2, 3)) < 0.005
  assert flat(128).sum() == 1 and not flat(150).any()  # the blank for example 15


def test_a_corrupt_first_image_is_counted_too(tmp_path):
  write_tfrecords(tmp_path, num_shards=1)
  path = os.path.join(tmp_path, "train-00000-of-00001.tfrecord")
  records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
  records[0] = tfrecords._example(b"\xff\xd8\xff truncated", [0])
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)
  stats = input_pipeline.InputStats()
  batches = input_pipeline.train_batches(  # unshuffled: the corrupt one comes first
      make_source("tfrecord", tmp_path, shuffle_buffer=1), PP, global_batch=23, seed=0,
      stats=stats)
  assert classes_of([next(batches)]) == list(range(1, NUM))
  assert stats.corrupt_images == 1


@pytest.mark.parametrize("intact_markers, problem", [
    (False, "corrupt or undecodable image"), (True, "image that does not decode")],
    ids=["truncated", "bad_body"])
def test_a_corrupt_jpeg_is_named_in_strict_mode(tmp_path, intact_markers, problem):
  path = corrupt_shards(tmp_path, intact_markers=intact_markers)
  source = make_source("tfrecord", tmp_path, strict=True)
  message = f"^{problem} {re.escape(path)}:3 \\(config.data.strict=True\\)$"
  with pytest.raises(ValueError, match=message):
    batches = input_pipeline.train_batches(source, PP, global_batch=8, seed=0)
    for _ in range(3):
      next(batches)
  with pytest.raises(ValueError, match=message):
    list(input_pipeline.EvalData(source, PP, "train", image_size=8, global_batch=8))


def test_a_preprocessing_error_is_raised_not_skipped_as_a_corrupt_image(tfrecord_dir):
  """A crop larger than every image fails on good images: skipping them all
  would leave the endless train stream spinning, and eval scoring blanks."""
  source = make_source("tfrecord", tfrecord_dir)
  too_big = f"decode|central_crop(16)|value_range(-1,1)|onehot({NUM})"  # images are 12 px
  crop_failed = r"offset_(width|height) must be >= 0"  # TF's crop_to_bounding_box
  with pytest.raises(tf.errors.InvalidArgumentError, match=crop_failed):
    next(input_pipeline.train_batches(source, too_big, global_batch=8, seed=0))
  with pytest.raises(tf.errors.InvalidArgumentError, match=crop_failed):
    list(input_pipeline.EvalData(source, too_big, "train", image_size=8, global_batch=8))


def test_a_training_file_deleted_mid_run_stops_the_stream_naming_it(tmp_path):
  """Not skipped like a corrupt image: with every file gone the endless
  stream would otherwise wait forever. A thread bounds the wait."""
  write_tfrecords(tmp_path, num_shards=2, num=NUM * 20)
  batches = input_pipeline.train_batches(make_source("tfrecord", tmp_path), PP,
                                         global_batch=8, seed=0)
  next(batches)
  for path in tmp_path.glob("train-*.tfrecord"):
    path.unlink()
  outcome = []

  def read_on():  # the examples already buffered, then the error
    try:
      for _ in range(10 * NUM):
        next(batches)
      outcome.append("no error")
    except Exception as error:  # noqa: BLE001  (the test inspects it)
      outcome.append(error)
  reader = threading.Thread(target=read_on, daemon=True)
  reader.start()
  reader.join(timeout=120)
  assert outcome, "the stream neither yielded nor failed within 120 s"
  error, = outcome
  assert isinstance(error, FileNotFoundError), error
  assert "went missing" in str(error)
  assert re.search(r"train-0000[01]-of-00002\.tfrecord; No such file", str(error))


def make_tfrecords_main(*argv):
  """scripts/make_tfrecords.py run with ``argv``, in this process."""
  from scripts import make_tfrecords
  from vit_jax.runtime import cli
  return cli.call(make_tfrecords.main, make_tfrecords.FLAGS, ["make_tfrecords.py", *argv])


def test_a_missing_manifest_says_how_to_write_one(tmp_path):
  with pytest.raises(sources.DatasetNotPreparedError, match="make_tfrecords.py --index_only"):
    sources.get_source(data_config("tfrecord", tmp_path))


@pytest.mark.parametrize("text, what", [
    ('{"files": {', "not valid JSON (Expecting property name enclosed in double quotes: "
     "line 1 column 12 (char 11))"),
    ('{"classes": ["a"]}', "no object with 'files'"),
    ("[1, 2]", "no object with 'files'")])
def test_a_run_names_a_manifest_it_cannot_read(tmp_path, text, what):
  (tmp_path / sources.MANIFEST).write_text(text)
  with pytest.raises(ValueError) as error:
    sources.get_source(data_config("tfrecord", tmp_path))
  assert str(error.value) == (
      f"{tmp_path / sources.MANIFEST} is {what}; a manifest is one object with 'files' "
      "(shard name: records) and 'classes'; delete it and index the shards again "
      "(scripts/make_tfrecords.py --index_only)")


def test_a_dataset_named_on_the_command_line_is_not_given_its_presets_command(tmp_path):
  from configs import common
  config = common.dataset_config("fashion_mnist", data_dir=str(tmp_path))
  config.name = "mnist"  # --config.data.name=mnist
  with pytest.raises(sources.DatasetNotPreparedError) as error:
    sources.get_builder(config)
  assert str(error.value).endswith(
      "Nothing is downloaded at run time; prepare it with: tfds build mnist (on a "
      "machine with network access), then copy the data_dir, or point "
      "config.data.data_dir at a directory that holds it")
  assert "fashion_mnist" not in str(error.value)


def test_index_only_counts_foreign_shards(tmp_path):
  write_tfrecords(tmp_path, num_shards=3)
  os.remove(tmp_path / sources.MANIFEST)
  make_tfrecords_main("--index_only", f"--out_dir={tmp_path}")
  assert make_source("tfrecord", tmp_path).num_examples("train") == NUM



def shard_records(out_dir):
  """(decoded image, class ids) of every record, shard by shard."""
  spec = {sources.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
          sources.LABEL_KEY: tf.io.VarLenFeature(tf.int64)}
  shards = []
  for shard in sorted(glob.glob(str(out_dir / "train-*.tfrecord"))):
    records = [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(shard)]
    shards.append([(tf.io.decode_image(r[sources.IMAGE_KEY]).numpy(),
                    r[sources.LABEL_KEY].values.numpy().tolist()) for r in records])
  return shards


def test_make_tfrecords_from_a_folder_that_is_missing_or_holds_no_classes_says_so(tmp_path):
  layout = "class subfolders of images, <class>/*.{jpg,jpeg,png}"
  with pytest.raises(SystemExit, match=re.escape(f"error: {tmp_path / 'nowhere'} is no "
                                                 f"directory; a dataset folder holds {layout}")):
    make_tfrecords_main(f"--from_folder={tmp_path / 'nowhere'}", f"--out_dir={tmp_path / 'out'}")
  (tmp_path / "loose.jpg").write_bytes(b"")
  with pytest.raises(SystemExit, match=re.escape(f"error: {tmp_path} holds no images in "
                                                 f"{layout.replace(' of images', '')}")):
    make_tfrecords_main(f"--from_folder={tmp_path}", f"--out_dir={tmp_path / 'out'}")
  assert not (tmp_path / "out").exists()


def test_make_tfrecords_from_npz_gives_grayscale_images_a_channel(tmp_path):
  gray = np.stack([image(c)[..., 0] for c in range(4)])  # MNIST's (N, H, W)
  np.savez(tmp_path / "gray.npz", images=gray, labels=np.arange(4))
  out = tmp_path / "out"
  make_tfrecords_main(f"--from_npz={tmp_path / 'gray.npz'}", f"--out_dir={out}",
                      "--num_shards=2")
  assert make_source("tfrecord", out).num_examples("train") == 4
  records = [record for shard in shard_records(out) for record in shard]
  assert sorted(label for _, (label,) in records) == [0, 1, 2, 3]
  for decoded, (label,) in records:
    assert decoded.shape == (12, 12, 1) and decoded.max() == decoded.min() == label * 10


def test_make_tfrecords_refuses_a_class_count_other_than_the_class_names(tmp_path):
  # Labels 3 and 4 were written under a manifest of three class names.
  np.savez(tmp_path / "five.npz", images=np.stack([image(c) for c in range(5)]),
           labels=np.arange(5))
  (tmp_path / "classes.txt").write_text("a\nb\nc\n")
  with pytest.raises(SystemExit, match=re.escape(
      f"error: --num_classes=5 but --classes={tmp_path / 'classes.txt'} names 3; the "
      f"manifest's class names must cover every label: give one of the two, or agreeing "
      f"ones")):
    make_tfrecords_main(f"--from_npz={tmp_path / 'five.npz'}", f"--out_dir={tmp_path / 'out'}",
                        f"--classes={tmp_path / 'classes.txt'}", "--num_classes=5")
  assert not (tmp_path / "out").exists()


def test_make_tfrecords_from_folders_mixes_the_classes_over_the_shards(tmp_path):
  """Class folders come class by class; a slice like train[50%:] must not be
  the last class alone, so the shards are a seeded shuffle of the examples."""
  for c in range(2):
    (tmp_path / "images" / f"class{c}").mkdir(parents=True)
    for i in range(8):
      tf.io.write_file(str(tmp_path / "images" / f"class{c}" / f"{i}.png"),
                       tf.io.encode_png(image(c)))
  shards = {}
  for run, extra in (("a", []), ("b", []), ("kept", ["--keep_order"])):
    make_tfrecords_main(f"--from_folder={tmp_path / 'images'}",
                        f"--out_dir={tmp_path / run}", "--num_shards=2", *extra)
    shards[run] = [sorted(label for _, (label,) in shard)
                   for shard in shard_records(tmp_path / run)]
  assert shards["kept"] == [[0] * 8, [1] * 8]
  assert all(0 in shard and 1 in shard for shard in shards["a"]), shards["a"]
  assert shards["a"] == shards["b"]  # the same shuffle on every run


def test_make_tfrecords_reads_a_column_of_labels_as_class_ids(tmp_path):
  # Keras' CIFAR y_train is (N, 1); its ids used to be read as multi-hot
  # rows: 0 as no class, every other id as class 0.
  np.savez(tmp_path / "column.npz", images=np.stack([image(c) for c in range(4)]),
           labels=np.array([[2], [0], [3], [1]], np.uint8))
  make_tfrecords_main(f"--from_npz={tmp_path / 'column.npz'}", f"--out_dir={tmp_path / 'out'}",
                      "--num_shards=1", "--keep_order")
  [shard] = shard_records(tmp_path / "out")
  assert [labels for _, labels in shard] == [[2], [0], [3], [1]]


def write_class_folders(directory, names):
  for c, name in enumerate(names):
    (directory / name).mkdir(parents=True)
    tf.io.write_file(str(directory / name / "0.png"), tf.io.encode_png(image(c)))


@pytest.mark.parametrize("flags, problem", [
    (["--classes={classes}"],
     "--classes={classes} lists dog, cat; with --from_folder the labels are the class "
     "folders' places in sorted order, so it must list cat, dog (the folders of "
     "{images}), or be left out"),
    (["--num_classes=2"], "--num_classes applies to --from_npz; with --from_folder the "
     "images are stored as they are and the classes are its subfolders"),
    (["--format=png", "--num_classes=2"], "--num_classes and --format apply to "
     "--from_npz; with --from_folder the images are stored as they are and the "
     "classes are its subfolders"),
    (["--classes={tmp}/nowhere.txt"], "--classes={tmp}/nowhere.txt: no such file; it "
     "is a text file of class names, one a line"),
], ids=["classes_out_of_folder_order", "num_classes", "format", "missing_classes_file"])
def test_make_tfrecords_from_a_folder_refuses_names_and_flags_that_do_not_fit(
    tmp_path, flags, problem):
  # The labels come from the sorted folders, the names from --classes: label 0
  # (cat's images) used to be named dog.
  write_class_folders(tmp_path / "images", ["cat", "dog"])
  (tmp_path / "classes.txt").write_text("dog\ncat\n")
  names = dict(classes=tmp_path / "classes.txt", images=tmp_path / "images", tmp=tmp_path)
  with pytest.raises(SystemExit) as exit_info:
    make_tfrecords_main(f"--from_folder={tmp_path / 'images'}",
                        f"--out_dir={tmp_path / 'out'}",
                        *[flag.format(**names) for flag in flags])
  assert str(exit_info.value) == f"error: {problem.format(**names)}"
  assert not (tmp_path / "out").exists()


def test_make_tfrecords_from_a_folder_takes_its_own_names_as_classes(tmp_path):
  write_class_folders(tmp_path / "images", ["cat", "dog"])
  (tmp_path / "classes.txt").write_text("cat\ndog\n")
  make_tfrecords_main(f"--from_folder={tmp_path / 'images'}", f"--out_dir={tmp_path / 'out'}",
                      f"--classes={tmp_path / 'classes.txt'}")
  manifest = json.loads((tmp_path / "out" / sources.MANIFEST).read_text())
  assert (manifest["classes"], manifest["count"]) == (["cat", "dog"], 2)


def test_a_class_list_conflict_is_refused_before_any_shard_is_overwritten(tmp_path):
  # The shards used to be rewritten first, then the manifest refused: new
  # shards beside a manifest of the old ones.
  write_tfrecords(tmp_path, num_shards=2)
  before = {path: open(path, "rb").read() for path in glob.glob(str(tmp_path / "*"))}
  examples = tfrecords.array_examples(np.stack([image(1)] * 4), np.zeros(4, np.int64))
  with pytest.raises(ValueError) as error:
    tfrecords.write_split(str(tmp_path), "train", examples, num_shards=2,
                          classes=["cat", "dog"])
  assert str(error.value) == (
      f"{tmp_path / sources.MANIFEST} already lists other classes (24: class0, class1, "
      "class2, ...) than these (2: cat, dog); write to another directory, or delete it")
  assert {path: open(path, "rb").read()
          for path in glob.glob(str(tmp_path / "*"))} == before


def test_a_manifest_that_is_no_json_is_refused_before_any_shard_is_written(tmp_path):
  (tmp_path / sources.MANIFEST).write_text('{"files": {')
  examples = tfrecords.array_examples(np.stack([image(1)] * 4), np.zeros(4, np.int64))
  with pytest.raises(ValueError) as error:
    tfrecords.write_split(str(tmp_path), "train", examples, num_shards=2)
  assert str(error.value) == (
      f"{tmp_path / sources.MANIFEST} is not valid JSON (Expecting property name "
      "enclosed in double quotes: line 1 column 12 (char 11)); a manifest is one object "
      "with 'files' (shard name: records) and 'classes'; delete it and index the shards "
      "again (scripts/make_tfrecords.py --index_only)")
  assert os.listdir(tmp_path) == [sources.MANIFEST]


def test_the_manifest_is_written_whole_through_a_temporary_file(tmp_path, monkeypatch):
  renamed = []
  rename = tf.io.gfile.rename
  monkeypatch.setattr(tf.io.gfile, "rename", lambda src, dst, overwrite=False: (
      renamed.append((src, dst)), rename(src, dst, overwrite=overwrite)))
  manifest = write_tfrecords(tmp_path, num_shards=2)
  path = str(tmp_path / sources.MANIFEST)
  assert renamed == [(path + ".tmp", path)]
  assert json.loads((tmp_path / sources.MANIFEST).read_text()) == manifest
  assert sorted(os.listdir(tmp_path)) == [sources.MANIFEST, "train-00000-of-00002.tfrecord",
                                          "train-00001-of-00002.tfrecord"]


GOOD_IMAGES = np.zeros((4, 12, 12, 3), np.uint8)


@pytest.mark.parametrize("arrays, flags, problem", [
    (dict(images=GOOD_IMAGES), [],
     "no 'labels' array (it holds ['images']); valid: 'images' uint8 (N, H, W[, C]) "
     "and 'labels' (N,) or (N, 1) class ids, or (N, classes) 0/1 multi-hot rows"),
    (dict(images=GOOD_IMAGES, labels=np.arange(3)), [],
     "labels are (3,) for 4 images; valid: (4,) or (4, 1) class ids, or (4, classes) "
     "0/1 multi-hot rows"),
    # Two class ids a row used to be read as the columns that are not zero.
    (dict(images=GOOD_IMAGES, labels=np.array([[0, 3], [1, 2], [2, 1], [3, 0]])), [],
     "labels are (4, 2) with 3 at image 0, column 1, so they are no multi-hot rows; "
     "valid: (N,) or (N, 1) class ids, or (N, classes) 0/1 multi-hot rows"),
    (dict(images=GOOD_IMAGES, labels=np.array([[5], [0], [1], [2]])), ["--num_classes=5"],
     "label 5 of image 0 is not a class id; valid: 0 to 4"),
    (dict(images=np.zeros((4, 12, 12, 3)), labels=np.arange(4)), [],
     "images are float64 (4, 12, 12, 3); jpeg needs uint8 (N, H, W) or (N, H, W, C) "
     "with C in (1, 3)"),
    (dict(images=GOOD_IMAGES, labels=np.array([0, -1, 2, -3])), [],
     "label -1 of image 1 (and 1 more) is not a class id; valid: 0 or more"),
    (dict(images=GOOD_IMAGES, labels=np.arange(4)), ["--num_classes=3"],
     "label 3 of image 3 is not a class id; valid: 0 to 2"),
    (dict(images=GOOD_IMAGES, labels=np.eye(4)[:, :4]), ["--num_classes=3"],
     "labels are 4-wide multi-hot rows for 3 classes"),
    (dict(images=GOOD_IMAGES, labels=np.array([0.0, 1.5, 2.0, 3.0])), [],
     "labels are float64; class ids must be integers"),
], ids=["no_labels", "short_labels", "class_id_pairs", "column_label_past_num_classes",
        "float_images", "negative_label", "label_past_num_classes", "wide_multi_hot",
        "float_labels"])
def test_make_tfrecords_from_a_bad_npz_names_the_file_and_writes_nothing(
    tmp_path, arrays, flags, problem):
  path = tmp_path / "bad.npz"
  np.savez(path, **arrays)
  with pytest.raises(SystemExit) as exit_info:
    make_tfrecords_main(f"--from_npz={path}", f"--out_dir={tmp_path / 'out'}", *flags)
  assert str(exit_info.value) == f"error: --from_npz: {path}: {problem}"
  assert not (tmp_path / "out").exists()

@pytest.mark.slow
def test_multi_label_tfrecords_train_with_sigmoid_loss_and_report_hand_checked_prec1(tmp_path):
  from conftest import tiny_config
  from vit_jax import models, train
  from vit_jax.models import pretrained
  from vit_jax.data import preprocess

  write_tfrecords(tmp_path / "data", num_shards=3, multi_label=True)
  write_tfrecords(tmp_path / "data", num_shards=2, multi_label=True, split="val", num=13)
  eval_pp = f"decode|resize(16)|value_range(-1,1)|onehot({NUM})"
  config = tiny_config(
      str(tmp_path / "data"), total_steps=8, eval_every=8, loss="sigmoid_xent",
      data=data_config("tfrecord", tmp_path / "data", multi_label=True,
                       eval_splits={"val": "val"}),
      **{"pp.train": f"decode|inception_crop(16)|flip_lr|value_range(-1,1)|onehot({NUM})",
         "pp.eval": eval_pp, "mixup.alpha": 0.4, "eval_batch": 8})
  summary = train.train_and_evaluate(config, str(tmp_path / "run"))

  # Precision@1 by hand: the top class of each of the 13 images is one of its labels.
  model = models.get_model(config.variant, num_classes=NUM, **config.model)
  params = pretrained.read_params(str(tmp_path / "run"))
  pp = preprocess.parse(eval_pp)
  hits = []
  for path in sorted((tmp_path / "data").glob("val-*")):
    for record in tf.data.TFRecordDataset(str(path)):
      example = tf.io.parse_single_example(record, {
          sources.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
          sources.LABEL_KEY: tf.io.VarLenFeature(tf.int64)})
      features = pp({"image": example[sources.IMAGE_KEY],
                     "label": tf.sparse.to_dense(example[sources.LABEL_KEY])})
      logits = model.apply({"params": params}, features["image"].numpy()[None], train=False)
      hits.append(features["labels"].numpy()[int(np.argmax(logits))] == 1)
  result = summary["eval"]["val"]
  assert result["num_examples"] == len(hits) == 13
  assert result["prec@1"] == pytest.approx(np.mean(hits))
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    train_records = [r for r in map(json.loads, f) if r["split"] == "train"]
  assert train_records[-1]["loss"] < train_records[0]["loss"]
  assert train_records[-1]["corrupt_images"] == 0


@pytest.mark.parametrize("layout, why", [
    ("loose", "it holds 1 image file(s) itself; put each class's images in a "
              "subfolder named after the class"),
    ("empty", "it needs class subfolders of JPEG and PNG files")])
def test_a_folder_split_without_class_folders_of_images_names_the_layout(tmp_path, layout, why):
  # It used to fail as a slice: "split 'train' holds no records of the 0 there".
  train = tmp_path / "train"
  (train / "class00").mkdir(parents=True)
  if layout == "loose":
    (train / "a.jpg").write_bytes(tf.io.encode_jpeg(image(1)).numpy())
  with pytest.raises(sources.DatasetNotPreparedError) as error:
    make_source("folder", tmp_path).num_examples("train")
  assert str(error.value) == (
      f"split 'train': no images in {train}/<class>/*.{{jpg,jpeg,png}} "
      f"(config.data.data_dir + config.data.pattern); {why}")


def test_rewriting_a_split_with_another_shard_count_is_refused_until_the_old_shards_go(
    tmp_path):
  # The old shards used to stay and match `train-*.tfrecord`: every example twice.
  write_tfrecords(tmp_path, num_shards=3)
  with pytest.raises(ValueError) as error:
    write_tfrecords(tmp_path, num_shards=2)
  assert str(error.value) == (
      f"{tmp_path} already holds 3 shard(s) of split 'train' of another shard count "
      "(train-00000-of-00003.tfrecord ...), which would be read with the 2 new ones; "
      "delete them first, or write to another directory")
  for old in glob.glob(str(tmp_path / "train-*-of-00003.tfrecord")):
    os.remove(old)
  manifest = write_tfrecords(tmp_path, num_shards=2)
  assert sorted(manifest["files"]) == ["train-00000-of-00002.tfrecord",
                                       "train-00001-of-00002.tfrecord"]
  assert manifest["count"] == NUM
  assert make_source("tfrecord", tmp_path).num_examples("train") == NUM


def write_png_folders(directory, per_class, colour=0):
  """Two class folders of ``per_class`` PNGs each."""
  for c in range(2):
    (directory / f"class{c}").mkdir(parents=True)
    for i in range(per_class):
      tf.io.write_file(str(directory / f"class{c}" / f"{i}.png"),
                       tf.io.encode_png(image(colour + c)))


def test_make_tfrecords_refuses_to_replace_a_split_until_overwrite_is_given(tmp_path):
  # A test folder written without --split=test used to replace the train
  # split silently: the manifest went from 8 train records to 4.
  write_png_folders(tmp_path / "train", per_class=4)
  write_png_folders(tmp_path / "test", per_class=2, colour=5)
  out = tmp_path / "tfr"
  make_tfrecords_main(f"--from_folder={tmp_path / 'train'}", f"--out_dir={out}",
                      "--num_shards=2")
  before = {path: open(path, "rb").read() for path in glob.glob(str(out / "*"))}
  for shards in (2, 4):  # of the same shard count, or of another
    with pytest.raises(SystemExit) as exit_info:
      make_tfrecords_main(f"--from_folder={tmp_path / 'test'}", f"--out_dir={out}",
                          f"--num_shards={shards}")
    assert str(exit_info.value) == (
        f"error: {out} already holds split 'train': 2 shard(s) (train-00000-of-00002"
        ".tfrecord ... train-00001-of-00002.tfrecord), 8 records in its manifest.json, "
        "which writing the split again would replace; give --overwrite to replace "
        "them, --split=NAME to write another split (train unless given), or another "
        "--out_dir")
    assert {path: open(path, "rb").read() for path in glob.glob(str(out / "*"))} == before
  make_tfrecords_main(f"--from_folder={tmp_path / 'test'}", f"--out_dir={out}",
                      "--num_shards=2", "--split=test")
  make_tfrecords_main(f"--from_folder={tmp_path / 'test'}", f"--out_dir={out}",
                      "--num_shards=4", "--overwrite")
  manifest = json.loads((out / sources.MANIFEST).read_text())
  assert manifest["files"] == {
      **{f"test-0000{i}-of-00002.tfrecord": 2 for i in range(2)},
      **{f"train-0000{i}-of-00004.tfrecord": 1 for i in range(4)}}
  assert sorted(os.listdir(out)) == [sources.MANIFEST, *sorted(manifest["files"])]


def test_write_split_refuses_a_split_already_written_and_overwrite_replaces_it(tmp_path):
  write_tfrecords(tmp_path, num_shards=2)
  before = {path: open(path, "rb").read() for path in glob.glob(str(tmp_path / "*"))}
  with pytest.raises(ValueError) as error:
    write_tfrecords(tmp_path, num_shards=2, num=4)
  assert str(error.value) == (
      f"{tmp_path} already holds split 'train': 2 shard(s) (train-00000-of-00002.tfrecord"
      f" ... train-00001-of-00002.tfrecord), {NUM} records in its manifest.json, which "
      "writing the split again would replace; pass overwrite=True to replace them, or "
      "write another split or to another directory")
  assert {path: open(path, "rb").read()
          for path in glob.glob(str(tmp_path / "*"))} == before
  examples = tfrecords.array_examples(np.stack([image(c) for c in range(4)]), np.arange(4))
  manifest = tfrecords.write_split(str(tmp_path), "train", examples, num_shards=1,
                                   overwrite=True)
  assert manifest["files"] == {"train-00000-of-00001.tfrecord": 4}
  assert sorted(os.listdir(tmp_path)) == [sources.MANIFEST,
                                          "train-00000-of-00001.tfrecord"]


@pytest.mark.parametrize("flags, problem", [
    (["--out_dir={tmp}/afile"], "--out_dir={tmp}/afile is a file; it is the directory "
     "the shards and their manifest go to (made if need be)"),
    (["--out_dir={tmp}/afile/tfr"], "--out_dir={tmp}/afile/tfr lies under {tmp}/afile, "
     "a file; it is the directory the shards and their manifest go to (made if need be)"),
    (["--out_dir={tmp}/out", "--split=a/b"], "--split=a/b is no file name prefix; the "
     "shards are --out_dir/SPLIT-00000-of-NNNNN.tfrecord, read through the glob "
     "config.data.pattern, so SPLIT is not empty and holds none of / * ? [ ] (train, "
     "test, val)"),
    (["--out_dir={tmp}/out", "--from_npz={tmp}/cut.npz"], "--from_npz: {tmp}/cut.npz is "
     "no readable .npz (File is not a zip file); it may be cut short or damaged; valid: "
     "'images' uint8 (N, H, W[, C]) and 'labels' (N,) or (N, 1) class ids, or (N, "
     "classes) 0/1 multi-hot rows (numpy.savez)"),
], ids=["out_dir_is_a_file", "out_dir_under_a_file", "split_with_a_slash", "cut_npz"])
def test_make_tfrecords_names_a_bad_out_dir_split_or_npz_in_one_line(
    tmp_path, flags, problem):
  # They used to end in TensorFlow's FailedPreconditionError and NotFoundError,
  # and zipfile's BadZipFile, as tracebacks.
  (tmp_path / "afile").write_text("kept")
  np.savez(tmp_path / "good.npz", images=GOOD_IMAGES, labels=np.arange(4))
  whole = (tmp_path / "good.npz").read_bytes()
  (tmp_path / "cut.npz").write_bytes(whole[:len(whole) // 2])
  flags = [flag.format(tmp=tmp_path) for flag in flags]
  if not any(flag.startswith("--from_npz") for flag in flags):
    flags.append(f"--from_npz={tmp_path / 'good.npz'}")
  with pytest.raises(SystemExit) as exit_info:
    make_tfrecords_main(*flags)
  assert str(exit_info.value) == f"error: {problem.format(tmp=tmp_path)}"
  assert (tmp_path / "afile").read_text() == "kept"
  assert not (tmp_path / "out").exists()
