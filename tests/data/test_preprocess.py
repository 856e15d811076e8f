"""The op registry and parser (vit_jax.data.preprocess): specs, seeds, errors."""
import jax
import numpy as np
import pytest
import tensorflow as tf

from preprocess_cases import MODES, example, jpeg_example, random_image, run
from vit_jax.data import preprocess

RANDOM_SPECS = ["flip_lr", "random_crop(8)", "inception_crop(8)",
                "decode_jpeg_and_inception_crop(8)", "randaug(2, 9)"]


@pytest.mark.parametrize("spec", RANDOM_SPECS)
@pytest.mark.parametrize("mode", MODES)
def test_random_ops_same_seed_same_output_other_seeds_differ(spec, mode):
  make = jpeg_example if spec.startswith("decode_jpeg") else (
      lambda seed: example(random_image(), seed))
  first = run(spec, make((5, 7)), mode)["image"]
  np.testing.assert_array_equal(first, run(spec, make((5, 7)), mode)["image"])
  others = [run(spec, make((5, s)), mode)["image"] for s in range(8, 14)]
  assert any(not np.array_equal(first, other) for other in others)


def test_eager_and_dataset_agree_for_random_ops():
  spec = "decode|inception_crop(8)|flip_lr|random_crop(6)"
  features = example(tf.io.encode_png(random_image()))
  np.testing.assert_array_equal(run(spec, features, "eager")["image"],
                                run(spec, features, "dataset")["image"])


def test_random_ops_in_one_spec_get_different_seeds():
  # Sharing a seed, two flips would always cancel out.
  image = random_image()
  outputs = [run("flip_lr|flip_lr", example(image, (s, 1)), "eager")["image"]
             for s in range(8)]
  assert any(np.array_equal(out, image[:, ::-1]) for out in outputs)


@pytest.mark.parametrize("spec", RANDOM_SPECS)
def test_random_op_without_rng_names_the_fix(spec):
  features = jpeg_example()
  del features["_rng"]
  with pytest.raises(ValueError, match="add_example_seeds"):
    preprocess.parse(spec)(features)


def test_empty_spec_is_identity():
  out = run("  ", {"image": tf.constant(random_image())}, "eager")
  np.testing.assert_array_equal(out["image"], random_image())


def test_unknown_op_is_named_and_every_op_is_registered_by_importing_the_package():
  with pytest.raises(ValueError, match="'no_such_op'") as error:
    preprocess.parse("decode|no_such_op(3)")
  for name in ["decode", "flip_lr", "inception_crop", "onehot", "resize"]:
    assert name in str(error.value)
  assert set(preprocess.registered_ops()) >= {
      "decode", "decode_jpeg_and_inception_crop", "resize", "resize_small",
      "central_crop", "random_crop", "inception_crop", "flip_lr",
      "value_range", "onehot", "keep", "randaug"}


@pytest.mark.parametrize("spec, bad_piece", [
    ("decode|resize(224", "resize(224"),
    ("resize(size)", "resize(size)"),
    ("decode||flip_lr", "decode||flip_lr"),
    ("preprocess.resize(3)", "preprocess.resize(3)"),
    ("resize(**{'size': 3})", "resize(**{'size': 3})"),
    ("resize(1, 2, 3, 4)", "resize(1, 2, 3, 4)"),
])
def test_malformed_spec_names_the_bad_piece(spec, bad_piece):
  with pytest.raises(ValueError) as error:
    preprocess.parse(spec)
  assert repr(bad_piece) in str(error.value)


@pytest.mark.parametrize("spec, problem, accepted", [
    # big_vision's names for arguments these ops call otherwise, or lack.
    ("inception_crop(224, area_mn=8)", "got an unexpected keyword argument 'area_mn'",
     "inception_crop(size, area_min=5, area_max=100, method='bilinear')"),
    ("onehot(10, depth=3)", "got an unexpected keyword argument 'depth'",
     "onehot(num_classes, key='label', key_result='labels', on=1.0, off=0.0)"),
    ("flip_lr(1)", "too many positional arguments", "flip_lr()"),
])
def test_arguments_an_op_does_not_take_are_named_with_those_it_takes(spec, problem, accepted):
  with pytest.raises(ValueError) as error:
    preprocess.parse(spec)
  assert str(error.value) == (f"Bad arguments in preprocessing op {spec!r}: {problem}; "
                              f"it takes {accepted}")


def test_register_rejects_duplicate_names():
  with pytest.raises(ValueError, match="already registered"):
    preprocess.register("resize")(lambda: None)


def test_add_example_seeds_is_deterministic_and_distinct():
  ds = tf.data.Dataset.range(5).map(lambda i: {"label": i})
  seeded = preprocess.add_example_seeds(ds, seed=42)
  first = [e["_rng"].numpy().tolist() for e in seeded]
  assert first == [e["_rng"].numpy().tolist() for e in seeded]
  assert len({tuple(rng) for rng in first}) == 5
  other = preprocess.add_example_seeds(ds, seed=43)
  assert first != [e["_rng"].numpy().tolist() for e in other]


def test_seeded_pipeline_replays_identically():
  images = np.stack([random_image(seed=s) for s in range(4)])
  ds = tf.data.Dataset.from_tensor_slices({"image": images})
  ds = preprocess.add_example_seeds(ds, seed=0).map(
      preprocess.parse("inception_crop(8)|flip_lr"))
  first, second = ([e["image"].numpy() for e in ds] for _ in range(2))
  np.testing.assert_array_equal(first, second)
  assert "_rng" not in ds.element_spec
