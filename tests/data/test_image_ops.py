"""Image ops (vit_jax.data.preprocess.image_ops), eagerly and inside tf.data.map."""
import numpy as np
import pytest
import tensorflow as tf

from preprocess_cases import MODES, example, jpeg_example, random_image, run
from vit_jax.data import preprocess
from vit_jax.data.preprocess import image_ops


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


@pytest.mark.parametrize("mode", MODES)
def test_resize_small_averages_areas_by_default_and_takes_a_method(mode):
  # A 3x downscale: area interpolation gives each 3x3 block's mean, while
  # bilinear (half-pixel centres, no antialias) samples the block's centre.
  image = np.random.RandomState(0).rand(6, 12, 1).astype(np.float32)
  blocks = image.reshape(2, 3, 4, 3, 1)
  area = run("resize_small(2)", {"image": tf.constant(image)}, mode)["image"]
  np.testing.assert_allclose(area, blocks.mean(axis=(1, 3)), rtol=1e-6)
  bilinear = run("resize_small(2, method='bilinear')", {"image": tf.constant(image)},
                 mode)["image"]
  np.testing.assert_allclose(bilinear, blocks[:, 1, :, 1], rtol=1e-6)


@pytest.mark.parametrize("method, pil_method", [("bilinear", 2), ("bicubic", 3)])
def test_an_antialiased_shrink_is_pils_within_one_level(method, pil_method):
  # PIL's resizes are what timm's and Hugging Face's eval transforms run.
  from PIL import Image
  image = random_image(97, 131)
  expected = np.asarray(Image.fromarray(image).resize((40, 32), pil_method), np.int32)
  def shrink(spec):
    return run(spec, {"image": tf.constant(image)}, "eager")["image"].astype(np.int32)
  assert np.abs(shrink(f"resize((32, 40), '{method}', antialias=True)") - expected).max() <= 1
  assert np.abs(shrink(f"resize((32, 40), '{method}')") - expected).max() > 50  # aliased
  smaller = run(f"resize_small(32, '{method}', antialias=True)", {"image": tf.constant(image)},
                "eager")["image"]
  assert smaller.shape == (32, 43, 3)
  with pytest.raises(ValueError, match=r"^resize: antialias must be True or False, "
                     r"got 'False'\.$"):
    preprocess.parse("resize(8, antialias='False')")


def test_inception_boxes_go_below_a_tenth_of_the_image_down_to_area_min():
  """TensorFlow's min_object_covered=0.1 would keep every box >= 10%."""
  areas = []
  for seed in range(400):
    _, size = image_ops._inception_box(tf.constant([100, 100, 3]),
                                       tf.constant([seed, 7]), 5, 100)
    areas.append(int(size[0]) * int(size[1]) / 100**2)
  assert min(areas) >= 0.05
  assert sum(area < 0.1 for area in areas) >= 5


@pytest.mark.parametrize("spec", ["resize((16,))", "central_crop([16, 16, 3])"])
def test_a_size_that_is_no_int_or_pair_is_named(spec):
  # It used to fail with Python's "not enough (too many) values to unpack".
  size = spec[spec.index("(") + 1:-1]
  with pytest.raises(ValueError) as error:
    preprocess.parse(spec)
  assert str(error.value) == (f"Bad arguments in preprocessing op {spec!r}: size {size} "
                              f"is neither an int (a square) nor a (height, width) pair, "
                              f"e.g. 224 or (224, 160)")


@pytest.mark.parametrize("spec, message", [
    ("resize(224, method='cubic')", "resize: unknown method 'cubic'; valid: area, bicubic, "
     "bilinear, gaussian, lanczos3, lanczos5, mitchellcubic, nearest."),
    ("inception_crop(224, method='Bilinear')", "inception_crop: unknown method 'Bilinear'; "
     "valid: area, bicubic, bilinear, gaussian, lanczos3, lanczos5, mitchellcubic, nearest."),
    ("resize(0)", "resize: size 0 must be positive, e.g. 224 or (224, 160)."),
    ("central_crop((224, -1))", "central_crop: size (224, -1) must be positive, e.g. 224 or "
     "(224, 160)."),
    ("resize_small((256, 256))", "resize_small: smaller_size must be a positive int, the "
     "shorter side in pixels, e.g. 256; got (256, 256)."),
    ("inception_crop(224, area_min=50, area_max=10)", "inception_crop: area_min=50 and "
     "area_max=10 must satisfy 0 < area_min <= area_max <= 100 (percent of the image)."),
    ("decode_jpeg_and_inception_crop(224, area_min=0)", "decode_jpeg_and_inception_crop: "
     "area_min=0 and area_max=100 must satisfy 0 < area_min <= area_max <= 100 (percent of "
     "the image)."),
])
def test_a_bad_size_method_or_area_range_is_named_when_the_spec_is_parsed(spec, message):
  # They used to pass the parser: a bad method or size then failed on the
  # first image with TensorFlow's "Resize method is not implemented: cubic"
  # (no op named), and an inverted area range silently kept whole images.
  with pytest.raises(ValueError) as error:
    preprocess.parse(spec)
  assert str(error.value) == message


@pytest.mark.parametrize("mode", MODES)
def test_central_crop_floors_an_odd_margin_on_each_axis_as_big_visions(mode):
  """Margins of 7 rows and 9 columns: 3 rows above and 4 columns left,
  ``(size - crop) // 2`` per axis; even margins could not tell rows from
  columns or floor from ceiling."""
  image = np.arange(11 * 14, dtype=np.uint8).reshape(11, 14, 1)
  out = run("central_crop((4, 5))", {"image": tf.constant(image)}, mode)
  np.testing.assert_array_equal(out["image"], image[3:7, 4:9])


@pytest.mark.parametrize("mode", MODES)
def test_a_uint8_resize_rounds_to_the_nearest_level(mode):
  """Half-pixel bilinear of [0, 255] to 4 columns samples 0, 1/4, 3/4 and 1
  of the way: 63.75 and 191.25 round to 64 and 191, as PIL's resizes do
  (truncation would give 63)."""
  image = np.array([[[0], [255]]], np.uint8)
  out = run("resize((1, 4))", {"image": tf.constant(image)}, mode)["image"]
  np.testing.assert_array_equal(out[0, :, 0], np.round(np.interp(
      [-0.25, 0.25, 0.75, 1.25], [0, 1], [0, 255])).astype(np.uint8))


def test_decode_to_one_channel_of_a_decoded_rgb_image_is_its_luminance():
  """tfds data decoded to uint8 RGB, read with decode(1): grey by the
  ITU-R 601 weights (within a level of rounding), not one colour channel."""
  rgb = random_image(12, 16)
  grey = run("decode(1)", {"image": tf.constant(rgb)}, "eager")["image"]
  luminance = rgb.astype(np.float64) @ [0.299, 0.587, 0.114]
  assert grey.shape == (12, 16, 1)
  assert np.abs(grey[..., 0] - luminance).max() <= 1


@pytest.mark.parametrize("mode", MODES)
def test_decode_jpeg_and_inception_crop_of_a_jpeg_crops_the_box_decode_then_inception_crop_does(
    mode):
  """The JPEG window is the same box as the whole-image path's, rows as
  rows and columns as columns. Without chroma subsampling, decoding a
  window gives the whole image's pixels exactly."""
  jpeg = tf.io.encode_jpeg(random_image(32, 40), chroma_downsampling=False)
  for seed in range(4):
    features = example(jpeg, seed=(seed, 3))
    out = run("decode_jpeg_and_inception_crop((8, 12), area_max=50)", features, mode)
    expected = run("decode|inception_crop((8, 12), area_max=50)", features, mode)
    np.testing.assert_array_equal(out["image"], expected["image"])


def test_inception_boxes_keep_the_area_range_and_an_aspect_ratio_of_three_quarters_to_four_thirds():
  """The ViT paper's crop: areas within area_min..area_max % of the image,
  width / height within 3/4..4/3 (up to a pixel of rounding), both ends drawn."""
  areas, aspects = [], []
  for seed in range(300):
    _, size = image_ops._inception_box(tf.constant([100, 100, 3]),
                                       tf.constant([seed, 7]), 20, 50)
    height, width = int(size[0]), int(size[1])
    areas.append(height * width / 100**2)
    aspects.append(width / height)
  assert 0.2 <= min(areas) < 0.25 and 0.45 < max(areas) <= 0.5
  assert 0.72 < min(aspects) < 0.8 and 1.25 < max(aspects) < 1.37
