"""The cheap check of encoded images (vit_jax.data.corrupt_images).

What the pipeline does with a corrupt image is tested on real shards in
test_sources.py.
"""
import pytest
import tensorflow as tf

from preprocess_cases import MODES, random_image
from vit_jax.data import corrupt_images


@pytest.mark.parametrize("mode", MODES)
def test_is_decodable_accepts_whole_images_and_rejects_truncated_or_foreign(mode):
  jpeg = tf.io.encode_jpeg(random_image()).numpy()
  png = tf.io.encode_png(random_image()).numpy()
  # A phone's trailer after the end marker (Samsung's SEFH, a Motion
  # Photo's video): the image decodes.
  trailer = b"SEFH" + bytes(range(256)) * 8
  cases = {jpeg: True, png: True, jpeg + b"\0" * 10: True, jpeg + trailer: True,
           png + trailer: True, jpeg[:-40]: False, png[:len(png) // 2]: False,
           (jpeg + trailer)[:len(jpeg) // 2]: False, b"": False, b"GIF": False,
           b"not an image": False}
  data = tf.constant(list(cases))
  if mode == "eager":
    got = [bool(corrupt_images.is_decodable(d)) for d in data]
  else:
    got = [bool(v) for v in tf.data.Dataset.from_tensor_slices(data).map(
        corrupt_images.is_decodable)]
  assert got == list(cases.values())
  for image in (jpeg + trailer, png + trailer):
    assert tf.io.decode_image(image).shape == (*random_image().shape[:2], 3)
