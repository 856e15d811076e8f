"""Split slices are counted as tfds counts them, and refused where tfds refuses them."""
import types

import pytest

from vit_jax.data import splits


@pytest.mark.parametrize("split, bounds", [
    ("train", (0, 500)), ("train[:98%]", (0, 490)), ("train[98%:]", (490, 500)),
    ("train[100:250]", (100, 250)), ("train[-50:]", (450, 500)),
    ("train[:-100%]", None), ("train[-100%:]", (0, 500)), ("train[:500]", (0, 500)),
])
def test_a_slice_within_the_split_gives_its_records(split, bounds):
  if bounds is None:
    with pytest.raises(ValueError, match=r"holds no records of the 500 there \(records \[0, 0\)\)"):
      splits.slice_bounds(split, 500)
  else:
    assert splits.slice_bounds(split, 500) == bounds


@pytest.mark.parametrize("split, message", [
    ("train[:150%]", "split 'train[:150%]': 150% lies outside the split of 500 "
     "records; valid bounds: -100% to 100%"),
    ("train[-101%:]", "split 'train[-101%:]': -101% lies outside"),
    ("train[600:]", "split 'train[600:]': 600 lies outside the split of 500 records; "
     "valid bounds: -500 to 500"),
    ("train[-501:]", "split 'train[-501:]': -501 lies outside"),
    ("train[300:200]", "split 'train[300:200]' holds no records of the 500 there "
     "(records [300, 200))"),
    ("train[1%:5]", "split 'train[1%:5]' is not 'name' or a slice like"),
])
def test_a_slice_outside_the_split_is_refused_not_clamped(split, message):
  with pytest.raises(ValueError) as error:
    splits.slice_bounds(split, 500)
  assert str(error.value).startswith(message)


@pytest.mark.parametrize("split, expected", [
    ("train", 1000), ("train[:98%]", 980), ("train[98%:]", 20),
    ("train[100:250]", 150), ("train+validation", 1300),
    ("train[:10%]+validation[50%:]", 250),
])
def test_published_sizes_count_slices_as_the_sources_do(split, expected):
  assert splits.examples_in_split(split, {"train": 1000, "validation": 300}) == expected


def test_a_split_without_a_published_size_is_named():
  with pytest.raises(KeyError, match="no size known for split 'val'; known: test, train"):
    splits.examples_in_split("val", {"train": 1, "test": 1})


@pytest.mark.parametrize("train, evaluated, shared", [
    ([("a", 0, 50)], [("a", 50, 60)], None),
    ([("a", 0, 50)], [("b", 0, 50)], None),
    ([("a", 0, 50), ("b", 0, 10)], [("b", 5, 20)], "records [5, 10) of b"),
    ([("a", 10, 50)], [("a", 0, 11)], "records [10, 11) of a"),
])
def test_an_eval_split_sharing_a_record_with_training_is_refused(train, evaluated, shared):
  def check():
    splits.check_disjoint("config.data.train_split", train,
                          "config.data.eval_splits.val", evaluated, hint=" (why)")
  if shared is None:
    check()
  else:
    with pytest.raises(ValueError) as error:
      check()
    assert str(error.value) == (
        f"config.data.eval_splits.val shares records with config.data.train_split: "
        f"both read {shared}, so the evaluation would score examples the model "
        f"trained on (why)")


@pytest.mark.parametrize("total", [7, 150, 1001, 2350])
@pytest.mark.parametrize("split", ["train[:99%]", "train[99%:]", "train[:98%]", "train[1%:3%]",
                                   "train[-10%:]", "train[:-2%]", "train[33%:67%]"])
def test_a_percent_slice_rounds_its_bounds_to_the_closest_record_as_tfds(split, total):
  """The held-out part of train that picks a fine-tuning lr (99% / 1% of
  ImageNet) must hold the records tfds's own `ReadInstruction` gives: 99% of
  1001 records is 990.99, so record 990 trains, not evaluates."""
  import tensorflow_datasets as tfds  # here: the other tests need no TensorFlow
  (absolute,) = tfds.core.ReadInstruction.from_spec(split).to_absolute(
      {"train": types.SimpleNamespace(num_examples=total)})
  expected = slice(absolute.from_, absolute.to).indices(total)[:2]
  if expected[0] >= expected[1]:
    with pytest.raises(ValueError, match="holds no records"):
      splits.slice_bounds(split, total)
  else:
    assert splits.slice_bounds(split, total) == expected
