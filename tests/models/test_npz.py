"""The published .npz layout: other layouts of it, a published-size file, bad files."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fake_params import random_flat
from vit_jax import models, tree_util
from vit_jax.models import npz, posemb, pretrained, vit
from vit_jax.models.build import abstract_params

TINY = dict(hidden_size=16, num_layers=2, mlp_dim=32, num_heads=2)


def zeros_like(abstract):
  return jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), abstract)


def published_b16_shapes(num_classes, representation_size):
  """Names and shapes of the published ViT-B/16 files, written out by hand."""
  hidden, mlp, heads, layers = 768, 3072, 12, 12
  shapes = {"cls": (1, 1, hidden), "embedding/kernel": (16, 16, 3, hidden),
            "embedding/bias": (hidden,),
            "Transformer/posembed_input/pos_embedding": (1, 197, hidden),
            "Transformer/encoder_norm/scale": (hidden,),
            "Transformer/encoder_norm/bias": (hidden,),
            "pre_logits/kernel": (hidden, representation_size),
            "pre_logits/bias": (representation_size,),
            "head/kernel": (representation_size, num_classes),
            "head/bias": (num_classes,)}
  for i in range(layers):
    block = f"Transformer/encoderblock_{i}/"
    for norm in ("LayerNorm_0", "LayerNorm_2"):
      shapes.update({block + norm + "/scale": (hidden,), block + norm + "/bias": (hidden,)})
    attention = block + "MultiHeadDotProductAttention_1/"
    for name in ("query", "key", "value"):
      shapes[attention + name + "/kernel"] = (hidden, heads, hidden // heads)
      shapes[attention + name + "/bias"] = (heads, hidden // heads)
    shapes[attention + "out/kernel"] = (heads, hidden // heads, hidden)
    shapes[attention + "out/bias"] = (hidden,)
    mlp_block = block + "MlpBlock_3/"
    shapes.update({mlp_block + "Dense_0/kernel": (hidden, mlp),
                   mlp_block + "Dense_0/bias": (mlp,),
                   mlp_block + "Dense_1/kernel": (mlp, hidden),
                   mlp_block + "Dense_1/bias": (hidden,)})
  return shapes


def test_a_published_b16_file_with_pre_logits_and_21843_classes_fine_tunes_at_384(tmp_path):
  shapes = published_b16_shapes(num_classes=21843, representation_size=768)
  published_model = models.get_model("B/16", num_classes=21843, representation_size=768)
  assert {name: tuple(leaf.shape) for name, leaf in
          tree_util.flatten_named(abstract_params(published_model, 224))} == shapes
  rng = np.random.default_rng(0)
  published = {name: rng.random(shape, np.float32) for name, shape in shapes.items()}
  path = str(tmp_path / "ViT-B_16.npz")
  np.savez(path, **published)

  finetune = abstract_params(models.get_model("B/16", num_classes=10), 384)
  fresh = zeros_like(finetune)
  fresh["head"]["kernel"] = rng.random((768, 10), np.float32)
  fitted = npz.flatten(pretrained.load_pretrained(
      path, fresh, new_grid=(24, 24), num_prefix_tokens=1))

  assert {name: value.shape for name, value in fitted.items()} == {
      name: leaf.shape for name, leaf in tree_util.flatten_named(finetune)}
  np.testing.assert_array_equal(fitted["head/kernel"], fresh["head"]["kernel"])
  np.testing.assert_array_equal(fitted["head/bias"], np.zeros(10))
  table = fitted[npz.POSEMB]
  assert table.shape == (1, 577, 768)
  old_posemb = published[npz.POSEMB]
  np.testing.assert_array_equal(table[:, :1], old_posemb[:, :1])
  np.testing.assert_array_equal(table, posemb.resample_posemb(
      old_posemb, (24, 24), num_prefix_tokens=1))
  others = set(fitted) - {"head/kernel", "head/bias", npz.POSEMB}
  assert len(others) == len(shapes) - 5  # less pre_logits (2), head (2), posemb
  for name in others:
    np.testing.assert_array_equal(fitted[name], published[name], err_msg=name)


def tiny_params(**overrides):
  model = models.get_model("Ti/8", num_classes=5, **dict(TINY, **overrides))
  return random_flat(abstract_params(model, 32))


LINEN = {"MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
         "LayerNorm_2": "LayerNorm_1", "MlpBlock_3": "MlpBlock_0"}


def linen_name(name):
  parts = name.split("/")
  if len(parts) > 2 and parts[1].startswith("encoderblock_"):
    parts[2] = LINEN.get(parts[2], parts[2])
  return "/".join(parts)


def flax_optim_layout(flat):
  """vision_transformer's flax.optim checkpoints: params beside optimizer state."""
  return {**{"opt/target/" + n: v for n, v in flat.items()},
          "opt/state/step": np.array(7), "opt/state/param_states/cls/v": flat["cls"]}


def big_vision_layout(flat):
  """big_vision with scan=True: 'params/', stacked blocks, and at the top level
  a posemb of one row a patch (the class token, prepended after it, gets none)."""
  out, layers = {}, {}
  for name, value in flat.items():
    name = linen_name(name)
    block = re.fullmatch(r"Transformer/encoderblock_(\d+)/(.*)", name)
    if block:
      layers.setdefault(block[2], {})[int(block[1])] = value
    elif name == npz.POSEMB:
      out["params/pos_embedding"] = value[:, 1:] if "cls" in flat else value
    else:
      out["params/" + name] = value
  for rest, by_index in layers.items():
    out["params/Transformer/encoderblock/" + rest] = np.stack(
        [by_index[i] for i in sorted(by_index)])
  return out


@pytest.mark.parametrize("layout", [
    lambda flat: {linen_name(n): v for n, v in flat.items()},
    flax_optim_layout,
    big_vision_layout,
], ids=["linen_numbering", "flax_optim", "big_vision_scanned"])
def test_older_layouts_load_with_the_published_names(tmp_path, layout):
  flat = tiny_params(representation_size=16)
  flat[npz.POSEMB][:, 0] = 0  # big_vision's class token has no position embedding
  path = str(tmp_path / "other.npz")
  np.savez(path, **layout(flat))
  loaded = npz.flatten(npz.load_npz(path))
  assert sorted(loaded) == sorted(flat)
  for name, value in flat.items():
    np.testing.assert_array_equal(loaded[name], value, err_msg=name)


def test_a_published_hybrids_stem_group_norms_of_pre_linen_shape_load(tmp_path):
  # vision_transformer's R50+ViT-B_16.npz and AugReg's hybrids keep pre-Linen
  # flax's GroupNorm scale and bias shape, (1, 1, 1, C).
  model = models.get_model("R26x1+Ti/32", num_classes=5, **dict(TINY, num_layers=1))
  params = abstract_params(model, 64)
  flat = random_flat(params)
  group_norms = [name for name in flat if re.search(r"(^|/)gn(\d+|_root|_proj)/", name)]
  assert {"gn_root/scale", "block1/unit1/gn_proj/bias", "block4/unit2/gn3/scale"} <= set(
      group_norms)  # R26's stem: 4 stages of 2 units
  published = {name: value.reshape(1, 1, 1, -1) if name in group_norms else value
               for name, value in flat.items()}
  path = str(tmp_path / "hybrid.npz")
  np.savez(path, **published)
  fitted = npz.flatten(pretrained.load_pretrained(
      path, zeros_like(params), new_grid=(2, 2),
      num_prefix_tokens=vit.num_prefix_tokens(model)))
  for name in group_norms:
    np.testing.assert_array_equal(fitted[name], flat[name], err_msg=name)


@pytest.mark.parametrize("classifier", ["token", "gap"])
def test_a_big_vision_file_computes_what_big_vision_does(tmp_path, classifier):
  """big_vision adds its table (one row a patch) to the patches, then prepends
  the class token: loaded here, its file gives the logits of that forward pass."""
  model = models.get_model("Ti/8", num_classes=5, classifier=classifier, **TINY)
  flat = random_flat(abstract_params(model, 32))
  path = str(tmp_path / "big_vision.npz")
  np.savez(path, **big_vision_layout(flat))
  table = np.load(path)["params/pos_embedding"]
  assert table.shape[1] == 16  # (32 / 8) ** 2 patches, no class token row

  def big_vision_posemb(next_fun, args, kwargs, context):
    if not isinstance(context.module, vit.AddPositionEmbs):
      return next_fun(*args, **kwargs)
    tokens, = args
    return tokens.at[:, tokens.shape[1] - table.shape[1]:].add(table)

  images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  with nn.intercept_methods(big_vision_posemb):
    expected = model.apply({"params": npz.unflatten(flat)}, images, train=False)
  logits = model.apply({"params": npz.load_npz(path)}, images, train=False)
  np.testing.assert_allclose(logits, expected, rtol=1e-6, atol=1e-6)


def test_a_pickle_inside_the_npz_is_refused_naming_file_and_array(tmp_path):
  path = str(tmp_path / "evil.npz")
  np.savez(path, **{"cls": np.zeros((1, 1, 16), np.float32),
                    "head/kernel": np.array([{"run": "code"}], dtype=object)})
  with pytest.raises(ValueError, match=r"^\S*evil.npz: array 'head/kernel' holds pickled "
                                       r"Python objects, which are not loaded"):
    npz.load_npz(path)


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_a_truncated_file_is_a_one_line_error_naming_it(tmp_path, keep):
  path = tmp_path / "cut.npz"
  npz.save_npz(npz.unflatten(tiny_params()), str(path))
  data = path.read_bytes()
  path.write_bytes(data[:int(len(data) * keep)])
  with pytest.raises(ValueError, match=r"cut.npz is not a readable .npz file "
                                       r"\(truncated or corrupt\?\)") as error:
    npz.load_npz(str(path))
  assert "\n" not in str(error.value)


def test_a_file_that_is_no_npz_is_refused(tmp_path):
  npy = str(tmp_path / "one.npz")
  with open(npy, "wb") as f:
    np.save(f, np.zeros(3))
  with pytest.raises(ValueError, match="one.npz holds one unnamed array"):
    npz.load_npz(npy)
  html = tmp_path / "page.npz"
  html.write_text("<html>Not Found</html>")
  with pytest.raises(ValueError, match="page.npz is neither an .npz nor an .npy file, and "
                                       "is not read as the pickle it may be"):
    npz.load_npz(str(html))


@pytest.mark.parametrize("file_variant,model_variant,message", [
    ("Ti/16", "S/16", r"parameter Transformer/encoder_norm/bias has shape \(192,\) in the "
                      r"checkpoint but \(384,\) in the model \(\d+ mismatching in all\)"),
    ("Ti/32", "Ti/16", r"parameter embedding/kernel has shape \(32, 32, 3, 192\) in the "
                       r"checkpoint but \(16, 16, 3, 192\) in the model \(1 mismatching"),
])
def test_a_file_for_another_variant_names_the_first_mismatching_parameter(
    tmp_path, file_variant, model_variant, message):
  other = abstract_params(models.get_model(file_variant, num_classes=10), 224)
  path = str(tmp_path / "other_variant.npz")
  npz.save_npz(zeros_like(other), path)
  expected = abstract_params(models.get_model(model_variant, num_classes=10), 224)
  with pytest.raises(ValueError, match="other_variant.npz: " + message):
    pretrained.load_pretrained(path, zeros_like(expected), new_grid=(14, 14),
                               num_prefix_tokens=1)
  if file_variant == "Ti/16":  # same grid: read as it is, for inference
    with pytest.raises(ValueError, match="other_variant.npz: " + message):
      tree_util.check_same_arrays(npz.load_npz(path), expected, source=path)


def test_check_same_arrays_names_missing_and_unexpected_parameters():
  expected = {"a": jax.ShapeDtypeStruct((2,), jnp.float32),
              "b": {"kernel": jax.ShapeDtypeStruct((2, 3), jnp.float32)}}
  with pytest.raises(ValueError, match=r"^f.npz: parameter b/kernel of the model is "
                                       r"missing in the checkpoint \(1 mismatching"):
    tree_util.check_same_arrays({"a": np.zeros(2)}, expected, source="f.npz")
  with pytest.raises(ValueError, match=r"parameter a2 of the checkpoint is not in the model"):
    tree_util.check_same_arrays(
        {"a": np.zeros(2), "a2": np.zeros(1), "b": {"kernel": np.zeros((2, 3))}},
        expected, source="f.npz")
  tree_util.check_same_arrays({"a": np.zeros(2), "b": {"kernel": np.zeros((2, 3))}},
                          expected, source="f.npz")


def test_bfloat16_parameters_are_written_as_float32_exactly(tmp_path):
  """numpy has no bfloat16: other readers would get raw 2-byte records."""
  kernel = jnp.asarray([[1.5, -2.25, 3.0078125]], jnp.bfloat16)
  params = {"head": {"kernel": kernel, "bias": np.zeros(3, np.float32)}}
  path = str(tmp_path / "bf16.npz")
  npz.save_npz(params, path)
  with np.load(path) as f:
    written = dict(f)
  assert written["head/kernel"].dtype == np.float32
  np.testing.assert_array_equal(written["head/kernel"], np.asarray(kernel, np.float32))
  assert npz.load_npz(path)["head"]["kernel"].dtype == np.float32
