"""Past ViT-H: the g, G and e presets, and the ViT-22B options and preset.

Parameter counts are derived here from the layer shapes of big_vision's
models/vit.py (the definition the "Scaling Vision Transformers" models were
trained with), not copied from a paper, and compared with the model traced
by jax.eval_shape (nothing allocated; the scanned model, so that tracing a
deep model is cheap, which the scan tests show is the same tree).
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import models, tree_util
from vit_jax.models import layer_stack, vit

CLASSES = 1000
IMAGE = 224


def shapes_of(model, image=IMAGE):
  spec = jax.ShapeDtypeStruct((1, image, image, 3), jnp.float32)
  params = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), spec)
  return {name: leaf.shape for name, leaf in
          tree_util.flatten_named(layer_stack.unstack(params["params"]))}


def count(model, image=IMAGE):
  return sum(math.prod(shape) for shape in shapes_of(model, image).values())


def plain_vit_count(width, depth, mlp, patch):
  """A token-classifier ViT of big_vision's layer shapes, 1000-class head, no pre_logits.

  Per block (big_vision Encoder1DBlock): two LayerNorms (scale, bias: 2 x 2D);
  flax's MultiHeadDotProductAttention, query/key/value kernels (D, heads,
  D/heads) and biases (heads, D/heads), out kernel (heads, D/heads, D) and
  bias (D): 4 D^2 + 4D; MlpBlock Dense(mlp) and Dense(D): 2 D mlp + mlp + D.
  Outside the blocks: the patch conv (p, p, 3, D) + D, the class token D,
  the final LayerNorm 2D, the head D x 1000 + 1000. Position embeddings: one
  per patch in big_vision, which adds them before the class token; one more
  here, as in the original ViT (and its checkpoints), which adds them after.
  """
  tokens = (IMAGE // patch) ** 2 + 1
  block = 2 * 2 * width + 4 * width**2 + 4 * width + 2 * width * mlp + mlp + width
  return (patch * patch * 3 * width + width + width + tokens * width
          + depth * block + 2 * width + width * CLASSES + CLASSES)


@pytest.mark.parametrize("name, shape", [
    ("g", (1408, 40, 6144, 16)), ("G", (1664, 48, 8192, 16)), ("e", (1792, 56, 15360, 16))])
def test_presets_have_big_visions_shapes(name, shape):
  model = models.get_model(f"{name}/14", num_classes=CLASSES)
  assert (model.hidden_size, model.num_layers, model.mlp_dim, model.num_heads) == shape


@pytest.mark.parametrize("variant, width, depth, mlp, expected", [
    ("H/14", 1280, 32, 5120, 632_045_800),   # the golden count, by the same formula
    ("g/14", 1408, 40, 6144, None),
    ("G/14", 1664, 48, 8192, None)])
def test_parameter_counts_follow_big_visions_layer_shapes(variant, width, depth, mlp, expected):
  formula = plain_vit_count(width, depth, mlp, patch=14)
  assert count(models.get_model(variant, num_classes=CLASSES, scan=True)) == formula
  if expected:
    assert formula == expected
  # About 1.0 and 1.8 billion: the paper's ViT-g and ViT-G (with a MAP head).
  assert round(formula / 1e8) == {"H/14": 6, "g/14": 10, "G/14": 18}[variant]


def test_the_22b_preset_is_the_papers_architecture_and_its_count_follows():
  model = models.get_model("22B/14", num_classes=CLASSES, scan=True)
  assert (model.hidden_size, model.num_layers, model.mlp_dim, model.num_heads) == (
      6144, 48, 24576, 48)
  assert (model.parallel_block, model.qk_norm, model.use_bias, model.classifier) == (
      True, True, False, "map")
  width, depth, mlp, head_dim = 6144, 48, 24576, 128
  # Per block: one LayerNorm, scale only (D); query/key/value kernels, no
  # bias (3 D^2); the query and key LayerNorms over a head, scale only
  # (2 head_dim); out kernel and bias (D^2 + D); the MLP (2 D mlp + mlp + D).
  block = width + 3 * width**2 + 2 * head_dim + width**2 + width + 2 * width * mlp + mlp + width
  # The MAP head (big_vision's MAPHead): probe D; flax's attention with
  # biases (4 D^2 + 4D); LayerNorm 2D; MlpBlock (2 D mlp + mlp + D).
  map_head = width + 4 * width**2 + 4 * width + 2 * width + 2 * width * mlp + mlp + width
  patches = (IMAGE // 14) ** 2  # no class token
  formula = (14 * 14 * 3 * width + width + patches * width + depth * block
             + width  # the final LayerNorm's scale
             + map_head + width * CLASSES + CLASSES)
  assert count(model) == formula == 22_209_749_992
  # The paper's 21.743B (its Table 1) counts the blocks' weight matrices.
  assert round(depth * (4 * width**2 + 2 * width * mlp) / 1e6) == 21_743


def test_the_22b_options_stay_overridable_and_unset_means_the_variants():
  plain = models.get_model("22B/14", num_classes=10, parallel_block=False, qk_norm=False,
                           use_bias=True, classifier="token")
  assert (plain.parallel_block, plain.qk_norm, plain.use_bias, plain.classifier) == (
      False, False, True, "token")
  # A config's unset fields (None) keep the variant's choices.
  unset = dict(parallel_block=None, qk_norm=None, use_bias=None, classifier=None)
  assert models.get_model("22B/14", num_classes=10, **unset).classifier == "map"
  assert models.get_model("B/16", num_classes=10, **unset).classifier == "token"


TINY = dict(hidden_size=32, num_layers=2, mlp_dim=64, num_heads=4)


def tiny_shapes(**options):
  return shapes_of(models.get_model("B/8", num_classes=10, **TINY, **options), image=16)


def test_use_bias_false_drops_the_qkv_and_layer_norm_biases_only():
  with_bias, without = tiny_shapes(), tiny_shapes(use_bias=False)
  gone = sorted(set(with_bias) - set(without))
  block = "Transformer/encoderblock_{}/"
  expected = sorted(
      [block.format(i) + f"MultiHeadDotProductAttention_1/{n}/bias"
       for i in range(2) for n in ("query", "key", "value")]
      + [block.format(i) + f"{n}/bias" for i in range(2) for n in ("LayerNorm_0", "LayerNorm_2")]
      + ["Transformer/encoder_norm/bias"])
  assert gone == expected and set(without) <= set(with_bias)


def test_use_bias_false_norms_neither_centre_nor_shift_as_vit_22b():
  # "All LayerNorms were applied without bias and centering": x / rms(x) * scale.
  norm = COMPUTE.norm(name="n", use_bias=False)
  x = jax.random.normal(jax.random.key(0), (3, 8)) + 5.0
  params = norm.init(jax.random.key(1), x)
  assert jax.tree_util.tree_map(jnp.shape, params) == {"params": {"scale": (8,)}}
  scale = jnp.linspace(0.5, 2.0, 8)
  y = norm.apply({"params": {"scale": scale}}, x)
  rms = jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(y, x / rms * scale, rtol=1e-5)
  centred = COMPUTE.norm(name="n").apply(
      {"params": {"scale": scale, "bias": jnp.zeros(8)}}, x)
  assert not np.allclose(y, centred, atol=0.1)  # a LayerNorm would centre the + 5


def test_qk_norm_adds_a_layer_norm_over_each_heads_queries_and_keys():
  plain = tiny_shapes()
  added = {n: s for n, s in tiny_shapes(qk_norm=True).items() if n not in plain}
  attention = "Transformer/encoderblock_{}/MultiHeadDotProductAttention_1/"
  assert added == {attention.format(i) + f"{q}_ln/{p}": (8,)
                   for i in range(2) for q in ("query", "key") for p in ("scale", "bias")}


def scale_queries_and_keys(params, factor):
  """``params`` with every block's query and key kernels multiplied by ``factor``."""
  def scale(path, leaf):
    name = tree_util.path_name(path)
    return leaf * factor if name.endswith(("/query/kernel", "/key/kernel")) else leaf
  return jax.tree_util.tree_map_with_path(scale, params)


@pytest.mark.parametrize("qk_norm", [True, False])
def test_qk_norm_makes_the_logits_independent_of_the_query_and_key_scale(qk_norm):
  model = models.get_model("B/8", num_classes=10, **{**TINY, "num_layers": 1},
                           qk_norm=qk_norm, use_bias=False)
  images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
  params = jax.jit(lambda: model.init(jax.random.key(1), images, train=False))()["params"]
  params["head"]["kernel"] = jax.random.normal(jax.random.key(2), params["head"]["kernel"].shape)
  apply = jax.jit(lambda params: model.apply({"params": params}, images, train=False))
  logits, scaled = apply(params), apply(scale_queries_and_keys(params, 7.0))
  assert np.allclose(scaled, logits, rtol=1e-4, atol=1e-5) == qk_norm


COMPUTE = vit.ComputeSettings(dtype=jnp.float32, param_dtype=jnp.float32, gelu="tanh",
                              layer_norm_epsilon=1e-6,
                              attention_implementation="auto", token_padding="per_attention",
                              layer_norm_implementation="flax", dense_implementation="auto")


def test_a_parallel_block_adds_attention_and_mlp_of_one_layer_norm():
  block = vit.Encoder1DBlock(mlp_dim=64, num_heads=4, dropout_rate=0.0,
                             attention_dropout_rate=0.0, parallel=True, qk_norm=False,
                             use_bias=True, layer_scale_init=None, compute=COMPUTE)
  x = jax.random.normal(jax.random.key(0), (2, 5, 32))
  params = jax.jit(block.init, static_argnums=2)(jax.random.key(1), x, False)["params"]
  assert sorted(params) == ["LayerNorm_0", "MlpBlock_3", "MultiHeadDotProductAttention_1"]

  @jax.jit
  def by_hand(params, x):
    """The published block's parts, applied to the one normalised input."""
    y = nn.LayerNorm().apply({"params": params["LayerNorm_0"]}, x)
    attention = vit.MultiHeadDotProductAttention(num_heads=4, dropout_rate=0.0, qk_norm=False,
                                                 use_bias=True, compute=COMPUTE)
    mlp = vit.MlpBlock(mlp_dim=64, dropout_rate=0.0, compute=COMPUTE)
    return (x + attention.apply({"params": params["MultiHeadDotProductAttention_1"]}, y,
                                train=False)
            + mlp.apply({"params": params["MlpBlock_3"]}, y, train=False))

  np.testing.assert_allclose(
      jax.jit(block.apply, static_argnums=2)({"params": params}, x, False),
      by_hand(params, x), rtol=1e-6, atol=1e-6)


def test_the_map_head_has_big_visions_names_and_replaces_the_class_token():
  shapes = tiny_shapes(classifier="map")
  head = {n[len("MAPHead_0/"):]: s for n, s in shapes.items() if n.startswith("MAPHead_0/")}
  attention = "MultiHeadDotProductAttention_0/"
  assert head == {
      "probe": (1, 1, 32),
      **{attention + f"{n}/kernel": (32, 4, 8) for n in ("query", "key", "value")},
      **{attention + f"{n}/bias": (4, 8) for n in ("query", "key", "value")},
      attention + "out/kernel": (4, 8, 32), attention + "out/bias": (32,),
      "LayerNorm_0/scale": (32,), "LayerNorm_0/bias": (32,),
      "MlpBlock_0/Dense_0/kernel": (32, 64), "MlpBlock_0/Dense_0/bias": (64,),
      "MlpBlock_0/Dense_1/kernel": (64, 32), "MlpBlock_0/Dense_1/bias": (32,)}
  assert "cls" not in shapes
  assert shapes["Transformer/posembed_input/pos_embedding"] == (1, 4, 32)


def test_the_map_head_pools_by_its_probe_attention():
  """Tokens given equal weights (zero query and key) pool to their mean."""
  head = vit.MAPHead(mlp_dim=64, num_heads=4, compute=COMPUTE)
  x = jax.random.normal(jax.random.key(0), (2, 6, 32))
  params = jax.jit(head.init)(jax.random.key(1), x)["params"]
  attention = params["MultiHeadDotProductAttention_0"]
  for name in ("query", "key"):
    attention[name] = jax.tree.map(jnp.zeros_like, attention[name])

  @jax.jit
  def by_hand(params, x):
    # Uniform weights average the values, and value() is affine: out(value(mean(x))).
    pooled = nn.MultiHeadDotProductAttention(num_heads=4).apply(
        {"params": params["MultiHeadDotProductAttention_0"]},
        jnp.mean(x, axis=1, keepdims=True))
    mlp = vit.MlpBlock(mlp_dim=64, dropout_rate=0.0, compute=COMPUTE)
    y = nn.LayerNorm().apply({"params": params["LayerNorm_0"]}, pooled)
    return (pooled + mlp.apply({"params": params["MlpBlock_0"]}, y, train=False))[:, 0]

  np.testing.assert_allclose(jax.jit(head.apply)({"params": params}, x), by_hand(params, x),
                             rtol=1e-5, atol=1e-6)


def test_the_map_heads_softmax_is_float32_in_a_bfloat16_model():
  """As every block's attention: flax's own would compute it in bfloat16."""
  model = models.get_model("B/8", num_classes=10, **TINY, classifier="map",
                           dtype="bfloat16")
  x = jnp.zeros((1, 16, 16, 3), jnp.float32)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  jaxpr = str(jax.make_jaxpr(lambda p: model.apply(p, x, train=False))(params))
  exp_outputs = [line.split("=")[0] for line in jaxpr.splitlines()
                    if " exp " in f" {line.split('=', 1)[-1].strip()} "]
  assert exp_outputs and all("f32[" in line for line in exp_outputs), exp_outputs


def test_an_unknown_classifier_names_the_valid_ones():
  with pytest.raises(ValueError, match="unknown classifier 'pool'; valid: token, gap, map"):
    tiny_shapes(classifier="pool")
