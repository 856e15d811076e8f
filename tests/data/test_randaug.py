"""RandAugment (vit_jax.data.preprocess.randaug)."""
import collections

import numpy as np
import pytest
import tensorflow as tf

from preprocess_cases import MODES, example, random_image, run
from vit_jax.data import preprocess
from vit_jax.data.preprocess import randaug


SEED = tf.constant([3, 4], tf.int64)
NO_STRENGTH_KNOB = ("auto_contrast", "equalize", "invert")


def test_the_ops_are_big_visions_sixteen():
  # TF models' autoaugment.py list, which big_vision's randaug (and so the
  # AugReg checkpoints' randaug(2, 15)) draws from.
  assert list(randaug.randaug_ops(10)) == [
      "auto_contrast", "equalize", "invert", "rotate", "posterize", "solarize", "color",
      "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x",
      "translate_y", "cutout", "solarize_add"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(randaug.randaug_ops(0)))
def test_each_randaug_op_keeps_shape_and_dtype_and_is_identity_where_it_should_be(name, mode):
  image = random_image()
  fn = randaug.randaug_ops(7)[name]
  if mode == "eager":
    out = fn(tf.constant(image), SEED).numpy()
  else:
    ds = tf.data.Dataset.from_tensors(image).map(lambda x: fn(x, SEED))
    out = next(iter(ds)).numpy()
  assert out.shape == image.shape and out.dtype == np.uint8
  if name == "invert":
    np.testing.assert_array_equal(out, 255 - image)
  else:
    assert not np.array_equal(out, image), name
  weakest = randaug.randaug_ops(0)[name](tf.constant(image), SEED).numpy()
  if name not in NO_STRENGTH_KNOB:
    np.testing.assert_array_equal(weakest, image)


@pytest.mark.parametrize("image", [
    random_image(), random_image(31, 17, seed=1) // 3 + 40,  # a narrow histogram
    np.full((6, 5, 3), 7, np.uint8),  # one value: left as it is
    np.stack([np.full((4, 4), 3), np.full((4, 4), 9), np.eye(4) * 200], -1).astype(np.uint8)])
def test_equalize_is_pils(image):
  from PIL import Image, ImageOps
  out = randaug.randaug_ops(10)["equalize"](tf.constant(image), SEED).numpy()
  np.testing.assert_array_equal(out, np.asarray(ImageOps.equalize(Image.fromarray(image))))


@pytest.mark.parametrize("magnitude, side", [(10, 80), (5, 40), (20, 160)])
def test_cutout_greys_a_square_that_grows_with_magnitude_as_at_224_px(magnitude, side):
  # TF models' cutout: a half side of magnitude / 10 * 40 px at 224 px.
  image = random_image(224, 224) // 2  # no pixel already grey
  cutout = randaug.randaug_ops(magnitude)["cutout"]
  covered = []
  for seed in range(40):
    out = cutout(tf.constant(image), tf.constant([seed, 1], tf.int64)).numpy()
    grey = (out != image).any(-1)
    rows, columns = np.nonzero(grey)
    assert (out[grey] == 128).all()
    assert np.array_equal(out[~grey], image[~grey])
    height, width = np.ptp(rows) + 1, np.ptp(columns) + 1
    assert grey.sum() == height * width and max(height, width) <= side  # a clipped square
    covered.append(grey.sum())
  assert max(covered) == side * side  # away from the edges, the whole square


def test_magnitude_past_the_papers_ten_goes_on_and_saturates():
  image = random_image()
  strongest = randaug.randaug_ops(30)
  for name in ("posterize", "solarize", "brightness", "rotate"):
    out = strongest[name](tf.constant(image), SEED).numpy()
    assert out.shape == image.shape and not np.array_equal(out, image), name
  np.testing.assert_array_equal(strongest["solarize"](tf.constant(image), SEED), 255 - image)
  kept_bits = strongest["posterize"](tf.constant(image), SEED).numpy()
  np.testing.assert_array_equal(kept_bits, image & 0x80)  # one bit left, not none


@pytest.mark.parametrize("mode", MODES)
def test_randaug_keeps_shape_and_is_seeded_and_rejects_floats(mode):
  out = run("randaug(3, 10)", example(random_image()), mode)
  assert out["image"].shape == (20, 24, 3) and out["image"].dtype == np.uint8
  with pytest.raises(ValueError, match="before value_range"):
    run("value_range(0, 1)|randaug", example(random_image()), mode)
  with pytest.raises(ValueError, match="magnitude must be in 0..30, got 31"):
    preprocess.parse("randaug(2, 31)")
  preprocess.parse("randaug(2, 20)")  # AugReg's strongest


@pytest.mark.parametrize("mode", MODES)
def test_randaug_names_a_grey_image_and_the_decode_that_makes_rgb(mode):
  # Its colour ops (color, sharpness) work on RGB only; a grey image used to
  # fail while tracing, with a shape mismatch deep inside tf.switch_case.
  with pytest.raises(ValueError, match=r"randaug works on RGB images of 3 channels; got "
                     r"shape \(20, 24, 1\)\. Decode with decode \(3 channels\), not decode\(1\)\."):
    run("randaug(2, 10)", example(random_image(channels=1)), mode)


@pytest.mark.parametrize("name", ["brightness", "color", "contrast", "sharpness"])
def test_increasing_enhance_ops_go_either_way_as_timms(name):
  """timm's increasing variants: a factor of 1 + 0.9 * level or 1 - 0.9 *
  level (at least 0.1), with even odds; not always the stronger one."""
  op = randaug.randaug_ops(10)[name]
  seeds = [tf.constant([seed, 7], tf.int64) for seed in range(40)]
  image = random_image(24, 24) // 2 + 60
  assert len({op(tf.constant(image), seed).numpy().tobytes() for seed in seeds}) == 2
  if name == "brightness":  # a flat 100 times 1.9 or 0.1
    flat = tf.constant(np.full((4, 4, 3), 100, np.uint8))
    assert {int(op(flat, seed).numpy()[0, 0, 0]) for seed in seeds} == {190, 10}


@pytest.mark.parametrize("num_layers", [2.5, -1])
def test_randaug_refuses_a_layer_count_that_is_no_whole_number(num_layers):
  # It used to pass the parser and fail on the first image with TensorFlow's
  # "Value for attr 'Tshape' of float" or "Dimension -2 must be >= 0".
  with pytest.raises(ValueError) as error:
    preprocess.parse(f"randaug({num_layers}, 10)")
  assert str(error.value) == (f"randaug: num_layers must be a whole number >= 0, "
                              f"got {num_layers}.")


@pytest.mark.parametrize("magnitude, shift, threshold, factor", [
    (0, 7, 0, 0.1), (5, 6, 128, 1.0), (10, 4, 0, 1.9), (15, 2, 128, 2.8), (20, 0, 0, 3.7),
    (25, 7, 128, 4.6)])
def test_not_increasing_does_what_big_visions_randaug_does_on_a_cpu_host(
    magnitude, shift, threshold, factor):
  # TF models' level_to_arg at level = magnitude / 10: int(level * 4) bits
  # kept, threshold int(level * 256), factor level * 1.8 + 0.1; and what its
  # ops then do in TensorFlow: a shift of 8 or below 0 is clamped to 7, and
  # the threshold, compared with uint8 pixels, wraps modulo 256.
  image = random_image()
  ops = randaug.randaug_ops(magnitude, increasing=False)
  posterized = ops["posterize"](tf.constant(image), SEED).numpy()
  np.testing.assert_array_equal(posterized, image >> shift << shift)
  solarized = ops["solarize"](tf.constant(image), SEED).numpy()
  np.testing.assert_array_equal(solarized, np.where(image < threshold, image, 255 - image))
  brightened = ops["brightness"](tf.constant(image), SEED).numpy()
  np.testing.assert_array_equal(
      brightened, np.clip(image.astype(np.float32) * np.float32(factor), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("magnitude, factor", [(0, 0.1), (15, 2.8)])
def test_not_increasing_sharpness_blends_with_the_blur_cast_to_uint8_as_tf_models(
    magnitude, factor):
  # TF models' sharpness: the 3x3 smoothing clipped and cast to uint8 (which
  # truncates) before its blend; the border pixels are the image's own.
  image = random_image()
  kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13
  blurred = tf.nn.depthwise_conv2d(tf.constant(image, tf.float32)[tf.newaxis],
                                   np.tile(kernel[:, :, None, None], [1, 1, 3, 1]),
                                   [1, 1, 1, 1], "VALID")[0].numpy()
  degenerate = image.astype(np.float32)
  degenerate[1:-1, 1:-1] = np.clip(blurred, 0, 255).astype(np.uint8)
  want = np.clip(degenerate + np.float32(factor) * (image - degenerate), 0, 255)
  sharpened = randaug.randaug_ops(magnitude, increasing=False)["sharpness"](
      tf.constant(image), SEED).numpy()
  np.testing.assert_array_equal(sharpened, want.astype(np.uint8))


def test_translate_at_strength_10_shifts_100_pixels_at_224():
  image = np.tile(np.arange(224, dtype=np.uint8)[None, :, None], [8, 1, 3])
  for seed in range(4):  # either way
    row = randaug.randaug_ops(10)["translate_x"](
        tf.constant(image), tf.constant([seed, 0], tf.int64)).numpy()[0, :, 0]
    left = np.array_equal(row[:124], image[0, 100:, 0]) and (row[124:] == 128).all()
    right = np.array_equal(row[100:], image[0, :124, 0]) and (row[:100] == 128).all()
    assert left or right, row


def test_tensorflow_clamps_shifts_and_wraps_thresholds_as_the_emulation_assumes():
  # What TF models' posterize and solarize meet, checked on this TensorFlow.
  pixels = tf.constant([0, 100, 200, 255], tf.uint8)
  np.testing.assert_array_equal(
      tf.bitwise.left_shift(tf.bitwise.right_shift(pixels, 8), 8), [0, 0, 128, 128])
  for threshold, wrapped in ((256, 0), (384, 128)):
    np.testing.assert_array_equal(tf.where(pixels < threshold, pixels, 255 - pixels),
                                  np.where(pixels.numpy() < wrapped, pixels, 255 - pixels))


def test_increasing_must_be_a_bool():
  with pytest.raises(ValueError, match=r"^randaug: increasing must be True or False, "
                     r"got 'no'\.$"):
    preprocess.parse("randaug(2, 10, increasing='no')")


def test_rotate_at_strength_30_is_a_quarter_turn_either_way():
  """30 degrees at strength 10 and linear past it: 90 at 30, which turns a
  square of odd side onto itself exactly (np.rot90)."""
  image = random_image(7, 7)
  turns = set()
  for seed in range(6):
    out = randaug.randaug_ops(30)["rotate"](
        tf.constant(image), tf.constant([seed, 0], tf.int64)).numpy()
    turns |= {k for k in (1, -1) if np.array_equal(out, np.rot90(image, k))}
  assert turns == {1, -1}


def _sheared(image, amount, axis):
  """Nearest-pixel reference: output (x, y) reads input (x + amount * y, y)
  for shear_x, (x, y + amount * x) for shear_y; outside is grey."""
  height, width = image.shape[:2]
  out = np.full_like(image, 128)
  for y in range(height):
    for x in range(width):
      source_x, source_y = (x + amount * y, y) if axis == 0 else (x, y + amount * x)
      column, row = int(np.floor(source_x + 0.5)), int(np.floor(source_y + 0.5))
      if 0 <= column < width and 0 <= row < height:
        out[y, x] = image[row, column]
  return out


@pytest.mark.parametrize("name, axis, shape", [("shear_x", 0, (5, 9)), ("shear_y", 1, (9, 5))])
def test_shear_at_strength_10_is_0_3_either_way(name, axis, shape):
  # 5 rows (columns): offsets 0, 0.3, ..., 1.2 pixels, none half a pixel.
  image = random_image(*shape)
  amounts = set()
  for seed in range(6):
    out = randaug.randaug_ops(10)[name](tf.constant(image),
                                        tf.constant([seed, 0], tf.int64)).numpy()
    amounts |= {a for a in (0.3, -0.3) if np.array_equal(out, _sheared(image, a, axis))}
  assert amounts == {0.3, -0.3}


def test_solarize_add_at_strength_10_adds_110_below_128_as_tf_models():
  image = random_image()
  out = randaug.randaug_ops(10)["solarize_add"](tf.constant(image), SEED).numpy()
  want = np.where(image < 128, np.minimum(image.astype(np.int32) + 110, 255), image)
  np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("magnitude, shift, threshold", [
    (0, 0, 256), (2.5, 1, 192), (5, 2, 128), (10, 4, 0), (20, 7, 0)])
def test_increasing_posterize_and_solarize_grow_from_the_identity(magnitude, shift, threshold):
  """The default: posterize drops round(magnitude * 0.4) bits (4 bits kept at
  strength 10, as docs/input_pipelines.md says), at most 7; solarize inverts
  the pixels at or above 256 - magnitude * 25.6 (none at 0, all from 10)."""
  image = random_image()
  ops = randaug.randaug_ops(magnitude)
  np.testing.assert_array_equal(ops["posterize"](tf.constant(image), SEED),
                                image >> shift << shift)
  np.testing.assert_array_equal(ops["solarize"](tf.constant(image), SEED),
                                np.where(image < threshold, image, 255 - image))


def test_auto_contrast_stretches_each_channel_to_the_whole_range_exactly():
  """PIL's ImageOps.autocontrast, channel by channel: each channel's lowest
  value goes to 0, its highest to 255, and the rest to the whole part of
  (value - lowest) * 255 / (highest - lowest), computed here in integers.
  PIL's own double arithmetic lands some values a level below that, never
  above; a float32 scale once left a channel's highest value at 254."""
  from PIL import Image, ImageOps
  image = np.stack([random_image()[..., 0] // 2 + 30, random_image()[..., 1] // 4,
                    random_image()[..., 2] // 3 + 100], -1).astype(np.uint8)
  out = randaug.randaug_ops(10)["auto_contrast"](tf.constant(image), SEED).numpy()
  low, high = image.min(axis=(0, 1)).astype(int), image.max(axis=(0, 1)).astype(int)
  np.testing.assert_array_equal(out, (image.astype(int) - low) * 255 // (high - low))
  assert (out.max(axis=(0, 1)) == 255).all() and (out.min(axis=(0, 1)) == 0).all()
  pils = np.asarray(ImageOps.autocontrast(Image.fromarray(image)), np.int32)
  assert set(np.unique(out - pils)) <= {0, 1}
  # Every range width whose float32 scale left the top at 254 reaches 255.
  for width in (7, 14, 28, 41):
    channel = np.arange(width + 1, dtype=np.uint8)[None, :, None].repeat(3, -1)
    assert randaug.randaug_ops(10)["auto_contrast"](
        tf.constant(channel), SEED).numpy().max() == 255, width


def _which_ops(image, outputs, magnitude):
  """For each output, the names of the single ops at `magnitude` that give it.

  Ops drawing a direction are tried with seeds that give both; cutout is
  recognised by what it does: a grey square, the rest untouched.
  """
  ops = randaug.randaug_ops(magnitude)
  made = {name: {fn(tf.constant(image), tf.constant([seed, 9], tf.int64)).numpy().tobytes()
                 for seed in range(8)}
          for name, fn in ops.items() if name != "cutout"}
  def cutout(out):
    grey = (out != image).any(-1)
    return grey.any() and (out[grey] == 128).all()
  return [{name for name, outs in made.items() if out.tobytes() in outs}
          | ({"cutout"} if cutout(out) else set()) for out in outputs]


def _randaug_outputs(spec, image, count):
  """`spec` applied to `image` under `count` example seeds."""
  return [run(spec, example(image, (seed, 1)), "eager")["image"] for seed in range(count)]


def test_randaug_draws_each_of_the_sixteen_ops_and_applies_num_layers_of_them():
  """One layer: every output is exactly one op's, and all 16 are drawn, about
  equally often (uniform choice, 160 draws: 10 expected each). Two layers:
  outputs are compositions, almost never any single op's."""
  image = random_image(16, 16) // 2 + 40  # auto_contrast and equalize change it
  names = _which_ops(image, _randaug_outputs("randaug(1, 5)", image, 160), 5)
  assert all(len(found) == 1 for found in names), names
  counts = collections.Counter(found.pop() for found in names)
  assert set(counts) == set(randaug.randaug_ops(5)) and max(counts.values()) <= 25, counts
  twice = _which_ops(image, _randaug_outputs("randaug(2, 5)", image, 20), 5)
  assert sum(not found for found in twice) >= 15


def test_increasing_enhance_factors_stop_at_0_1_past_strength_10():
  """At 20 the factors are 1 + 1.8 or 1 - 1.8, the latter held at 0.1 as
  timm's: a flat 100 brightens to 255 (saturated) or darkens to 10, never
  to black."""
  op = randaug.randaug_ops(20)["brightness"]
  flat = tf.constant(np.full((4, 4, 3), 100, np.uint8))
  assert {int(op(flat, tf.constant([seed, 7], tf.int64)).numpy()[0, 0, 0])
          for seed in range(16)} == {255, 10}
