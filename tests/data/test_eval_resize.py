"""vit_jax.data.preprocess.eval_resize: an eval preprocessing string's resize
and crop, as timm and transformers state them."""
import math

import pytest

from vit_jax.data.preprocess import eval_resize
from vit_jax.data.preprocess.eval_resize import SHORTER_SIDE, SQUASH, EvalResize


@pytest.mark.parametrize("spec, size, expected", [
    ("decode|resize(224)|value_range(-1,1)", 224, EvalResize(SQUASH, 224, 224, "bilinear")),
    ("decode|resize((256, 256), 'bicubic')|central_crop(224)|value_range(-1,1)", 224,
     EvalResize(SQUASH, 256, 224, "bicubic")),
    ("decode|resize_small(256)|central_crop(224)|value_range(-1,1)|onehot(10)", 224,
     EvalResize(SHORTER_SIDE, 256, 224, "area")),
    # No resize (images already at size), a random crop, a crop without a
    # resize, a non-square size, or one that is not the model's: none.
    ("decode|value_range(-1,1)", 32, None),
    ("decode|inception_crop(224)|value_range(-1,1)", 224, None),
    ("decode|central_crop(224)|value_range(-1,1)", 224, None),
    ("decode|resize((224, 160))|value_range(-1,1)", 224, None),
    ("decode|resize(256)|value_range(-1,1)", 224, None),
    ("decode|resize(256)|central_crop(224)|central_crop(200)", 200, None),
    # A flip after the resize: no fixed placement a library's eval transform states.
    ("decode|resize(224)|flip_lr|value_range(-1,1)", 224, None),
])
def test_an_eval_preprocessing_reads_as_a_resize_and_a_central_crop(spec, size, expected):
  assert eval_resize.of_preprocessing(spec, size) == expected


@pytest.mark.parametrize("resize_to, crop", [(256, 224), (438, 384), (73, 64), (293, 256)])
def test_crop_pct_gives_back_the_resize_under_the_libraries_floor(resize_to, crop):
  pct = EvalResize(SQUASH, resize_to, crop, "bilinear").crop_pct
  assert math.floor(crop / pct) == resize_to  # timm's scale_size, transformers' int()
  assert pct == pytest.approx(crop / resize_to, rel=1e-12)


def test_a_bad_op_is_named_as_by_the_parser():
  with pytest.raises(ValueError, match=r"^Unknown preprocessing op 'resise'"):
    eval_resize.of_preprocessing("decode|resise(224)", 224)
