"""timm and Hugging Face ViT state dicts: exact round trips with numpy alone, and
the same logits as the real libraries (skipped where they are not installed).

Logits are compared by their max relative difference, max |a - b| / max |b|,
with the libraries configured for our tanh GELU.
"""
import functools
import json
import re
import sys

import numpy as np
import pytest

from fake_params import random_flat
from torch_libraries import library
from vit_jax import models
from vit_jax.inference.export import model_logits
from vit_jax.models import build, hf_format, npz, pretrained, timm_format

TINY = dict(hidden_size=32, num_layers=2, mlp_dim=64, num_heads=2)
SIZE = 16  # 4x4 patches of 4 pixels
RELATIVE_TOLERANCE = 1e-4


def tiny_model(classifier="token", representation_size=None, num_classes=10, **options):
  """``options``: qk_norm, layer_scale_init, num_registers, gelu."""
  return models.get_model("Ti/4", num_classes=num_classes, classifier=classifier,
                          representation_size=representation_size, **TINY, **options)


def random_params(model, seed=0):
  """Every parameter random, centred, so no mapping hides behind a zero or a one."""
  flat = random_flat(build.abstract_params(model, SIZE), seed=seed)
  return npz.unflatten({name: (value - 0.5) * 0.6 for name, value in flat.items()})


def images(batch=3, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (batch, SIZE, SIZE, 3)).astype(np.float32)


def relative_difference(theirs, ours):
  assert np.abs(ours).max() > 0.1  # a meaningful comparison, not of zeros
  return float(np.abs(theirs - ours).max() / np.abs(ours).max())


def assert_same_params(a, b):
  a, b = npz.flatten(a), npz.flatten(b)
  assert sorted(a) == sorted(b)
  for name in a:
    assert a[name].dtype == b[name].dtype, name
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


# ---------------------------------------------------------------------------
# numpy alone
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("classifier", ["token", "gap"])
def test_ours_to_timm_and_back_is_bit_exact(classifier):
  params = random_params(tiny_model(classifier))
  state_dict = timm_format.to_timm(params)
  assert ("cls_token" in state_dict) == (classifier == "token")
  assert state_dict["blocks.1.attn.qkv.weight"].shape == (96, 32)
  assert state_dict["patch_embed.proj.weight"].shape == (32, 3, 4, 4)
  config = timm_format.hub_config(params, image_size=SIZE, mean=0.5, std=0.5)
  assert config["model_args"]["global_pool"] == ("token" if classifier == "token" else "avg")
  assert config["model_args"]["fc_norm"] is False
  assert config["model_args"]["act_layer"] == "gelu_tanh"
  assert_same_params(timm_format.from_timm(state_dict, source="sd", config=config), params)
  # Without a config.json the heads come from the caller.
  assert_same_params(timm_format.from_timm(state_dict, source="sd", num_heads=2), params)


@pytest.mark.parametrize("classifier, qk_norm", [("map", False), ("gap", True),
                                                ("map", True)])
def test_attention_pooling_and_qk_norm_go_to_timm_and_back_bit_exact(classifier, qk_norm):
  params = random_params(tiny_model(classifier, qk_norm=qk_norm))
  state_dict = timm_format.to_timm(params)
  assert ("attn_pool.kv.weight" in state_dict) == (classifier == "map")
  if classifier == "map":
    assert state_dict["attn_pool.kv.weight"].shape == (64, 32)
    assert state_dict["attn_pool.latent"].shape == (1, 1, 32)
    assert "cls_token" not in state_dict
  assert ("blocks.1.attn.k_norm.bias" in state_dict) == qk_norm
  if qk_norm:
    assert state_dict["blocks.1.attn.q_norm.weight"].shape == (16,)  # a head's width
  args = timm_format.hub_config(params, image_size=SIZE, mean=0.5, std=0.5)["model_args"]
  assert (args["global_pool"], args["class_token"], args["qk_norm"]) == (
      "map" if classifier == "map" else "avg", False, qk_norm)
  assert_same_params(timm_format.from_timm(state_dict, source="sd",
                                           config={"model_args": args}), params)


@pytest.mark.parametrize("classifier", ["token", "gap", "map"])
def test_layer_scale_registers_and_pre_norm_go_to_timm_and_back_bit_exact(classifier):
  params = random_params(tiny_model(classifier, layer_scale_init=0.1, num_registers=3,
                                    pre_norm=True))
  # With pre_norm timm's patch embedding has no bias (CLIP's has none either);
  # test_a_pre_norm_models_patch_bias_joins_the_positions has one.
  params = timm_format.exported_params(params)
  state_dict = timm_format.to_timm(params)
  assert "patch_embed.proj.bias" not in state_dict
  assert state_dict["blocks.1.ls2.gamma"].shape == (32,)
  assert state_dict["norm_pre.bias"].shape == (32,)
  assert state_dict["reg_token"].shape == (1, 3, 32)
  # Zero rows of pos_embed for the registers, after the class token's.
  prefix = int(classifier == "token")
  assert state_dict["pos_embed"].shape == (1, prefix + 3 + 16, 32)
  assert not state_dict["pos_embed"][:, prefix:prefix + 3].any()
  args = timm_format.hub_config(params, image_size=SIZE, mean=0.5, std=0.5)["model_args"]
  assert (args["reg_tokens"], args["init_values"], args["pre_norm"]) == (3, 1e-5, True)
  assert_same_params(timm_format.from_timm(state_dict, source="sd",
                                           config={"model_args": args}), params)
  # Read without a config.json, the tensors tell the same.
  assert_same_params(timm_format.from_timm(state_dict, source="sd", num_heads=2), params)


def test_a_pre_norm_models_patch_bias_joins_the_positions():
  """timm's patch embedding has no bias where it has pre_norm; ours's bias is
  the same for every patch, so the patches' position rows take it."""
  params = random_params(tiny_model("token", pre_norm=True))
  state_dict = timm_format.to_timm(params)
  want = npz.flatten(params)
  posemb = want[npz.POSEMB]
  np.testing.assert_array_equal(state_dict["pos_embed"][:, 0], posemb[:, 0])
  np.testing.assert_array_equal(state_dict["pos_embed"][:, 1:],
                                posemb[:, 1:] + want["embedding/bias"])
  loaded = timm_format.from_timm(state_dict, source="sd", num_heads=2)
  assert not npz.flatten(loaded)["embedding/bias"].any()
  assert_same_params(loaded, timm_format.exported_params(params))
  batch = images()
  np.testing.assert_allclose(model_logits(tiny_model("token", pre_norm=True), loaded, batch),
                             model_logits(tiny_model("token", pre_norm=True), params, batch),
                             rtol=1e-5, atol=1e-5)


def test_fc_norm_goes_to_timm_and_back_bit_exact():
  """timm's default for 'avg' pooling: the LayerNorm after the mean, none before."""
  params = random_params(tiny_model("gap", fc_norm=True))
  state_dict = timm_format.to_timm(params)
  assert "fc_norm.weight" in state_dict and "norm.weight" not in state_dict
  args = timm_format.hub_config(params, image_size=SIZE, mean=0.5, std=0.5)["model_args"]
  assert (args["global_pool"], args["fc_norm"]) == ("avg", True)
  assert_same_params(timm_format.from_timm(state_dict, source="sd", num_heads=2), params)
  with pytest.raises(ValueError, match=r"^sd: a LayerNorm after pooling \(fc_norm\) beside a "
                                       r"class token; this ViT normalises after pooling only"):
    timm_format.from_timm({**state_dict, "cls_token": np.zeros((1, 1, 32), np.float32)},
                          source="sd", num_heads=2)


@pytest.mark.parametrize("no_embed_class", [False, True])
def test_the_registers_position_rows_fold_into_them(no_embed_class):
  """timm adds pos_embed rows to its register tokens unless no_embed_class
  (DINOv2 with registers); the same for every image, they are part of ours."""
  params = random_params(tiny_model("token", num_registers=2))
  state_dict = timm_format.to_timm(params)
  rows = np.random.default_rng(1).normal(size=(1, 2, 32)).astype(np.float32)
  if no_embed_class:  # no rows for the class token and registers; ours gets a zero row
    state_dict["pos_embed"] = state_dict["pos_embed"][:, 3:]
  else:
    state_dict["pos_embed"][:, 1:3] = rows
  loaded = npz.flatten(timm_format.from_timm(state_dict, source="sd", num_heads=2))
  want = npz.flatten(params)
  np.testing.assert_array_equal(loaded["registers"], want["registers"] + (
      0 if no_embed_class else rows))
  np.testing.assert_array_equal(loaded[npz.POSEMB][:, 1:], want[npz.POSEMB][:, 1:])
  np.testing.assert_array_equal(loaded[npz.POSEMB][:, 0],
                                0 if no_embed_class else want[npz.POSEMB][:, 0])


def test_register_rows_are_read_where_all_tokens_and_the_patches_both_form_squares():
  """A class token, 4 registers and a 2x2 grid make 9 position rows, a square
  as the 4 patch rows are. Without a config.json stating no_embed_class the
  rows are read as timm's default builds them, with the class token's and
  the registers' rows, which fold into the registers."""
  model = tiny_model("token", num_registers=4)
  flat = random_flat(build.abstract_params(model, 8), seed=3)  # 2x2 patches of 4 pixels
  params = npz.unflatten({name: (value - 0.5) * 0.6 for name, value in flat.items()})
  state_dict = timm_format.to_timm(params)
  assert state_dict["pos_embed"].shape == (1, 9, 32)
  rows = np.random.default_rng(1).normal(size=(1, 4, 32)).astype(np.float32)
  state_dict["pos_embed"][:, 1:5] = rows
  loaded = npz.flatten(timm_format.from_timm(state_dict, source="sd", num_heads=2))
  want = npz.flatten(params)
  np.testing.assert_array_equal(loaded["registers"], want["registers"] + rows)
  np.testing.assert_array_equal(loaded[npz.POSEMB], want[npz.POSEMB])


def test_pooling_the_register_tokens_too_is_refused():
  params = random_params(tiny_model("gap", num_registers=2))
  with pytest.raises(ValueError, match=r"^sd: pool_include_prefix=True pools the register "
                                       r"tokens too; this ViT pools the patch tokens only$"):
    timm_format.from_timm(timm_format.to_timm(params), source="sd", num_heads=2,
                          config={"model_args": dict(pool_include_prefix=True)})


@pytest.mark.parametrize("name, width, heads", [("deit3_small_patch16_384", 384, 6),
                                                ("vit_base_patch14_reg4_dinov2", 768, 12)])
def test_deit3_and_dinov2_names_give_their_heads(name, width, heads):
  params = random_params(models.get_model("Ti/4", num_classes=10, hidden_size=width,
                                          num_layers=1, mlp_dim=64, num_heads=heads,
                                          layer_scale_init=1e-5, num_registers=4))
  loaded = timm_format.from_timm(timm_format.to_timm(params), source="sd",
                                 config={"architecture": name})
  assert_same_params(loaded, params)


def test_the_names_registered_with_other_heads_or_post_norm_blocks_are_read_as_timm_builds_them():
  # timm's ViT-B/16 with average pooling has 16 heads of 48, not 12 of 64.
  params = random_params(models.get_model("Ti/4", num_classes=10, hidden_size=768,
                                          num_layers=1, mlp_dim=64, num_heads=16,
                                          classifier="gap"))
  state_dict = timm_format.to_timm(params)
  loaded = timm_format.from_timm(state_dict, source="sd",
                                 config={"architecture": "vit_base_patch16_gap_224"})
  assert_same_params(loaded, params)
  with pytest.raises(ValueError, match=r"^sd: vit_base_patch16_rpn_224 is timm's post-norm "
                                       r"ViT \(block_fn=ResPostBlock, x \+ norm\(attn\(x\)\)\)"):
    timm_format.from_timm(state_dict, source="sd",
                          config={"architecture": "vit_base_patch16_rpn_224"})


@pytest.mark.parametrize("gelu, act_layer, hidden_act", [
    ("tanh", "gelu_tanh", "gelu_pytorch_tanh"), ("exact", "gelu", "gelu"),
    ("quick", "quick_gelu", "quick_gelu")])
def test_an_export_states_the_models_gelu(gelu, act_layer, hidden_act):
  params = random_params(tiny_model())
  assert timm_format.model_args(params, image_size=SIZE, gelu=gelu)["act_layer"] == act_layer
  assert hf_format.hf_config(params, image_size=SIZE, gelu=gelu)["hidden_act"] == hidden_act
  assert hf_format.stated_function({"model_type": "vit", "hidden_act": hidden_act},
                                   source="c") == dict(gelu=gelu, layer_norm_epsilon=1e-12)


@pytest.mark.parametrize("config, gelu", [
    ({}, "exact"),  # timm's default nn.GELU
    ({"architecture": "deit3_base_patch16_224"}, "exact"),
    # Some SigLIP architectures register the tanh GELU, the others compute
    # timm's exact one; a hub config names them alone.
    ({"architecture": "vit_so400m_patch16_siglip_384"}, "tanh"),
    ({"pretrained_cfg": {"architecture": "vit_base_patch32_siglip_gap_256"}}, "tanh"),
    ({"architecture": "vit_so400m_patch14_siglip_384"}, "exact"),
    ({"architecture": "vit_base_patch16_siglip_224", "model_args": {"act_layer": "gelu"}},
     "exact"),
    ({"model_args": {"act_layer": "gelu_tanh"}}, "tanh"),
    # OpenAI CLIP's, as timm's _quickgelu architectures register it.
    ({"architecture": "vit_base_patch16_clip_quickgelu_224"}, "quick")])
def test_the_gelu_a_timm_config_builds(config, gelu):
  assert timm_format.stated_function(config, source="c")["gelu"] == gelu


def test_another_activation_is_refused_by_name():
  state_dict = timm_format.to_timm(random_params(tiny_model()))
  with pytest.raises(ValueError, match=r"^ckpt: act_layer='silu'; this ViT computes "
                                       r"'gelu_tanh', 'gelu', 'quick_gelu'$"):
    timm_format.from_timm(state_dict, source="ckpt", num_heads=2,
                          config={"model_args": {"act_layer": "silu"}})
  with pytest.raises(ValueError, match=r"^c: hidden_act='relu'; this ViT computes "
                                       r"'gelu_pytorch_tanh', 'gelu_new', 'gelu_fast', "
                                       r"'gelu', 'quick_gelu'$"):
    hf_format.stated_gelu({"hidden_act": "relu"}, source="c")


def test_attention_pooling_beside_a_class_token_is_refused():
  state_dict = timm_format.to_timm(random_params(tiny_model("map")))
  state_dict["cls_token"] = np.zeros((1, 1, 32), np.float32)
  with pytest.raises(ValueError, match=r"^ckpt: a class token \(cls_token\) beside attention "
                                       r"pooling \(attn_pool\)"):
    timm_format.from_timm(state_dict, source="ckpt", num_heads=2)


def test_ours_to_hf_and_back_is_bit_exact():
  params = random_params(tiny_model("token"))
  state_dict = hf_format.to_hf(params)
  assert state_dict["vit.encoder.layer.1.attention.attention.query.weight"].shape == (32, 32)
  config = hf_format.hf_config(params, image_size=SIZE, class_names=list("abcdefghij"))
  assert config["hidden_act"] == "gelu_pytorch_tanh" and config["layer_norm_eps"] == 1e-6
  assert config["id2label"]["3"] == "d" and config["label2id"]["d"] == 3
  assert_same_params(hf_format.from_hf(state_dict, config, source="sd"), params)


def test_a_distilled_model_goes_to_hf_deit_and_back_bit_exact():
  """As DeiTForImageClassificationWithTeacher (facebook/deit-*-distilled-*):
  the two heads its two classifiers; DeiTForImageClassification's single
  class-token classifier, and a bare DeiTModel's pooler, are left out."""
  params = random_params(tiny_model("token", distillation_token=True))
  state_dict = hf_format.to_hf(params)
  assert state_dict["deit.embeddings.position_embeddings"].shape == (1, 2 + 16, 32)
  assert state_dict["distillation_classifier.weight"].shape == (10, 32)
  config = hf_format.hf_config(params, image_size=SIZE)
  assert (config["model_type"], config["architectures"]) == (
      "deit", ["DeiTForImageClassificationWithTeacher"])
  assert_same_params(hf_format.from_hf(state_dict, config, source="sd"), params)

  backbone = {n: v for n, v in npz.flatten(params).items() if not n.startswith("head")}
  single = {n: v for n, v in state_dict.items() if "classifier." not in n}
  single["classifier.weight"] = state_dict["cls_classifier.weight"]
  single["classifier.bias"] = state_dict["cls_classifier.bias"]
  bare = {n.removeprefix("deit."): v for n, v in state_dict.items() if "classifier" not in n}
  bare.update({"pooler.dense.weight": np.eye(32, dtype=np.float32),
               "pooler.dense.bias": np.zeros(32, np.float32)})
  for files in (single, bare):
    assert_same_params(hf_format.from_hf(files, config, source="sd"), backbone)


def dinov2_files(params):
  """A DINOv2 model's file (Dinov2Model's names, as facebook/dinov2-* hold
  them) of ``params``, a tiny model with layer scale and 2 registers; its
  classifier-free ViT names come from `to_hf`, the rest by DINOv2's names."""
  flat = npz.flatten(params)
  plain = {n: v for n, v in flat.items()
           if "LayerScale" not in n and n != "registers" and not n.startswith("head/")}
  files = {}
  for name, value in hf_format.to_hf(npz.unflatten(plain)).items():
    for pattern, replacement in ((r"^vit\.", ""), (r"layernorm_before", "norm1"),
                                 (r"layernorm_after", "norm2"),
                                 (r"intermediate\.dense", "mlp.fc1"),
                                 (r"(layer\.\d+\.)output\.dense", r"\1mlp.fc2")):
      name = re.sub(pattern, replacement, name)
    files[name] = value
  files["embeddings.register_tokens"] = flat["registers"]
  files["embeddings.mask_token"] = np.zeros((1, 32), np.float32)
  for i in range(2):
    for ours, theirs in (("LayerScale_0", "layer_scale1"), ("LayerScale_1", "layer_scale2")):
      files[f"encoder.layer.{i}.{theirs}.lambda1"] = flat[
          f"Transformer/encoderblock_{i}/{ours}/scale"]
  return files


DINOV2_CONFIG = dict(model_type="dinov2_with_registers", hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, mlp_ratio=2, patch_size=4, hidden_act="gelu")


def test_a_hf_dinov2_file_reads_as_layer_scale_and_registers():
  params = random_params(tiny_model("token", layer_scale_init=0.1, num_registers=2))
  want = {n: v for n, v in npz.flatten(params).items() if not n.startswith("head/")}
  files = dinov2_files(params)
  assert_same_params(hf_format.from_hf(files, DINOV2_CONFIG, source="sd"), want)
  # transformers 5's module names, and Dinov2ForImageClassification's prefix
  # and a classifier that reads the patches' mean, left out.
  live = {re.sub(r"attention\.attention\.(query|key|value)\.",
                 lambda m: f"attention.{m[1][0]}_proj.", "dinov2." + name): value
          for name, value in files.items()}
  live = {re.sub(r"attention\.output\.dense", "attention.o_proj", n): v for n, v in live.items()}
  live["classifier.weight"] = np.ones((10, 64), np.float32)
  live["classifier.bias"] = np.zeros(10, np.float32)
  assert "dinov2.encoder.layer.1.attention.q_proj.weight" in live
  assert_same_params(hf_format.from_hf(live, DINOV2_CONFIG, source="sd"), want)


def test_dinov2s_swiglu_is_refused():
  files = dinov2_files(random_params(tiny_model(layer_scale_init=0.1, num_registers=2)))
  with pytest.raises(ValueError, match=r"^sd: use_swiglu_ffn=True \(DINOv2's giant model\) "
                                       r"is a SwiGLU MLP; this ViT's MLP is Dense, GELU, Dense$"):
    hf_format.from_hf(files, {**DINOV2_CONFIG, "use_swiglu_ffn": True}, source="sd")


def clip_files(params, prefix="vision_model."):
  """CLIP's image tower's file (CLIPModel's names, as openai/clip-vit-* hold
  them) of ``params``, a tiny model with pre_norm and no patch bias: timm's
  names of it, renamed."""
  files = {}
  for name, value in timm_format.to_timm(params).items():
    block = re.match(r"blocks\.(\d+)\.(.*)", name)
    if name == "cls_token":
      files["embeddings.class_embedding"] = value.reshape(-1)
    elif name == "pos_embed":
      files["embeddings.position_embedding.weight"] = value[0]
    elif block and block[2].startswith("attn.qkv."):
      for their, part in zip("qkv", np.split(value, 3)):
        files[f"encoder.layers.{block[1]}.self_attn.{their}_proj.{name.rsplit('.', 1)[1]}"] = part
    elif block:
      rest = re.sub(r"^norm(\d)", r"layer_norm\1", block[2])
      files[f"encoder.layers.{block[1]}.{rest.replace('attn.proj', 'self_attn.out_proj')}"] = value
    elif not name.startswith("head."):
      ours = re.sub(r"^norm\.", "post_layernorm.", re.sub(r"^norm_pre\.", "pre_layrnorm.", name))
      files[ours.replace("patch_embed.proj", "embeddings.patch_embedding")] = value
  return {prefix + name: value for name, value in files.items()}


CLIP_CONFIG = dict(model_type="clip", vision_config=dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
    patch_size=4))


def test_a_hf_clip_files_image_tower_reads_as_a_pre_norm_vit():
  params = random_params(tiny_model("token", pre_norm=True))
  params["embedding"]["bias"] = np.zeros_like(params["embedding"]["bias"])
  want = {n: v for n, v in npz.flatten(params).items() if not n.startswith("head/")}
  files = clip_files(params)
  # The text tower and the projections into the joint embedding are left out.
  files.update({"text_model.embeddings.token_embedding.weight": np.zeros((5, 16), np.float32),
                "visual_projection.weight": np.zeros((8, 32), np.float32),
                "logit_scale": np.zeros((), np.float32)})
  assert_same_params(hf_format.from_hf(files, CLIP_CONFIG, source="sd"), want)
  vision_config = {"model_type": "clip_vision_model", **CLIP_CONFIG["vision_config"]}
  assert_same_params(hf_format.from_hf(clip_files(params, prefix=""), vision_config,
                                       source="sd"), want)
  # CLIPVisionConfig's defaults: OpenAI's QuickGELU and LayerNorm epsilon.
  assert hf_format.stated_function(CLIP_CONFIG, source="c") == dict(gelu="quick",
                                                                    layer_norm_epsilon=1e-5)


def test_the_position_ids_buffer_of_older_clip_files_is_read_past_when_it_counts_0_1_2():
  """transformers before 4.31 saved each tower's embeddings.position_ids."""
  params = random_params(tiny_model("token", pre_norm=True))
  params["embedding"]["bias"] = np.zeros_like(params["embedding"]["bias"])
  want = {n: v for n, v in npz.flatten(params).items() if not n.startswith("head/")}
  files = clip_files(params)
  files["vision_model.embeddings.position_ids"] = np.arange(17, dtype=np.int64)[None]
  files["text_model.embeddings.position_ids"] = np.arange(77, dtype=np.int64)[None]
  assert_same_params(hf_format.from_hf(files, CLIP_CONFIG, source="sd"), want)
  files["vision_model.embeddings.position_ids"] = np.arange(17, dtype=np.int64)[None, ::-1]
  with pytest.raises(ValueError, match=r"^sd: the image tower's embeddings.position_ids is "
                                       r"not 0, 1, \.\.\., 16; this ViT reads the 17 position "
                                       r"embeddings in order$"):
    hf_format.from_hf(files, CLIP_CONFIG, source="sd")


def test_a_bare_hf_vit_model_pooler_is_our_pre_logits():
  """ViTModel files (the in21k checkpoints) have no 'vit.' prefix, no classifier,
  and a Dense + tanh pooler on the class token."""
  params = npz.flatten(random_params(tiny_model("token", representation_size=16)))
  body = {n: v for n, v in params.items() if not n.startswith(("pre_logits/", "head/"))}
  config = hf_format.hf_config(npz.unflatten(body), image_size=SIZE)
  state_dict = {name.removeprefix("vit."): value
                for name, value in hf_format.to_hf(npz.unflatten(body)).items()}
  state_dict["pooler.dense.weight"] = params["pre_logits/kernel"].T
  state_dict["pooler.dense.bias"] = params["pre_logits/bias"]
  loaded = npz.flatten(hf_format.from_hf(state_dict, config, source="sd"))
  assert_same_params(npz.unflatten(loaded), npz.unflatten(
      {n: v for n, v in params.items() if not n.startswith("head/")}))


def test_timm_no_embed_class_gets_a_zero_class_token_position():
  params = random_params(tiny_model("token"))
  state_dict = timm_format.to_timm(params)
  state_dict["pos_embed"] = state_dict["pos_embed"][:, 1:]  # 16 rows: the patches alone
  loaded = timm_format.from_timm(state_dict, source="sd", num_heads=2)
  table = loaded["Transformer"]["posembed_input"]["pos_embedding"]
  np.testing.assert_array_equal(table[:, 0], 0)
  np.testing.assert_array_equal(table[:, 1:], state_dict["pos_embed"])


def test_a_distilled_deit_goes_to_timm_and_back_bit_exact():
  params = random_params(tiny_model("token", distillation_token=True))
  state_dict = timm_format.to_timm(params)
  assert state_dict["pos_embed"].shape == (1, 2 + 16, 32)
  assert state_dict["head_dist.weight"].shape == (10, 32)
  assert_same_params(timm_format.from_timm(state_dict, source="ckpt.pth", num_heads=2),
                     params)
  assert timm_format.hub_config(params, image_size=SIZE, mean=0.5, std=0.5)[
      "architecture"] == "deit_base_distilled_patch16_224"


def test_a_distillation_token_without_a_class_token_or_beside_registers_is_refused():
  state_dict = timm_format.to_timm(random_params(tiny_model("gap")))
  state_dict["dist_token"] = np.zeros((1, 1, 32), np.float32)
  with pytest.raises(ValueError, match=r"^ckpt.pth: a distillation token \(dist_token\) "
                                       r"without a class token"):
    timm_format.from_timm(state_dict, source="ckpt.pth", num_heads=2)
  with pytest.raises(ValueError, match=r"^parameters dist and registers: timm's distilled "
                                       r"DeiT has no register tokens"):
    timm_format.to_timm(random_params(tiny_model("token", distillation_token=True,
                                                 num_registers=2)))


@pytest.mark.parametrize("convert", [timm_format.to_timm, hf_format.to_hf])
@pytest.mark.parametrize("options, setting", [
    (dict(parallel_block=True), r"parallel blocks \(model.parallel_block=True\)"),
    (dict(use_bias=False), r"no biases \(model.use_bias=False\)")])
def test_vit_22b_layouts_are_refused_on_export_naming_the_setting(convert, options, setting):
  # They used to be refused as "parameter ...LayerNorm_2/scale is missing".
  with pytest.raises(ValueError, match=rf"^these parameters are of a ViT with {setting}, as "
                                       rf"ViT-22B's, which (timm|transformers)'"):
    convert(random_params(tiny_model("token", **options)))


@pytest.mark.parametrize("convert, match", [
    (timm_format.to_timm, r"^parameter pre_logits/kernel: timm's VisionTransformer has no "
                          r"representation layer .* model.representation_size=None"),
    (hf_format.to_hf, r"^parameter pre_logits/kernel: transformers' "
                      r"image classifiers have no representation layer"),
])
def test_pre_logits_is_refused_on_export(convert, match):
  with pytest.raises(ValueError, match=match):
    convert(random_params(tiny_model(representation_size=16)))


def test_what_no_transformers_classifier_computes_is_refused_on_export_to_hf():
  with pytest.raises(ValueError, match=r"'gap' classifier .* read the class token; "
                                       r"export this model to timm instead$"):
    hf_format.to_hf(random_params(tiny_model("gap")))
  with pytest.raises(ValueError, match=r"^the 'map' classifier \(attention pooling, no class "
                                       r"token\): .* export this model to timm instead"):
    hf_format.to_hf(random_params(tiny_model("map")))
  with pytest.raises(ValueError, match=r"^parameter Transformer/encoderblock_0/"
                                       r"MultiHeadDotProductAttention_1/query_ln/scale: "
                                       r"query/key normalisation \(qk_norm\)"):
    hf_format.to_hf(random_params(tiny_model("token", qk_norm=True)))
  with pytest.raises(ValueError, match=r"^parameter Transformer/pre_norm/scale: a LayerNorm "
                                       r"before the blocks \(pre_norm\), which transformers' "
                                       r"ViT, DeiT and DINOv2 do not have"):
    hf_format.to_hf(random_params(tiny_model("token", pre_norm=True)))
  with pytest.raises(ValueError, match=r"^parameter registers: register tokens without "
                                       r"layer scale \(model.layer_scale_init\)"):
    hf_format.to_hf(random_params(tiny_model("token", num_registers=1)))
  with pytest.raises(ValueError, match=r"^parameter dist: a distillation token beside "
                                       r"layer scale, which no transformers ViT has"):
    hf_format.to_hf(random_params(tiny_model("token", distillation_token=True,
                                             layer_scale_init=0.1)))
  odd_mlp = random_params(models.get_model("Ti/4", num_classes=10, **dict(TINY, mlp_dim=48),
                                           layer_scale_init=0.1))
  for convert in (hf_format.to_hf, functools.partial(hf_format.hf_config, image_size=SIZE)):
    with pytest.raises(ValueError, match=r"^model.mlp_dim=48 is no whole multiple of the "
                                         r"hidden size 32, as transformers' DINOv2 states it"):
      convert(odd_mlp)


@pytest.mark.parametrize("num_registers, model_type", [
    (0, "dinov2"), (2, "dinov2_with_registers")])
def test_layer_scale_goes_to_hf_dinov2_and_back_bit_exact(num_registers, model_type):
  """As Dinov2(WithRegisters)ForImageClassification, whose classifier reads the
  class token beside the patches' mean: ours its first half, the other zero."""
  params = random_params(tiny_model("token", layer_scale_init=0.1,
                                    num_registers=num_registers))
  state_dict = hf_format.to_hf(params)
  config = hf_format.hf_config(params, image_size=SIZE)
  assert (config["model_type"], config["mlp_ratio"]) == (model_type, 2)
  assert config["num_register_tokens" if num_registers else "use_mask_token"] == (
      num_registers or True)
  weight = state_dict["classifier.weight"]
  assert weight.shape == (10, 64) and not weight[:, 32:].any()
  np.testing.assert_array_equal(weight[:, :32], params["head"]["kernel"].T)
  assert state_dict[f"{model_type}.encoder.layer.1.layer_scale2.lambda1"].shape == (32,)
  assert_same_params(hf_format.from_hf(state_dict, config, source="sd"), params)
  # A classifier that reads the patches' mean is none of ours: left out.
  state_dict["classifier.weight"] = np.ones_like(weight)
  backbone = {n: v for n, v in npz.flatten(params).items() if not n.startswith("head/")}
  assert_same_params(hf_format.from_hf(state_dict, config, source="sd"),
                     npz.unflatten(backbone))


def test_hf_config_labels_every_class_of_the_head_where_fewer_are_named():
  """transformers sizes the classifier by id2label: one label a class, or the
  saved weights do not load."""
  config = hf_format.hf_config(random_params(tiny_model(num_classes=4)), image_size=SIZE,
                               class_names=["cat", "dog"])
  assert config["id2label"] == {"0": "cat", "1": "dog", "2": "LABEL_2", "3": "LABEL_3"}
  assert config["label2id"] == {"cat": 0, "dog": 1, "LABEL_2": 2, "LABEL_3": 3}


def test_a_tensor_of_the_wrong_shape_is_named():
  state_dict = timm_format.to_timm(random_params(tiny_model()))
  state_dict["blocks.1.mlp.fc2.weight"] = state_dict["blocks.1.mlp.fc2.weight"][:, :32]
  with pytest.raises(ValueError, match=r"^ckpt: tensor blocks.1.mlp.fc2.weight has shape "
                                       r"\(32, 32\), but \(32, 64\) in a timm ViT of width 32"):
    timm_format.from_timm(state_dict, source="ckpt", num_heads=2)
  params = random_params(tiny_model())
  config = hf_format.hf_config(params, image_size=SIZE)
  hf = hf_format.to_hf(params)
  del hf["vit.encoder.layer.1.layernorm_after.bias"]
  with pytest.raises(ValueError, match=r"^dir: tensor vit.encoder.layer.1.layernorm_after.bias "
                                       r"is missing"):
    hf_format.from_hf(hf, config, source="dir")


def test_heads_unknown_without_a_config_are_named():
  state_dict = timm_format.to_timm(random_params(tiny_model()))
  with pytest.raises(ValueError, match=r"^ckpt: the number of attention heads \(num_heads\) "
                                       r"is not in the tensors' shapes"):
    timm_format.from_timm(state_dict, source="ckpt")
  # A timm name states them where the width is the named size's.
  config = {"architecture": "vit_tiny_patch16_224"}
  assert timm_format._heads_of(config, 192, None, "ckpt") == 3
  # Where model_args change the width alone, timm keeps the name's heads,
  # whatever the caller would have.
  args = timm_format._timm_args({"architecture": "vit_base_patch16_224",
                                 "model_args": {"embed_dim": 384}})
  assert timm_format._heads_of(args, 384, 6, "ckpt") == 12


def test_a_timm_name_alone_gives_the_heads_of_a_checkpoint_of_its_width_only():
  """A config.json naming vit_base_patch16_224 and no model_args describes
  ViT-B's 768 wide blocks: of a 32 wide checkpoint the heads are the
  caller's (2), not ViT-B's 12."""
  params = random_params(tiny_model())
  loaded = timm_format.from_timm(timm_format.to_timm(params), source="sd", num_heads=2,
                                 config={"architecture": "vit_base_patch16_224"})
  assert_same_params(loaded, params)


def test_an_export_takes_timms_name_where_the_shape_has_one():
  args = dict(embed_dim=768, depth=12, mlp_ratio=4.0, num_heads=12, patch_size=16)
  assert timm_format.architecture(dict(args, img_size=384)) == "vit_base_patch16_384"
  assert timm_format.architecture(dict(args, img_size=160)) == "vit_base_patch16_224"
  assert timm_format.architecture(dict(args, embed_dim=32, img_size=224)) == (
      "vit_base_patch16_224")


def test_a_missing_library_is_one_line_naming_it(monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
  with pytest.raises(ImportError, match=r"^reading x.pth needs torch, which is not "
                                        r"installed: pip install -e '\.\[interop\]'$"):
    timm_format.require("torch", purpose="reading x.pth")
  with pytest.raises(ValueError):  # so a command line prints it as one line
    timm_format.require("torch", purpose="reading x.pth")


# ---------------------------------------------------------------------------
# Against timm and transformers
# ---------------------------------------------------------------------------


def perturbed(module, torch, seed=0):
  """``module`` with noise on every parameter: the libraries start biases at zero
  and norms at one, where a swapped mapping would go unseen."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for parameter in module.parameters():
      parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
  return module.eval()


def torch_state_dict(module):
  return {name: value.numpy() for name, value in module.state_dict().items()}


def timm_module(timm, torch, **model_args):
  torch.manual_seed(0)
  return timm.create_model(timm_format.architecture(model_args), pretrained=False,
                           **model_args)


@pytest.mark.parametrize("classifier, options", [
    ("token", {}), ("gap", {}), ("map", {}), ("token", dict(qk_norm=True)),
    ("token", dict(layer_scale_init=0.1, num_registers=3)),
    ("gap", dict(num_registers=2)), ("map", dict(layer_scale_init=0.1, num_registers=2)),
    ("token", dict(gelu="exact")), ("map", dict(gelu="exact")),
    ("token", dict(gelu="quick", pre_norm=True)),
    ("gap", dict(fc_norm=True, num_registers=4, layer_scale_init=0.1))])
def test_ours_in_timm_gives_our_logits(classifier, options):
  timm = library("timm")
  torch = library("torch")
  model = tiny_model(classifier, **options)
  params = random_params(model)
  module = timm_module(timm, torch, **timm_format.model_args(params, image_size=SIZE,
                                                             gelu=model.gelu))
  module.load_state_dict({name: torch.from_numpy(value) for name, value
                          in timm_format.to_timm(params).items()}, strict=True)
  batch = images()
  difference = relative_difference(timm_format.torch_logits(module.eval(), batch),
                                   model_logits(model, params, batch))
  print(f"ours -> timm ({classifier}, {options}): max relative logit difference "
        f"{difference:.2g}")
  assert difference < RELATIVE_TOLERANCE


@pytest.mark.parametrize("classifier, extra", [
    ("token", {}), ("gap", dict(class_token=False, global_pool="avg", fc_norm=False)),
    ("token", dict(no_embed_class=True)),
    ("map", dict(class_token=False, global_pool="map", fc_norm=False)),
    ("token", dict(qk_norm=True)),
    # DeiT-III's layer scale, DINOv2's registers with and without their
    # position rows.
    ("token", dict(init_values=1e-6, no_embed_class=True)),
    ("token", dict(init_values=1e-5, reg_tokens=4, no_embed_class=True)),
    ("token", dict(reg_tokens=3)),
    ("gap", dict(class_token=False, global_pool="avg", fc_norm=False, reg_tokens=2)),
    ("map", dict(class_token=False, global_pool="map", fc_norm=False, reg_tokens=2,
                 init_values=1e-5)),
    # timm's default GELU, the exact one, as DINOv2 and DeiT-III compute it.
    ("token", dict(act_layer=None, init_values=1e-5, reg_tokens=4, no_embed_class=True)),
    ("map", dict(act_layer="gelu", class_token=False, global_pool="map", fc_norm=False)),
    # CLIP's LayerNorm before the blocks, and OpenAI CLIP's QuickGELU.
    ("token", dict(act_layer="quick_gelu", pre_norm=True)),
    # timm's default for 'avg' pooling: the LayerNorm after it (fc_norm), as
    # vit_base_patch16_reg4_gap_256; and no query/key/value biases, as its
    # medium ViTs.
    ("gap", dict(class_token=False, global_pool="avg", reg_tokens=4, no_embed_class=True,
                 init_values=1e-5)),
    ("gap", dict(class_token=False, global_pool="avg", fc_norm=False, qkv_bias=False))])
def test_a_timm_model_here_gives_timms_logits(classifier, extra):
  timm = library("timm")
  torch = library("torch")
  args = dict(img_size=SIZE, patch_size=4, embed_dim=32, depth=2, num_heads=2,
              mlp_ratio=2.0, num_classes=10, **{"act_layer": "gelu_tanh", **extra})
  module = perturbed(timm_module(timm, torch, **args), torch)
  params = timm_format.from_timm(torch_state_dict(module), source="timm",
                                 config={"model_args": args})
  batch = images()
  model = tiny_model(classifier, qk_norm=extra.get("qk_norm", False),
                     layer_scale_init=extra.get("init_values"),
                     num_registers=extra.get("reg_tokens", 0),
                     pre_norm=extra.get("pre_norm", False),
                     fc_norm=extra.get("global_pool") == "avg" and extra.get("fc_norm", True),
                     gelu=timm_format.gelu_of(args, source="timm"))
  difference = relative_difference(model_logits(model, params, batch),
                                   timm_format.torch_logits(module, batch))
  print(f"timm -> ours ({classifier}, {extra}): max relative logit difference "
        f"{difference:.2g}")
  assert difference < RELATIVE_TOLERANCE


@pytest.mark.parametrize("name, options, stated, exported_as", [
    # CLIP: its LayerNorms' epsilon 1e-5, a LayerNorm before the blocks, no
    # patch bias, OpenAI's QuickGELU.
    ("vit_base_patch16_clip_quickgelu_224", dict(pre_norm=True),
     dict(gelu="quick", layer_norm_epsilon=1e-5), "VisionTransformer"),
    # DeiT's distilled ViT: the two heads' mean, as timm's at test time.
    ("deit_base_distilled_patch16_224", dict(distillation_token=True),
     dict(gelu="exact", layer_norm_epsilon=1e-6), "VisionTransformerDistilled"),
], ids=["clip", "distilled_deit"])
def test_a_timm_architecture_gives_its_logits_here_and_back(tmp_path, name, options, stated,
                                                            exported_as):
  """timm's architecture, read as its hub directory says, and our model of it
  exported back, as timm builds both."""
  timm = library("timm")
  torch = library("torch")
  args = dict(img_size=SIZE, patch_size=4, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0,
              num_classes=10)
  torch.manual_seed(0)
  module = perturbed(timm.create_model(name, pretrained=False, **args), torch)
  timm.models.save_for_hf(module, str(tmp_path / "theirs"), model_args=args,
                          safe_serialization=True)
  assert pretrained.stated_function(str(tmp_path / "theirs")) == stated
  model = tiny_model("token", **options, **stated)
  params = pretrained.read_params(str(tmp_path / "theirs"))
  batch = images()
  ours = model_logits(model, params, batch)
  difference = relative_difference(ours, timm_format.torch_logits(module, batch))
  print(f"timm {name} -> ours: max relative logit difference {difference:.2g}")
  assert difference < RELATIVE_TOLERANCE

  timm_format.save(params, str(tmp_path / "back"), image_size=SIZE, mean=0.5, std=0.5, **stated)
  exported = timm_format.timm_model(str(tmp_path / "back"))
  assert type(exported).__name__ == exported_as
  assert exported.norm.eps == stated["layer_norm_epsilon"]
  difference = relative_difference(timm_format.torch_logits(exported, batch), ours)
  print(f"ours -> timm {name}: max relative logit difference {difference:.2g}")
  assert difference < RELATIVE_TOLERANCE


def test_a_layer_norm_epsilon_timm_cannot_state_is_refused_on_export():
  with pytest.raises(ValueError, match=r"^layer_norm_epsilon=1e-12: a timm config.json builds "
                                       r"LayerNorms of epsilon 1e-06 or, through a CLIP "
                                       r"architecture, 1e-05"):
    timm_format.hub_config(random_params(tiny_model()), image_size=SIZE, mean=0.5, std=0.5,
                           layer_norm_epsilon=1e-12)


def test_timms_registered_names_are_the_ones_an_export_takes():
  timm = library("timm")
  assert all(timm.is_model(name) for name in timm_format.TIMM_NAMES)
  assert all(timm.is_model(name) for name in timm_format._TANH_GELU_ARCHITECTURES)


def hf_classes():
  transformers = library("transformers")
  library("torch")
  return transformers


@pytest.mark.parametrize("options, architecture", [
    (dict(gelu="tanh"), "ViTForImageClassification"),
    (dict(gelu="exact"), "ViTForImageClassification"),
    (dict(gelu="exact", layer_scale_init=0.1), "Dinov2ForImageClassification"),
    (dict(gelu="exact", layer_scale_init=0.1, num_registers=4),
     "Dinov2WithRegistersForImageClassification")])
def test_ours_in_transformers_gives_our_logits(tmp_path, options, architecture):
  hf_classes()
  model = tiny_model("token", **options)
  params = random_params(model)
  hf_format.save(params, str(tmp_path), image_size=SIZE, mean=0.5, std=0.5,
                 gelu=options["gelu"])
  module = hf_format.hf_model(str(tmp_path))
  assert type(module).__name__ == architecture
  batch = images()
  difference = relative_difference(timm_format.torch_logits(module, batch),
                                   model_logits(model, params, batch))
  print(f"ours -> transformers {architecture} ({options}): max relative logit "
        f"difference {difference:.2g}")
  assert difference < RELATIVE_TOLERANCE


@pytest.mark.parametrize("hidden_act, gelu", [("gelu_pytorch_tanh", "tanh"),
                                              ("gelu", "exact")])
def test_a_transformers_model_here_gives_its_logits(tmp_path, hidden_act, gelu):
  """Both as a live model's state dict (transformers 5's module names) and as
  the directory it saves (the file names); ViTConfig's default GELU is the
  exact one, which google/vit-base-patch16-224 states."""
  transformers = hf_classes()
  torch = library("torch")
  torch.manual_seed(0)
  config = transformers.ViTConfig(
      hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
      image_size=SIZE, patch_size=4, num_labels=10, hidden_act=hidden_act,
      layer_norm_eps=1e-6)
  module = perturbed(transformers.ViTForImageClassification(config), torch)
  module.save_pretrained(str(tmp_path))
  live = hf_format.from_hf(torch_state_dict(module), config.to_dict(), source="live")
  saved = hf_format.load(str(tmp_path))
  assert_same_params(live, saved)
  batch = images()
  assert pretrained.stated_function(str(tmp_path)) == dict(gelu=gelu, layer_norm_epsilon=1e-6)
  difference = relative_difference(model_logits(tiny_model("token", gelu=gelu), saved, batch),
                                   timm_format.torch_logits(module, batch))
  print(f"transformers -> ours ({hidden_act}): max relative logit difference "
        f"{difference:.2g}")
  assert difference < RELATIVE_TOLERANCE


def saved_and_read(module, directory):
  """Our parameters of a transformers ``module`` saved to ``directory``, the
  same as of its live state dict (transformers 5's module names)."""
  module.save_pretrained(directory)
  params = hf_format.load(directory)
  assert_same_params(hf_format.from_hf(torch_state_dict(module), module.config.to_dict(),
                                       source="live"), params)
  return params


def our_features(model, params, batch):
  """The features (pre_logits' input) of a headless checkpoint's ``params``."""
  flat = npz.flatten(params)
  flat.update({"head/kernel": np.zeros((32, 10), np.float32),
               "head/bias": np.zeros(10, np.float32)})
  _, state = model.apply({"params": npz.unflatten(flat)}, batch, train=False,
                         mutable=["intermediates"])
  return np.asarray(state["intermediates"]["features"][0])


@pytest.mark.parametrize("registers", [0, 4])
def test_a_transformers_dinov2_here_gives_its_features(tmp_path, registers):
  """Dinov2Model and Dinov2WithRegistersModel, saved as facebook/dinov2-* are:
  their pooled class token is our features (pre_logits' input)."""
  transformers = hf_classes()
  torch = library("torch")
  torch.manual_seed(0)
  shape = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
               image_size=SIZE, patch_size=4)
  if registers:
    module = transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(
        num_register_tokens=registers, **shape))
  else:
    module = transformers.Dinov2Model(transformers.Dinov2Config(**shape))
  module = perturbed(module, torch)
  params = saved_and_read(module, str(tmp_path))
  assert pretrained.stated_function(str(tmp_path)) == dict(gelu="exact",
                                                           layer_norm_epsilon=1e-6)
  model = tiny_model("token", layer_scale_init=1e-5, num_registers=registers, gelu="exact")
  batch = images()
  with torch.no_grad():
    theirs = module(torch.from_numpy(batch.transpose(0, 3, 1, 2))).pooler_output.numpy()
  difference = relative_difference(our_features(model, params, batch), theirs)
  print(f"transformers DINOv2 ({registers} registers) -> ours: max relative feature "
        f"difference {difference:.2g}")
  assert difference < RELATIVE_TOLERANCE


@pytest.mark.parametrize("whole", [False, True])
def test_a_transformers_clip_image_tower_here_gives_its_features(tmp_path, whole):
  """CLIPVisionModel, and the image tower of a whole CLIPModel as
  openai/clip-vit-* are: its pooled class token is our features."""
  transformers = hf_classes()
  torch = library("torch")
  torch.manual_seed(0)
  vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, image_size=SIZE, patch_size=4)
  if whole:
    module = transformers.CLIPModel(transformers.CLIPConfig(
        vision_config=vision, projection_dim=8, text_config=dict(
            hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)))
  else:
    module = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**vision))
  module = perturbed(module, torch)
  params = saved_and_read(module, str(tmp_path))
  stated = pretrained.stated_function(str(tmp_path))
  assert stated == dict(gelu="quick", layer_norm_epsilon=1e-5)
  batch = images()
  tower = module.vision_model if whole else module
  with torch.no_grad():
    theirs = tower(pixel_values=torch.from_numpy(batch.transpose(0, 3, 1, 2))).pooler_output
  difference = relative_difference(
      our_features(tiny_model("token", pre_norm=True, **stated), params, batch), theirs.numpy())
  print(f"transformers CLIP ({'CLIPModel' if whole else 'CLIPVisionModel'}) -> ours: max "
        f"relative feature difference {difference:.2g}")
  assert difference < RELATIVE_TOLERANCE


def test_a_timm_pth_and_a_hf_directory_fine_tune_like_an_npz(tmp_path):
  """`pretrained.load_pretrained` reads timm's pickled state dict (torch) and
  a Hugging Face directory to the same parameters as our own .npz."""
  torch = library("torch")
  model = tiny_model("token")
  params = random_params(model)
  npz.save_npz(params, str(tmp_path / "ours.npz"))
  torch.save({"state_dict": {"module." + name: torch.from_numpy(value) for name, value
                             in timm_format.to_timm(params).items()}},
             str(tmp_path / "timm.pth"))
  hf_format.save(params, str(tmp_path / "hf"), image_size=SIZE, mean=0.5, std=0.5)
  fresh = random_params(tiny_model("token", num_classes=3), seed=1)
  expected = pretrained.load_pretrained(str(tmp_path / "ours.npz"), fresh, new_grid=(4, 4),
                                        num_prefix_tokens=1)
  for path in ("timm.pth", "hf", "hf/model.safetensors"):
    assert_same_params(pretrained.load_pretrained(
        str(tmp_path / path), fresh, new_grid=(4, 4), num_prefix_tokens=1), expected)


def test_timm_config_json_reads_as_timm_writes_it(tmp_path):
  """The hub config.json is parsed by timm's own reader into the model we wrote."""
  timm = library("timm")
  library("torch")
  params = random_params(tiny_model("gap"))
  timm_format.save(params, str(tmp_path), image_size=SIZE, mean=0.5, std=0.5,
                   class_names=list("abcdefghij"))
  with open(tmp_path / "config.json") as f:
    assert json.load(f)["label_names"][3] == "d"
  module = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
  batch = images()
  np.testing.assert_array_equal(timm_format.torch_logits(module, batch),
                                timm_format.torch_logits(timm_format.timm_model(str(tmp_path)),
                                                         batch))
