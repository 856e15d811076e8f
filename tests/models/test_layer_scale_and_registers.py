"""Layer scale (``layer_scale_init``), register tokens (``num_registers``),
pre_norm, fc_norm and DeiT's distillation token (``distillation_token``).

timm's DeiT-III, DINOv2, CLIP and DeiT have them; tests/models/test_torch_formats.py
checks the same logits as timm where it is installed. Here: what each does to
the function, on a tiny model, with no library beside ours.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from vit_jax import models
from vit_jax.models import layer_stack, npz, pretrained, vit

TINY = dict(hidden_size=32, num_layers=2, mlp_dim=64, num_heads=4)
IMAGES = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1, maxval=1)


def tiny_model(**options):
  return models.get_model("Ti/8", num_classes=5, **{**TINY, **options})


def init(model, seed=0):
  """Fresh parameters with a random head, so that the logits tell models apart."""
  params = model.init(jax.random.key(seed), IMAGES, train=False)["params"]
  params["head"]["kernel"] = jax.random.normal(jax.random.key(seed + 1),
                                               params["head"]["kernel"].shape)
  return params


def logits(model, params, images=IMAGES):
  return np.asarray(model.apply({"params": params}, images, train=False))


def flat(params):
  return traverse_util.flatten_dict(params, sep="/")


def with_layer_scales(params, value):
  return traverse_util.unflatten_dict(
      {k: jnp.full_like(v, value) if "/LayerScale_" in k else v for k, v in flat(params).items()},
      sep="/")


def without(params, *parts):
  """``params`` without the parameters whose names hold any of ``parts``."""
  return traverse_util.unflatten_dict(
      {k: v for k, v in flat(params).items() if not any(part in k for part in parts)}, sep="/")


@pytest.mark.parametrize("parallel_block", [False, True])
def test_layer_scale_starts_at_its_value_and_scales_each_branch(parallel_block):
  model = tiny_model(layer_scale_init=1e-5, parallel_block=parallel_block)
  params = init(model)
  scales = {k: v for k, v in flat(params).items() if "LayerScale" in k}
  assert sorted(scales) == [f"Transformer/encoderblock_{i}/LayerScale_{j}/scale"
                            for i in range(2) for j in range(2)]
  assert all(v.shape == (32,) and np.all(v == np.float32(1e-5)) for v in scales.values())

  plain = tiny_model(parallel_block=parallel_block)
  # Scales of one: the model without layer scale.
  np.testing.assert_allclose(logits(model, with_layer_scales(params, 1.0)),
                             logits(plain, without(params, "LayerScale")), rtol=1e-5)
  # Scales of zero: every block the identity, the encoder its final LayerNorm.
  np.testing.assert_allclose(logits(model, with_layer_scales(params, 0.0)),
                             logits(tiny_model(num_layers=0), without(params, "encoderblock")),
                             rtol=1e-5)


def test_a_scanned_model_stacks_the_scales_and_gives_the_same_logits():
  options = dict(layer_scale_init=0.3, num_registers=2)
  unrolled, scanned = tiny_model(**options), tiny_model(scan=True, **options)
  params = init(unrolled)
  stacked = layer_stack.like(params, scanned.init(jax.random.key(0), IMAGES,
                                                  train=False)["params"])
  assert flat(stacked)["Transformer/encoderblock/LayerScale_1/scale"].shape == (2, 32)
  np.testing.assert_allclose(logits(scanned, stacked), logits(unrolled, params), rtol=1e-5)


def test_registers_are_distinct_learned_tokens():
  params = init(tiny_model(num_registers=4))
  registers = np.asarray(params["registers"])
  assert registers.shape == (1, 4, 32)
  # Identical registers would get identical gradients and stay identical.
  assert len({tuple(row) for row in registers[0]}) == 4
  assert np.abs(registers).max() < 1e-4  # timm's and DINOv2's std of 1e-6


@pytest.mark.parametrize("classifier", ["token", "gap", "map"])
def test_registers_are_attended_to_but_not_pooled(classifier):
  with_registers = tiny_model(classifier=classifier, num_registers=3)
  params = init(with_registers)
  params["registers"] = jax.random.normal(jax.random.key(5), params["registers"].shape)
  # Without blocks nothing reads them: the logits of the model without.
  no_blocks = lambda **o: tiny_model(classifier=classifier, num_layers=0, **o)
  np.testing.assert_allclose(
      logits(no_blocks(num_registers=3), without(params, "encoderblock")),
      logits(no_blocks(), without(params, "encoderblock", "registers")), rtol=1e-5)
  # With blocks every token attends to them.
  assert not np.allclose(logits(with_registers, params),
                         logits(tiny_model(classifier=classifier), without(params, "registers")),
                         atol=1e-3)


def test_registers_have_no_position_so_a_new_grid_keeps_them(tmp_path):
  """Fine-tuning at another resolution resamples the patches' positions only."""
  saved = tiny_model(num_registers=2, layer_scale_init=0.1)
  params = init(saved)
  npz.save_npz(params, str(tmp_path / "saved.npz"))
  wider = jnp.zeros((1, 24, 24, 3))
  fresh = saved.init(jax.random.key(9), wider, train=False)["params"]
  fitted = flat(pretrained.load_pretrained(str(tmp_path / "saved.npz"), fresh,
                                           new_grid=(3, 3), num_prefix_tokens=1))
  np.testing.assert_array_equal(fitted["registers"], params["registers"])
  np.testing.assert_array_equal(
      fitted["Transformer/encoderblock_1/LayerScale_1/scale"],
      params["Transformer"]["encoderblock_1"]["LayerScale_1"]["scale"])
  assert fitted["Transformer/posembed_input/pos_embedding"].shape == (1, 1 + 9, 32)


@pytest.mark.parametrize("field, value, message", [
    ("layer_scale_init", 0.0, r"layer_scale_init 0.0 must be a number above 0, e.g. 1e-5 "
                              r"as DINOv2 \(config.model.layer_scale_init; None: no layer "
                              r"scale\)"),
    ("layer_scale_init", "1e-5", r"layer_scale_init '1e-5' must be a number above 0"),
    ("layer_scale_init", True, r"layer_scale_init True must be a number above 0"),
    ("num_registers", -1, r"num_registers -1 must be a whole number of register tokens, "
                          r"0 or more \(config.model.num_registers\)"),
    ("num_registers", 1.5, r"num_registers 1.5 must be a whole number"),
    ("layer_norm_epsilon", 0.0, r"layer_norm_epsilon 0.0 must be a number above 0, e.g. "
                                r"1e-6 \(config.model.layer_norm_epsilon\)"),
])
def test_a_bad_layer_scale_register_count_or_epsilon_names_the_config_key(field, value,
                                                                         message):
  with pytest.raises(ValueError, match=f"^{message}"):
    tiny_model(**{field: value}).init(jax.random.key(0), IMAGES, train=False)


def test_fc_norm_normalises_the_tokens_mean_in_place_of_every_token():
  model = tiny_model(classifier="gap", fc_norm=True)
  params = init(model)
  assert "encoder_norm" not in params["Transformer"]
  _, state = model.apply({"params": params}, IMAGES, train=False, mutable=["intermediates"])
  features = np.asarray(state["intermediates"]["features"][0])
  # A LayerNorm of scale 1 and bias 0: each feature vector centred, of unit variance.
  np.testing.assert_allclose(features.mean(-1), 0, atol=1e-5)
  np.testing.assert_allclose(features.std(-1), 1, rtol=1e-3)
  with pytest.raises(ValueError, match=r"^fc_norm normalises the tokens' mean, which "
                                       r"classifier='token' does not take: fc_norm needs "
                                       r"classifier='gap'"):
    init(tiny_model(fc_norm=True))


def test_pre_norm_normalises_the_tokens_before_the_first_block():
  """CLIP's ln_pre: scaled embeddings (kernel, bias, positions and class
  token alike) give the blocks the same input, so the same logits (with an
  epsilon too small to tell the fresh model's small activations apart)."""
  model = tiny_model(pre_norm=True, layer_norm_epsilon=1e-12)
  params = init(model)
  assert flat(params)["Transformer/pre_norm/scale"].shape == (32,)
  scaled = traverse_util.unflatten_dict(
      {k: 3 * v if k.startswith(("embedding/", "cls", "Transformer/posembed_input/")) else v
       for k, v in flat(params).items()}, sep="/")
  np.testing.assert_allclose(logits(model, scaled), logits(model, params), rtol=1e-4)
  plain = tiny_model(layer_norm_epsilon=1e-12)
  assert not np.allclose(logits(plain, without(scaled, "pre_norm")),
                         logits(plain, without(params, "pre_norm")), rtol=1e-3)


def test_the_distillation_token_has_a_head_of_its_own_and_the_two_are_averaged():
  """DeiT at test time: (head(class token) + head_dist(distillation token)) / 2,
  so with the two heads alike, the head of the two tokens' mean: the features."""
  model = tiny_model(distillation_token=True)
  params = init(model)
  assert flat(params)["dist"].shape == (1, 1, 32)
  assert flat(params)["Transformer/posembed_input/pos_embedding"].shape == (1, 2 + 4, 32)
  assert vit.num_prefix_tokens(model) == 2 and vit.num_prefix_tokens(tiny_model()) == 1
  params["dist"] = jax.random.normal(jax.random.key(3), params["dist"].shape)
  params["head"]["bias"] = jnp.arange(5.0)
  params["head_dist"] = dict(params["head"])
  out, state = model.apply({"params": params}, IMAGES, train=False, mutable=["intermediates"])
  features = state["intermediates"]["features"][0]
  np.testing.assert_allclose(out, features @ params["head"]["kernel"] + params["head"]["bias"],
                             rtol=1e-5, atol=1e-6)
  # Each head reads its own token: the distillation head alone moves the logits.
  params["head_dist"] = {"kernel": -params["head"]["kernel"], "bias": params["head"]["bias"]}
  assert not np.allclose(logits(model, params), out, atol=1e-3)
  for options in (dict(classifier="gap"), dict(representation_size=16)):
    with pytest.raises(ValueError, match=r"^distillation_token is read beside the class "
                                         r"token by a head of its own"):
      init(tiny_model(distillation_token=True, **options))


def test_a_distilled_checkpoint_fine_tunes_with_both_tokens_positioned(tmp_path):
  saved = tiny_model(distillation_token=True)
  params = init(saved)
  npz.save_npz(params, str(tmp_path / "deit.npz"))
  fresh = saved.init(jax.random.key(9), jnp.zeros((1, 24, 24, 3)), train=False)["params"]
  fitted = flat(pretrained.load_pretrained(
      str(tmp_path / "deit.npz"), fresh, new_grid=(3, 3),
      num_prefix_tokens=vit.num_prefix_tokens(saved)))
  posemb = fitted["Transformer/posembed_input/pos_embedding"]
  assert posemb.shape == (1, 2 + 9, 32)
  np.testing.assert_array_equal(posemb[:, :2], params["Transformer"]["posembed_input"][
      "pos_embedding"][:, :2])
  np.testing.assert_array_equal(fitted["dist"], params["dist"])
  assert not fitted["head_dist/kernel"].any()  # a new task's heads start afresh
  with pytest.raises(ValueError, match=r"the checkpoint has a distillation token, the "
                                       r"model not: fine-tune it with "
                                       r"--config.model.distillation_token=True$"):
    pretrained.load_pretrained(str(tmp_path / "deit.npz"), init(tiny_model()),
                               new_grid=(2, 2), num_prefix_tokens=1)
