"""RandAugment (vit_jax.data.preprocess.randaug)."""
import numpy as np
import pytest
import tensorflow as tf

from preprocess_cases import MODES, example, random_image, run
from vit_jax.data import preprocess
from vit_jax.data.preprocess import randaug


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(randaug.randaug_ops(0)))
def test_each_randaug_op_keeps_shape_and_dtype_and_is_identity_where_it_should_be(name, mode):
  image = random_image()
  fn = randaug.randaug_ops(7)[name]
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
  weakest = randaug.randaug_ops(0)[name](tf.constant(image), 1.0).numpy()
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
def test_randaug_names_a_grey_image_and_the_decode_that_makes_rgb(mode):
  # Its colour ops (color, sharpness) work on RGB only; a grey image used to
  # fail while tracing, with a shape mismatch deep inside tf.switch_case.
  with pytest.raises(ValueError, match=r"randaug works on RGB images of 3 channels; got "
                     r"shape \(20, 24, 1\)\. Decode with decode \(3 channels\), not decode\(1\)\."):
    run("randaug(2, 10)", example(random_image(channels=1)), mode)


@pytest.mark.parametrize("num_layers", [2.5, -1])
def test_randaug_refuses_a_layer_count_that_is_no_whole_number(num_layers):
  # It used to pass the parser and fail on the first image with TensorFlow's
  # "Value for attr 'Tshape' of float" or "Dimension -2 must be >= 0".
  with pytest.raises(ValueError) as error:
    preprocess.parse(f"randaug({num_layers}, 10)")
  assert str(error.value) == (f"randaug: num_layers must be a whole number >= 0, "
                              f"got {num_layers}.")
