"""The input pipeline: exact eval, disjoint process slices, clear missing-data errors."""
import time

import ml_collections
import numpy as np
import pytest

from configs import common, demo
from conftest import NUM_TEST, NUM_TRAIN, tiny_config
from vit_jax.data import input_pipeline, sources

EVAL_PP = "decode|resize(16)|value_range(-1,1)|onehot(10)|keep('image','labels','label')"
TRAIN_PP = "decode|resize(16)|flip_lr|value_range(-1,1)|onehot(10)"


def data_config(data_dir):
  return common.dataset_config("fashion_mnist", data_dir=data_dir)


def source(data_dir):
  return sources.get_source(data_config(data_dir))


def test_eval_counts_every_example_once_with_a_padded_last_batch(fashion_data_dir):
  eval_data = input_pipeline.EvalData(source(fashion_data_dir), EVAL_PP,
                                      "test", image_size=16, global_batch=40)
  batches = list(eval_data)
  assert eval_data.num_examples == NUM_TEST
  assert len(batches) == eval_data.num_batches == 3  # 40 + 40 + 23 real
  assert all(b["image"].shape == (40, 16, 16, 3) for b in batches)
  masks = np.concatenate([b["mask"] for b in batches])
  assert masks.sum() == NUM_TEST and masks[:NUM_TEST].all() and not masks[NUM_TEST:].any()


def test_eval_slices_of_two_processes_are_disjoint_and_cover_the_split(fashion_data_dir):
  seen = []
  for index in range(2):
    eval_data = input_pipeline.EvalData(
        source(fashion_data_dir), "decode|resize(16)|value_range(-1,1)|onehot(10)",
        "test", image_size=16, global_batch=40, process_index=index, process_count=2)
    batches = list(eval_data)
    assert len(batches) == 3  # ceil(52 / 20): both processes yield as many
    images = np.concatenate([b["image"] for b in batches])[
        np.concatenate([b["mask"] for b in batches])]
    seen.append({img.tobytes() for img in images})
  assert len(seen[0]) + len(seen[1]) == NUM_TEST
  assert not seen[0] & seen[1]


def test_an_eval_split_of_fewer_examples_than_processes_is_refused_on_every_process(
    fashion_data_dir):
  # Only the process without an example used to fail; the others waited for
  # it in the first collective until the coordination service gave up.
  for index in range(3):
    with pytest.raises(ValueError, match=r"^eval split 'test\[:2\]' has 2 examples, fewer "
                                         r"than the 3 processes; each must read one or more$"):
      input_pipeline.EvalData(source(fashion_data_dir), "decode|onehot(10)", "test[:2]",
                              image_size=28, global_batch=3, process_index=index,
                              process_count=3)


def test_train_slices_of_two_processes_are_disjoint(fashion_data_dir):
  seen = []
  for index in range(2):
    batches = input_pipeline.train_batches(
        source(fashion_data_dir), "decode|value_range(0,255)|onehot(10)",
        global_batch=64, seed=0, process_index=index, process_count=2)
    epoch = [next(batches) for _ in range(NUM_TRAIN // 64)]  # one epoch each
    assert epoch[0]["image"].shape == (32, 28, 28, 3)
    seen.append({img.tobytes() for b in epoch for img in b["image"]})
    assert len(seen[-1]) == NUM_TRAIN // 2  # each example once per epoch
  assert not seen[0] & seen[1]
  assert len(seen[0] | seen[1]) == NUM_TRAIN


def test_train_stream_is_reproducible_and_resumes_at_a_step(fashion_data_dir):
  def stream(start_step):
    return input_pipeline.train_batches(
        source(fashion_data_dir), TRAIN_PP, global_batch=16, seed=3,
        start_step=start_step)
  full = [next(b) for b in [stream(0)] for _ in range(6)]
  resumed = stream(4)
  for expected in full[4:]:
    got = next(resumed)
    np.testing.assert_array_equal(got["image"], expected["image"])
    np.testing.assert_array_equal(got["labels"], expected["labels"])


def test_a_missing_dataset_fails_fast_naming_it_and_the_data_dir(tmp_path):
  config = ml_collections.ConfigDict(dict(common.dataset_config("imagenet21k",
                                                                data_dir=str(tmp_path))))
  start = time.monotonic()
  with pytest.raises(sources.DatasetNotPreparedError) as error:
    sources.get_source(config).num_examples(config.train_split)
  assert time.monotonic() - start < 5
  message = str(error.value)
  assert "'imagenet21k'" in message and str(tmp_path) in message
  assert "make_tfrecords.py --from_folder=DIR_OF_CLASS_FOLDERS" in message
  assert "--index_only" in message and "Nothing is downloaded" in message


def test_a_missing_tfds_dataset_says_how_to_build_it(tmp_path):
  config = common.dataset_config("imagenet2012", data_dir=str(tmp_path))
  with pytest.raises(sources.DatasetNotPreparedError) as error:
    sources.get_source(config).num_examples(config.train_split)
  message = str(error.value)
  assert "'imagenet2012'" in message and str(tmp_path) in message
  assert "tfds build imagenet2012 --manual_dir" in message


def test_an_unknown_dataset_name_is_named(tmp_path):
  config = common.dataset_config("cifar10", data_dir=str(tmp_path))
  config.name = "no_such_dataset"
  with pytest.raises(sources.DatasetNotPreparedError, match="'no_such_dataset'"):
    sources.get_builder(config)


def test_preprocessing_without_labels_is_explained(fashion_data_dir):
  with pytest.raises(ValueError, match=r"without \['labels'\]"):
    next(input_pipeline.train_batches(
        source(fashion_data_dir), "decode|value_range(-1,1)",
        global_batch=8, seed=0))


def test_preprocessing_of_another_image_size_is_named_before_the_model_is_built(
    fashion_data_dir, tmp_path):
  from vit_jax import train

  config = tiny_config(fashion_data_dir, image_size=20)  # its strings resize(16)
  with pytest.raises(ValueError) as error:
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert str(error.value) == (
      "config.pp.train='decode|resize(16)|flip_lr|value_range(-1,1)|onehot(10)' gives "
      "16x16 images but config.image_size=20, the size the model's position embeddings "
      "are made for; make its crop or resize size match")


def test_preprocessing_of_another_class_count_is_named(fashion_data_dir):
  config = tiny_config(fashion_data_dir, **{"pp.eval": "decode|resize(16)|onehot(12)"})
  with pytest.raises(ValueError, match=r"^config.pp.eval='decode\|resize\(16\)\|onehot\(12\)' "
                     r"gives 12 classes but config.data.num_classes=10, the size of "
                     r"the model's head; make its onehot\(N\) match$"):
    input_pipeline.check_fits_model(source(fashion_data_dir), config)


def test_the_stock_strings_follow_an_image_size_override_and_fit_the_model(fashion_data_dir):
  config = demo.get_config(f"stage=pretrain,data_dir={fashion_data_dir}")
  config.image_size = 24
  input_pipeline.check_fits_model(source(fashion_data_dir), config)
  assert "inception_crop(24,area_min=50)" in config.pp.train


@pytest.mark.parametrize("spec", ["value_range(-1,1)|onehot(10)",
                                  "resize(16)|value_range(-1,1)|onehot(10)"])
def test_preprocessing_that_never_decodes_is_named_before_the_model_is_built(
    fashion_data_dir, spec):
  # The traced image is then the encoded string, of shape []: it used to fail
  # with "not enough values to unpack (expected 2, got 0)", and in an image op
  # with TensorFlow's "'images' must have either 3 or 4 dimensions".
  config = tiny_config(fashion_data_dir, **{"pp.eval": spec})
  with pytest.raises(ValueError) as error:
    input_pipeline.check_fits_model(source(fashion_data_dir), config)
  assert str(error.value) == (
      f"config.pp.eval={spec!r} has no decode op, and the dataset's images are encoded "
      f"files; start it with decode or decode_jpeg_and_inception_crop")


def test_an_ops_own_error_surfaces_as_raised_when_the_strings_are_checked(fashion_data_dir):
  # Traced with autograph, it came buried in a multi-line "in user code:" traceback.
  config = tiny_config(fashion_data_dir, **{"pp.eval": "decode|resize(16)|keep('img')"})
  with pytest.raises(KeyError) as error:
    input_pipeline.check_fits_model(source(fashion_data_dir), config)
  assert error.value.args[0] == ("keep: no feature(s) ['img']; available: "
                                 "['_id', 'image', 'label'].")  # eval's: no seed


def test_a_batch_that_cannot_be_read_raises_in_its_turn_not_while_prefetched():
  """The two batches before it are yielded first: their steps run, and a
  checkpoint due among them is taken."""
  import jax
  from vit_jax.train import sharding

  def host_batches():
    for i in range(2):
      yield {"image": np.full((8, 2), i, np.float32)}
    raise ValueError("shard 3 holds fewer records than its count says")

  batch_sharding = sharding.batch_sharding(sharding.make_mesh(ml_collections.ConfigDict(
      dict(data=-1, fsdp=1, model=1)), jax.devices()[:2]))
  batches = input_pipeline.prefetch_to_devices(host_batches(), batch_sharding, size=2)
  assert [int(next(batches)["image"][0, 0]) for _ in range(2)] == [0, 1]
  with pytest.raises(ValueError, match="shard 3 holds fewer records"):
    next(batches)
  assert list(input_pipeline.prefetch_to_devices(iter([]), batch_sharding)) == []


class _EveryProcessReadsTheFirstShare:
  """A source whose processes all read process 0's share of a split."""

  def __init__(self, source):
    self._source = source

  def __getattr__(self, name):
    return getattr(self._source, name)

  def read(self, split, process_index, process_count, **kwargs):
    del process_index
    return self._source.read(split, 0, process_count, **kwargs)


def test_each_seed_and_each_process_draw_a_shuffle_and_augmentation_of_their_own(
    fashion_data_dir):
  """Given the same examples, the stream of seed 0 on process 0 differs from
  seed 1's and from process 1's: another seed is another run, and processes
  sharing a seed would crop and flip the i-th example of each host alike."""
  same_examples = _EveryProcessReadsTheFirstShare(source(fashion_data_dir))
  def first_batch(seed, process_index):
    return next(input_pipeline.train_batches(
        same_examples, TRAIN_PP, global_batch=16, seed=seed,
        process_index=process_index, process_count=2))["image"]
  reference = first_batch(0, 0)
  assert not np.array_equal(first_batch(1, 0), reference)
  assert not np.array_equal(first_batch(0, 1), reference)


def test_each_epoch_holds_every_example_once_in_a_new_order(fashion_data_dir):
  """Shuffled before the repeat and reshuffled each epoch: whole epochs, and
  no fixed order the model could learn across them."""
  batches = input_pipeline.train_batches(
      source(fashion_data_dir), "decode|value_range(0,255)|onehot(10)",
      global_batch=64, seed=0)
  epochs = [[img.tobytes() for _ in range(NUM_TRAIN // 64) for img in next(batches)["image"]]
            for _ in range(2)]
  assert len(set(epochs[0])) == NUM_TRAIN and set(epochs[0]) == set(epochs[1])
  assert epochs[0] != epochs[1]


def test_a_second_process_resumes_at_its_own_share_of_the_steps_taken(fashion_data_dir):
  """Each process skips start_step * (global_batch / process_count) of its
  own examples, not start_step * global_batch."""
  def stream(start_step):
    return input_pipeline.train_batches(
        source(fashion_data_dir), TRAIN_PP, global_batch=16, seed=3,
        start_step=start_step, process_index=1, process_count=2)
  full = [next(b) for b in [stream(0)] for _ in range(5)]
  resumed = stream(3)
  for expected in full[3:]:
    np.testing.assert_array_equal(next(resumed)["image"], expected["image"])


def test_a_process_with_fewer_eval_examples_pads_with_whole_masked_batches(fashion_data_dir):
  """41 examples on 2 processes, 20 a batch each: 21 and 20, so both yield
  ceil(21 / 20) = 2 batches, one process's second all padding; a process
  yielding fewer would leave the others waiting in a collective."""
  masks = []
  for index in range(2):
    batches = list(input_pipeline.EvalData(
        source(fashion_data_dir), EVAL_PP, "test[:41]", image_size=16, global_batch=40,
        process_index=index, process_count=2))
    assert len(batches) == 2
    assert all(b["image"].shape == (20, 16, 16, 3) for b in batches)
    masks.append([int(b["mask"].sum()) for b in batches])
  assert sorted(masks) == [[20, 0], [20, 1]]


def test_processes_share_a_split_that_does_not_divide_evenly_record_by_record(tmp_path):
  """25 records in 2 TFRecord files over 3 processes: shares of 8, 8 and 9
  records (within one of each other, as every process reads a batch a step),
  each record in exactly one share; none is dropped for the remainder."""
  from vit_jax.data import tfrecords

  num = 25
  images = np.stack([np.full((8, 8, 3), 10 * i, np.uint8) for i in range(num)])
  tfrecords.write_split(str(tmp_path), "train", tfrecords.array_examples(images, np.arange(num)),
                        num_shards=2)
  config = ml_collections.ConfigDict(dict(
      source="tfrecord", name="records", data_dir=str(tmp_path),
      pattern="{split}-*.tfrecord", strict=False, num_classes=num, multi_label=False,
      train_split="train", eval_splits={}, shuffle_buffer=64, cache=False))
  records = sources.get_source(config)
  assert records.process_counts("train", 3) == [8, 8, 9]
  shares = []
  for index in range(3):
    batches = input_pipeline.EvalData(records, f"decode|onehot({num})", "train", image_size=8,
                                      global_batch=30, process_index=index, process_count=3)
    shares.append([int(c) for b in batches for c in b["labels"][b["mask"]].argmax(-1)])
  assert sorted(sum(shares, [])) == list(range(num))
