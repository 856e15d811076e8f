"""A variant name picks the family and its shape."""
import re

import jax
import jax.numpy as jnp
import pytest
from flax import traverse_util

from vit_jax import models
from vit_jax.models import bit, variants, vit


@pytest.mark.parametrize("variant, blocks, patch_on_grid", [
    ("R50x1+B/16", (3, 4, 9), 1),       # the paper: stage 4's units in stage 3
    ("R50x1+B/32", (3, 4, 6, 3), 1),    # stage 4's output
    ("R50x1+L/32", (3, 4, 6, 3), 1),
    ("R26x1+S/32", (2, 2, 2, 2), 1),    # the AugReg release's R26+S/32
    ("R50x2+B/64", (3, 4, 6, 3), 2),    # 2x2 cells of stage 4 per patch
    ("R26x1+Ti/8", (2, 6), 1)])         # small images: stages 2-4 in one
def test_hybrid_names_give_the_papers_stems(variant, blocks, patch_on_grid):
  model = models.get_model(variant, num_classes=10)
  assert isinstance(model, vit.VisionTransformer)
  assert model.resnet_blocks == blocks
  assert model.resnet_width == int(variant.split("x")[1].split("+")[0])
  stride = 4 * 2 ** (len(blocks) - 1)
  assert model.patch_size == stride * patch_on_grid


def test_a_resnet_name_gives_a_bit_resnet_and_a_vit_name_a_vit():
  assert isinstance(models.get_model("R101x3", num_classes=10), bit.ResNetV2)
  model = models.get_model("S/32", num_classes=10)
  assert isinstance(model, vit.VisionTransformer) and model.resnet_blocks is None


def test_hybrid_overrides_reach_the_vit():
  model = models.get_model("R26x1+Ti/16", num_classes=10, num_layers=2,
                           classifier="gap")
  assert (model.num_layers, model.classifier, model.resnet_blocks) == (2, "gap", (2, 2, 4))


@pytest.mark.parametrize("variant, message", [
    ("R34x1", r"unknown BiT variant 'R34x1'; valid: .*depth one of 26, 50, 101, 152"),
    ("R34x1+B/16", r"unknown hybrid 'R34x1\+B/16'; valid: .*depth one of 26, 50"),
    ("R50x1+B/24", r"patch of 24 pixels is none of 4, 8, 16 .* nor a multiple of 32"),
    ("R50x1+X/16", r"unknown ViT variant 'X/16'")])
def test_unknown_family_members_name_the_valid_ones(variant, message):
  with pytest.raises(ValueError, match=message):
    models.get_model(variant, num_classes=10)


def test_stem_blocks_keep_the_depth():
  for depth, units in bit.VARIANTS.items():
    for patch in (4, 8, 16, 32):
      assert sum(variants.hybrid_stem_blocks(depth, patch)) == sum(units)


def test_display_names_are_the_papers():
  assert [variants.display_name(v) for v in ("B/16", "R50x1", "R50x1+B/16")] == [
      "ViT-B/16", "BiT-R50x1", "R50x1+ViT-B/16"]


def test_a_hybrid_of_a_variant_named_with_digits_is_a_hybrid():
  model = models.get_model("R50x1+22B/16", num_classes=10)
  assert (model.hidden_size, model.resnet_blocks, model.classifier) == (6144, (3, 4, 9), "map")


TINY = dict(hidden_size=32, num_layers=1, mlp_dim=64, num_heads=4)


def param_shapes(model, side):
  spec = jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
  params = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), spec)
  return {"/".join(k): v.shape for k, v in
          traverse_util.flatten_dict(params["params"]).items()}


@pytest.mark.parametrize("patch, blocks", [(24, (1, 1, 1)), (8, (1, 1, 1)), (6, ())])
def test_a_hybrid_patch_that_is_not_whole_cells_of_the_stems_map_is_refused(patch, blocks):
  # Before: patch 24 on the stride-16 stem silently made 16 px patches,
  # patch 8 divided by zero.
  model = models.get_model(f"Ti/{patch}", num_classes=10, resnet_blocks=blocks, **TINY)
  stride = 4 * 2 ** max(len(blocks) - 1, 0)
  with pytest.raises(ValueError, match=(
      rf"patch_size {patch} is not a multiple of {stride}, the stride of the ResNet "
      rf"stem of resnet_blocks={re.escape(str(blocks))}; valid: {stride}, {2 * stride}")):
    param_shapes(model, 48)


def test_no_resnet_stages_is_a_stem_of_the_root_alone():
  # The AugReg release's R+Ti/16: the root (stride 4) and 8x8 patches of its map.
  shapes = param_shapes(models.get_model("Ti/32", num_classes=10, resnet_blocks=(),
                                         **TINY), 64)
  assert shapes["conv_root/kernel"] == (7, 7, 3, 64)
  assert not any(name.startswith("block") for name in shapes)
  assert shapes["embedding/kernel"] == (8, 8, 64, 32)
  assert shapes["Transformer/posembed_input/pos_embedding"] == (1, 2 * 2 + 1, 32)


def test_a_hybrid_of_several_cells_per_patch_needs_an_image_side_that_is_a_multiple():
  # docs/models.md once gave /64 a 3x3 grid at 224 px; 224 is refused.
  model = models.get_model("R26x1+Ti/64", num_classes=10, num_layers=1)
  with pytest.raises(ValueError) as error:
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)),
                                      train=False))
  assert str(error.value) == ("image height 224 and width 224 must both be divisible "
                              "by the patch size 64")
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 256, 256, 3)),
                                             train=False))["params"]
  assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 4 * 4 + 1, 192)


def test_a_hybrid_of_a_width_bit_does_not_have_is_refused():
  # 'R50x11+B/16' (a slip for x1) used to build an 11x wider stem.
  with pytest.raises(ValueError) as error:
    models.get_model("R50x11+B/16", num_classes=10)
  assert str(error.value) == ("unknown hybrid 'R50x11+B/16'; valid: R{depth}x{width}+ViT "
                              "with depth one of 26, 50, 101, 152 and width one of 1, 2, "
                              "3, 4, e.g. R50x1+B/16")


@pytest.mark.parametrize("variant, family", [("Ti/16", "VisionTransformer"),
                                             ("R26x1", "ResNetV2")])
def test_a_dtype_that_is_no_dtype_names_the_field(variant, family):
  # numpy's "data type 'bf16' not understood" named neither field nor remedy.
  with pytest.raises(ValueError) as error:
    models.get_model(variant, num_classes=10, param_dtype="bf16")
  assert str(error.value) == (f"{family} field param_dtype='bf16' is no dtype; e.g. "
                              f"'float32', 'bfloat16', 'float16'")
