"""Tests for vit_jax.data.preprocess: every op eagerly and inside tf.data.map."""
import jax
import numpy as np
import pytest
import tensorflow as tf

from vit_jax.data import preprocess
from vit_jax.train import mixup

MODES = ["eager", "dataset"]
RANDOM_SPECS = ["flip_lr", "random_crop(8)", "inception_crop(8)",
                "decode_jpeg_and_inception_crop(8)", "randaug(2, 9)"]


def run(spec: str, features: dict, mode: str) -> dict:
  """Applies `spec` to one example, eagerly or as a tf.data map (graph)."""
  fn = preprocess.parse(spec)
  if mode == "eager":
    out = fn(features)
  else:
    out = next(iter(tf.data.Dataset.from_tensors(features).map(fn)))
  return {k: v.numpy() for k, v in out.items()}


def random_image(height=20, width=24, channels=3, seed=0) -> np.ndarray:
  return np.random.RandomState(seed).randint(
      0, 256, (height, width, channels)).astype(np.uint8)


def example(image, seed=(1, 2), **extra) -> dict:
  """An example as the input pipeline gives it: image, label and '_rng'."""
  return {"image": tf.constant(image), "label": tf.constant(3, tf.int64),
          "_rng": tf.constant(seed, tf.int64), **extra}


def jpeg_example(seed=(1, 2)) -> dict:
  return example(tf.io.encode_jpeg(random_image(32, 40)), seed)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("spec, shape, dtype", [
    ("decode", (20, 24, 3), np.uint8),
    ("decode(1)", (20, 24, 1), np.uint8),
    ("resize(8)", (8, 8, 3), np.uint8),
    ("resize((6, 10), method='nearest')", (6, 10, 3), np.uint8),
    ("resize_small(10)", (10, 12, 3), np.uint8),
    ("central_crop(8)", (8, 8, 3), np.uint8),
    ("central_crop((6, 10))", (6, 10, 3), np.uint8),
    ("random_crop((6, 10))", (6, 10, 3), np.uint8),
    ("inception_crop(8)", (8, 8, 3), np.uint8),
    ("inception_crop((8, 12), area_min=50)", (8, 12, 3), np.uint8),
    ("flip_lr", (20, 24, 3), np.uint8),
    ("value_range(-1, 1)", (20, 24, 3), np.float32),
    ("decode|inception_crop(8)|flip_lr|value_range(-1,1)", (8, 8, 3),
     np.float32),
])
def test_image_op_shapes_and_dtypes(spec, shape, dtype, mode):
  out = run(spec, example(random_image()), mode)
  assert out["image"].shape == shape
  assert out["image"].dtype == dtype
  assert out["label"] == 3


def test_static_shapes_inside_dataset():
  ds = tf.data.Dataset.from_tensors(example(random_image())).map(
      preprocess.parse("random_crop(8)|resize(6)|onehot(10)"))
  assert ds.element_spec["image"].shape == (6, 6, 3)
  assert ds.element_spec["labels"].shape == (10,)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("encode", [tf.io.encode_png, tf.io.encode_jpeg])
def test_decode_encoded_images(encode, mode):
  image = random_image(12, 16)
  out = run("decode", {"image": encode(image)}, mode)
  assert out["image"].shape == (12, 16, 3)
  assert out["image"].dtype == np.uint8
  if encode is tf.io.encode_png:  # Lossless, so exact.
    np.testing.assert_array_equal(out["image"], image)


@pytest.mark.parametrize("mode", MODES)
def test_decode_grayscale_png_to_three_channels(mode):
  gray = random_image(12, 16, channels=1)
  out = run("decode", {"image": tf.io.encode_png(gray)}, mode)
  np.testing.assert_array_equal(out["image"], np.repeat(gray, 3, axis=-1))


@pytest.mark.parametrize("mode", MODES)
def test_decode_already_decoded_uint8_fixes_channels(mode):
  gray = random_image(12, 16, channels=1)
  out = run("decode", {"image": tf.constant(gray)}, mode)
  np.testing.assert_array_equal(out["image"], np.repeat(gray, 3, axis=-1))
  rgb = random_image(12, 16)
  np.testing.assert_array_equal(
      run("decode", {"image": tf.constant(rgb)}, mode)["image"], rgb)


def test_decode_unknown_channel_count_inside_dataset():
  gray = random_image(12, 16, channels=1)
  ds = tf.data.Dataset.from_tensors(gray).map(
      lambda image: {"image": tf.ensure_shape(image, [None, None, None])})
  out = next(iter(ds.map(preprocess.parse("decode"))))
  np.testing.assert_array_equal(out["image"], np.repeat(gray, 3, axis=-1))


@pytest.mark.parametrize("mode", MODES)
def test_decode_jpeg_and_inception_crop(mode):
  out = run("decode_jpeg_and_inception_crop((8, 12))", jpeg_example(), mode)
  assert out["image"].shape == (8, 12, 3)
  assert out["image"].dtype == np.uint8


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("channels", [3, 1])
def test_decode_jpeg_and_inception_crop_of_a_png_is_decode_then_inception_crop(mode, channels):
  """A PNG (a PNG dataset, or ImageNet's PNGs named .JPEG) is decoded whole."""
  png = example(tf.io.encode_png(random_image(32, 40, channels)), seed=(5, 6))
  out = run("decode_jpeg_and_inception_crop((8, 12), area_max=50)", png, mode)
  expected = run("decode|inception_crop((8, 12), area_max=50)", png, mode)
  np.testing.assert_array_equal(out["image"], expected["image"])
  assert out["image"].shape == (8, 12, 3)


@pytest.mark.parametrize("mode", MODES)
def test_value_range_maps_endpoints(mode):
  image = np.array([[[0], [255]]], np.uint8)
  out = run("value_range(-1, 1)", {"image": tf.constant(image)}, mode)
  np.testing.assert_allclose(out["image"].ravel(), [-1.0, 1.0])
  out = run("value_range(0, 1, in_min=-1, in_max=1)",
            {"image": tf.constant([-1.0, 0.0, 1.0])}, mode)
  np.testing.assert_allclose(out["image"], [0.0, 0.5, 1.0])


@pytest.mark.parametrize("mode", MODES)
def test_flip_lr_is_identity_or_mirror_and_both_happen(mode):
  image = random_image()
  flipped = []
  for seed in range(8):
    out = run("flip_lr", example(image, (seed, 0)), mode)["image"]
    if np.array_equal(out, image[:, ::-1]):
      flipped.append(True)
    else:
      np.testing.assert_array_equal(out, image)
      flipped.append(False)
  assert set(flipped) == {True, False}


@pytest.mark.parametrize("mode", MODES)
def test_central_crop_takes_the_centre(mode):
  image = np.arange(10 * 12, dtype=np.uint8).reshape(10, 12, 1)
  out = run("central_crop((4, 6))", {"image": tf.constant(image)}, mode)
  np.testing.assert_array_equal(out["image"], image[3:7, 3:9])


@pytest.mark.parametrize("mode", MODES)
def test_random_crop_is_a_window_of_the_input(mode):
  image = np.arange(10 * 12, dtype=np.uint8).reshape(10, 12, 1)
  out = run("random_crop((4, 6))", example(image), mode)["image"]
  top, left = np.argwhere(image[..., 0] == out[0, 0, 0])[0]
  np.testing.assert_array_equal(out, image[top:top + 4, left:left + 6])


@pytest.mark.parametrize("mode", MODES)
def test_resize_small_keeps_aspect_ratio(mode):
  out = run("resize_small(15)", {"image": tf.constant(random_image(30, 60))},
            mode)
  assert out["image"].shape == (15, 30, 3)


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


@pytest.mark.parametrize("mode", MODES)
def test_onehot_scalar_label(mode):
  out = run("onehot(5)", {"label": tf.constant(3, tf.int64)}, mode)
  np.testing.assert_array_equal(out["labels"], [0, 0, 0, 1, 0])
  assert out["labels"].dtype == np.float32
  assert out["label"] == 3


@pytest.mark.parametrize("mode", MODES)
def test_onehot_vector_is_multi_hot(mode):
  out = run("onehot(5, key='tags', key_result='targets', on=0.9, off=0.1)",
            {"tags": tf.constant([1, 3, 3], tf.int64)}, mode)
  np.testing.assert_allclose(out["targets"], [0.1, 0.9, 0.1, 0.9, 0.1])
  empty = run("onehot(3)", {"label": tf.zeros([0], tf.int64)}, mode)
  np.testing.assert_array_equal(empty["labels"], [0, 0, 0])


@pytest.mark.parametrize("mode", MODES)
def test_keep_and_rng_is_dropped(mode):
  out = run("flip_lr|keep('image')|flip_lr", example(random_image()), mode)
  assert set(out) == {"image"}


def test_empty_spec_is_identity():
  out = run("  ", {"image": tf.constant(random_image())}, "eager")
  np.testing.assert_array_equal(out["image"], random_image())


def test_unknown_op_is_named_and_valid_ops_listed():
  with pytest.raises(ValueError, match="'no_such_op'") as error:
    preprocess.parse("decode|no_such_op(3)")
  for name in ["decode", "flip_lr", "inception_crop", "onehot", "resize"]:
    assert name in str(error.value)
  assert set(preprocess.registered_ops()) >= {
      "decode", "decode_jpeg_and_inception_crop", "resize", "resize_small",
      "central_crop", "random_crop", "inception_crop", "flip_lr",
      "value_range", "onehot", "keep"}


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


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(preprocess.randaug_ops(0)))
def test_each_randaug_op_keeps_shape_and_dtype_and_is_identity_where_it_should_be(name, mode):
  image = random_image()
  fn = preprocess.randaug_ops(7)[name]
  if mode == "eager":
    out = fn(tf.constant(image), -1.0).numpy()
  else:
    ds = tf.data.Dataset.from_tensors(image).map(lambda x: fn(x, -1.0))
    out = next(iter(ds)).numpy()
  assert out.shape == image.shape and out.dtype == np.uint8
  if name == "invert":
    np.testing.assert_array_equal(out, 255 - image)
  elif name != "identity":
    assert not np.array_equal(out, image), name
  weakest = preprocess.randaug_ops(0)[name](tf.constant(image), 1.0).numpy()
  if name not in ("invert", "auto_contrast"):  # no strength knob
    np.testing.assert_array_equal(weakest, image)


@pytest.mark.parametrize("mode", MODES)
def test_randaug_keeps_shape_and_is_seeded_and_rejects_floats(mode):
  out = run("randaug(3, 10)", example(random_image()), mode)
  assert out["image"].shape == (20, 24, 3) and out["image"].dtype == np.uint8
  with pytest.raises(ValueError, match="before value_range"):
    run("value_range(0, 1)|randaug", example(random_image()), mode)
  with pytest.raises(ValueError, match="magnitude must be in 0..10"):
    preprocess.parse("randaug(2, 11)")


@pytest.mark.parametrize("mode", MODES)
def test_is_decodable_accepts_whole_images_and_rejects_truncated_or_foreign(mode):
  jpeg = tf.io.encode_jpeg(random_image()).numpy()
  png = tf.io.encode_png(random_image()).numpy()
  cases = {jpeg: True, png: True, jpeg + b"\0" * 10: True, jpeg[:-40]: False,
           png[:len(png) // 2]: False, b"": False, b"GIF": False, b"not an image": False}
  data = tf.constant(list(cases))
  if mode == "eager":
    got = [bool(preprocess.is_decodable(d)) for d in data]
  else:
    got = [bool(v) for v in tf.data.Dataset.from_tensor_slices(data).map(
        preprocess.is_decodable)]
  assert got == list(cases.values())


def test_mixup_blends_each_example_with_its_neighbour():
  images = jax.numpy.arange(4 * 3, dtype=jax.numpy.float32).reshape(4, 3)
  labels = jax.numpy.eye(4)
  same = mixup.mixup(jax.random.key(0), images, labels, alpha=0.0)
  np.testing.assert_array_equal(same[0], images)
  mixed_images, mixed_labels = jax.jit(
      lambda k, x, y: mixup.mixup(k, x, y, alpha=0.4))(jax.random.key(1), images, labels)
  weight = float(mixed_labels[0, 0])
  assert 0 < weight < 1
  np.testing.assert_allclose(mixed_labels[0, 3], 1 - weight, rtol=1e-6)
  np.testing.assert_allclose(mixed_images, weight * images + (1 - weight) * np.roll(images, 1, 0),
                             rtol=1e-6)
  np.testing.assert_allclose(mixed_labels.sum(axis=1), 1, rtol=1e-6)
