"""ViT parameters <-> Hugging Face transformers' ViT, DeiT and DINOv2 classifiers.

A Hugging Face model directory holds ``config.json`` (a ViTConfig, ``model_type:
vit``) and ``model.safetensors`` (or a pickled ``pytorch_model.bin``), whose
tensors are named ``vit.embeddings.{cls_token, position_embeddings,
patch_embeddings.projection}``, ``vit.encoder.layer.N.{layernorm_before,
attention.attention.{query,key,value}, attention.output.dense,
layernorm_after, intermediate.dense, output.dense}``, ``vit.layernorm`` and
``classifier``. transformers 5 names its modules otherwise in memory
(``vit.layers.N.attention.q_proj``, ...) but saves and loads these names, so
those are what `save` writes; `from_hf` takes either. A bare ViTModel's file
lacks the ``vit.`` prefix and the classifier, and may have a pooler (Dense +
tanh on the class token), which is our ``pre_logits`` layer.

DeiT (``model_type: deit``, as facebook/deit-*-distilled-* are saved) is a
ViT under ``deit.`` with a distillation token (``embeddings.distillation_token``,
our ``dist``, ``model.distillation_token``) and, in
DeiTForImageClassificationWithTeacher, two classifiers whose mean is the
logits, as ours: ``cls_classifier`` on the class token (``head``) and
``distillation_classifier`` on the distillation token (``head_dist``). A
distilled model exports to that class. DeiTForImageClassification (what
transformers fine-tunes) classifies the class token alone, which our
distilled model does not, so its ``classifier`` is left out on import, as
is a bare DeiTModel's pooler: fine-tuning starts fresh heads.

DINOv2 (``model_type: dinov2``, and ``dinov2_with_registers``): its layers
are a ViT's with layer scale (``layer_scale{1,2}.lambda1``) and register
tokens (``embeddings.register_tokens``), our ``model.layer_scale_init`` and
``model.num_registers``; the MLP is ``mlp.fc1``/``mlp.fc2``, and the SwiGLU
of its giant model is refused. A model with layer scale (and registers)
exports to Dinov2(WithRegisters)ForImageClassification, whose classifier
reads the class token beside the patches' mean: ours is its class-token
half, the other half zero, which computes our logits and reads back as our
head (a classifier that uses the mean is left out on import). CLIP's image
tower is read, one way (``model_type: clip``, its ``vision_model``, or
``clip_vision_model``): a ViT with a LayerNorm before the blocks
(``pre_layrnorm``, our ``model.pre_norm``), QuickGELU and LayerNorm epsilon
1e-5, whose ``post_layernorm`` of the class token is our ``encoder_norm``;
the text tower and the projections into the joint embedding are left out.

Converting is exact and needs numpy alone (state-dict files are read with
`timm_format`'s helpers). Where the models differ:

- classifier: transformers' classifiers read the class token, so a 'gap'
  or 'map' model is refused on export, as is our ``pre_logits`` layer,
  which no classifier of theirs uses.
- GELU: ViTConfig's default ``hidden_act='gelu'`` is the exact erf form; ours
  is the tanh approximation, which transformers calls ``gelu_pytorch_tanh``,
  unless ``model.gelu`` says another. An export states ours; `stated_function`
  reads a checkpoint's, which `pretrained.check_function` compares with the
  model's.
- LayerNorm: ours uses ``model.layer_norm_epsilon`` (1e-6), which an export
  states as ``layer_norm_eps``; ViTConfig's default, and Google's converted
  checkpoints, say 1e-12, a difference far below float32's resolution of the
  normalised values.
"""
import json
import os
import re

from absl import logging
import numpy as np

from vit_jax.models import npz, timm_format
from vit_jax.models.timm_format import (CONFIG_FILE, OUR_ATTENTION, OUR_BLOCK,
                                        WEIGHTS_FILES, OurParams, TorchTensors)

MODEL_TYPE = "vit"
DEIT_MODEL_TYPE = "deit"
DINOV2_MODEL_TYPES = ("dinov2", "dinov2_with_registers")
# CLIPModel's (image and text towers) and CLIPVisionModel's.
CLIP_MODEL_TYPES = ("clip", "clip_vision_model")
MODEL_TYPES = (MODEL_TYPE, DEIT_MODEL_TYPE, *DINOV2_MODEL_TYPES, *CLIP_MODEL_TYPES)
# CLIPVisionConfig's defaults, where they are not ViTConfig's.
_CLIP_VISION_DEFAULTS = dict(patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5)
_CLIP_POSITION_IDS = "embeddings.position_ids"  # a buffer of older files
PREPROCESSOR_FILE = "preprocessor_config.json"
# transformers' activation names of our GELUs (vit.GELUS), the first of each
# form what an export writes.
HIDDEN_ACTS = {"tanh": ("gelu_pytorch_tanh", "gelu_new", "gelu_fast"), "exact": ("gelu",),
               "quick": ("quick_gelu",)}
# ViTConfig's (and DeiTConfig's) default LayerNorm epsilon, and Dinov2Config's.
_DEFAULT_EPSILONS = {MODEL_TYPE: 1e-12, DEIT_MODEL_TYPE: 1e-12, "dinov2": 1e-6,
                     "dinov2_with_registers": 1e-6}
# The classifier class of each model type that `save` writes.
_CLASSIFIERS = {MODEL_TYPE: "ViTForImageClassification",
                DEIT_MODEL_TYPE: "DeiTForImageClassificationWithTeacher",
                "dinov2": "Dinov2ForImageClassification",
                "dinov2_with_registers": "Dinov2WithRegistersForImageClassification"}
# Our heads <- DeiTForImageClassificationWithTeacher's classifiers.
_DEIT_HEADS = (("head", "cls_classifier"), ("head_dist", "distillation_classifier"))

_LAYER = "encoder.layer.{}."
# A layer's (LayerNorm_0, LayerNorm_2) and (Dense_0, Dense_1) in ViT's and DeiT's
# files, and in DINOv2's.
_VIT_BLOCK = (("layernorm_before", "layernorm_after"), ("intermediate.dense", "output.dense"))
_DINOV2_BLOCK = (("norm1", "norm2"), ("mlp.fc1", "mlp.fc2"))
_DINOV2_PREFIX = re.compile(r"^dinov2(?:_with_registers)?\.")
# Dinov2Config's and Dinov2WithRegistersConfig's default patch size, which a
# config.json saved by transformers leaves out.
_DINOV2_PATCH_SIZES = {"dinov2": 14, "dinov2_with_registers": 16}
# Our layer scales of a block's two branches <- DINOv2's.
_DINOV2_LAYER_SCALES = (("LayerScale_0", "layer_scale1"), ("LayerScale_1", "layer_scale2"))

# transformers 5's module names (a live model's state_dict) -> the names its
# files hold (for DINOv2, only the attention's are renamed).
_V5_ATTENTION_RENAMES = (
    (re.compile(r"\.attention\.q_proj\."), ".attention.attention.query."),
    (re.compile(r"\.attention\.k_proj\."), ".attention.attention.key."),
    (re.compile(r"\.attention\.v_proj\."), ".attention.attention.value."),
    (re.compile(r"\.attention\.o_proj\."), ".attention.output.dense."),
)
_V5_RENAMES = (
    (re.compile(r"^((?:vit|deit)\.)?layers\.(\d+)\."), r"\1encoder.layer.\2."),
    *_V5_ATTENTION_RENAMES,
    (re.compile(r"\.mlp\.fc1\."), ".intermediate.dense."),
    (re.compile(r"\.mlp\.fc2\."), ".output.dense."),
)


def is_hf_config(config):
  """Whether a parsed config.json is a transformers model's (any model_type)."""
  return isinstance(config, dict) and "model_type" in config


# ---------------------------------------------------------------------------
# Ours -> Hugging Face
# ---------------------------------------------------------------------------


def _export_model_type(ours):
  """The transformers model type ``ours`` (`OurParams`) exports to: DINOv2's
  for layer scale (Dinov2WithRegisters' with register tokens too), DeiT's
  for a distillation token, else ViT's."""
  if ours.num_registers and not ours.layer_scale:
    raise ValueError("parameter registers: register tokens without layer scale "
                     "(model.layer_scale_init), which transformers' DINOv2 with "
                     "registers has in every block; export this model to timm instead")
  if ours.layer_scale:
    if ours.has_dist:
      raise ValueError("parameter dist: a distillation token beside layer scale, which "
                       "no transformers ViT has; export this model to timm instead")
    return DINOV2_MODEL_TYPES[bool(ours.num_registers)]
  return DEIT_MODEL_TYPE if ours.has_dist else MODEL_TYPE


def _ours(params):
  """``params`` as `OurParams`, refused where no transformers classifier
  computes their model, and the model type they export to."""
  ours = OurParams(params, "transformers' image classifier")
  if not ours.has_cls:
    pooling = ("'map' classifier (attention pooling" if ours.has_map
               else "'gap' classifier (tokens averaged")
    raise ValueError(f"the {pooling}, no class token): transformers' ViT, DeiT and "
                     f"DINOv2 classifiers read the class token; export this model to "
                     f"timm instead")
  for name, what in ((f"{OUR_BLOCK.format(0)}{OUR_ATTENTION}query_ln/scale",
                      "query/key normalisation (qk_norm)"),
                     (f"{timm_format.PRE_NORM}/scale", "a LayerNorm before the blocks "
                                                      "(pre_norm)"),
                     ("fc_norm/scale", "a LayerNorm after pooling (fc_norm)")):
    ours.refuse(name, f"{what}, which transformers' ViT, DeiT and DINOv2 do not have; "
                      f"export this model to timm instead")
  ours.refuse("pre_logits/kernel",
              "transformers' image classifiers have no representation layer "
              "(Dense + tanh) before the classifier; fine-tune with "
              "model.representation_size=None to export to Hugging Face")
  model_type = _export_model_type(ours)
  if model_type in DINOV2_MODEL_TYPES:
    _mlp_ratio(ours)  # refused before anything is converted
  ours.target = f"transformers' {_CLASSIFIERS[model_type]}"
  return ours, model_type


def to_hf(params):
  """The state dict (numpy, by its file names) of ``params`` as the
  transformers classifier `_export_model_type` picks: ViTForImageClassification,
  DeiTForImageClassificationWithTeacher, or DINOv2's ForImageClassification,
  whose classifier reads the class token beside the patches' mean, the mean's
  half of it zero."""
  ours, model_type = _ours(params)
  prefix = f"{model_type}."
  dinov2 = model_type in DINOV2_MODEL_TYPES
  sd = {f"{prefix}embeddings.cls_token": ours.take("cls"),
        f"{prefix}embeddings.position_embeddings": ours.take(npz.POSEMB),
        f"{prefix}embeddings.patch_embeddings.projection.weight":
            timm_format.conv_to_torch(ours.take("embedding/kernel")),
        f"{prefix}embeddings.patch_embeddings.projection.bias": ours.take("embedding/bias")}
  if ours.has_dist:
    sd[f"{prefix}embeddings.distillation_token"] = ours.take("dist")
  if dinov2:  # masked-image modelling's, unused in a forward pass: zero, as DINOv2 starts it
    sd[f"{prefix}embeddings.mask_token"] = np.zeros((1, ours.width), np.float32)
  if ours.num_registers:
    sd[f"{prefix}embeddings.register_tokens"] = ours.take("registers")
  norms, mlp = _DINOV2_BLOCK if dinov2 else _VIT_BLOCK
  for i in range(ours.depth):
    block, theirs = OUR_BLOCK.format(i), prefix + _LAYER.format(i)
    for our_norm, their_norm in zip(("LayerNorm_0", "LayerNorm_2"), norms):
      sd[f"{theirs}{their_norm}.weight"] = ours.take(f"{block}{our_norm}/scale")
      sd[f"{theirs}{their_norm}.bias"] = ours.take(f"{block}{our_norm}/bias")
    for name in ("query", "key", "value"):
      for part, torch_part in (("kernel", "weight"), ("bias", "bias")):
        sd[f"{theirs}attention.attention.{name}.{torch_part}"] = timm_format.heads_to_torch(
            ours.take(f"{block}{OUR_ATTENTION}{name}/{part}"))
    sd[f"{theirs}attention.output.dense.weight"] = timm_format.out_to_torch(
        ours.take(f"{block}{OUR_ATTENTION}out/kernel"))
    sd[f"{theirs}attention.output.dense.bias"] = ours.take(f"{block}{OUR_ATTENTION}out/bias")
    for our_dense, their_dense in zip(("Dense_0", "Dense_1"), mlp):
      sd[f"{theirs}{their_dense}.weight"] = ours.take(f"{block}MlpBlock_3/{our_dense}/kernel").T
      sd[f"{theirs}{their_dense}.bias"] = ours.take(f"{block}MlpBlock_3/{our_dense}/bias")
    if dinov2:
      for our_scale, their_scale in _DINOV2_LAYER_SCALES:
        sd[f"{theirs}{their_scale}.lambda1"] = ours.take(f"{block}{our_scale}/scale")
  sd[f"{prefix}layernorm.weight"] = ours.take("Transformer/encoder_norm/scale")
  sd[f"{prefix}layernorm.bias"] = ours.take("Transformer/encoder_norm/bias")
  heads = _DEIT_HEADS if ours.has_dist else (("head", "classifier"),)
  for head, classifier in heads:
    if f"{head}/kernel" in ours.flat:
      weight = ours.take(f"{head}/kernel").T
      if dinov2:  # [class token, mean of the patches] -> classes
        weight = np.concatenate([weight, np.zeros_like(weight)], axis=1)
      sd[f"{classifier}.weight"] = weight
      sd[f"{classifier}.bias"] = ours.take(f"{head}/bias")
  ours.check_all_taken()
  return {name: np.ascontiguousarray(value) for name, value in sd.items()}


def exported_params(params):
  """``params`` as a Hugging Face file of them reads back: unchanged."""
  return params


def hf_config(params, *, image_size, class_names=None, gelu="tanh", layer_norm_epsilon=1e-6):
  """The config.json of ``params`` as the classifier `to_hf` writes: a
  ViTConfig, DeiTConfig, Dinov2Config or Dinov2WithRegistersConfig.

  The labels are the run's class names where it has them, else LABEL_i, one
  for every class of the head: transformers sizes its classifier by them.
  """
  ours, model_type = _ours(params)
  names = list(class_names or [])  # a source may name fewer than num_classes
  names += [f"LABEL_{i}" for i in range(len(names), ours.num_classes)]
  dinov2 = model_type in DINOV2_MODEL_TYPES
  config = {
      "architectures": [_CLASSIFIERS[model_type]],
      "model_type": model_type,
      "hidden_size": ours.width,
      "num_hidden_layers": ours.depth,
      "num_attention_heads": ours.heads,
      **({"mlp_ratio": _mlp_ratio(ours)} if dinov2 else {"intermediate_size": ours.mlp_dim}),
      "hidden_act": HIDDEN_ACTS[gelu][0],
      "hidden_dropout_prob": 0.0,
      "attention_probs_dropout_prob": 0.0,
      "initializer_range": 0.02,
      "layer_norm_eps": layer_norm_epsilon,
      "image_size": image_size,
      "patch_size": ours.patch,
      "num_channels": 3,
      "qkv_bias": True,
  }
  if dinov2:
    config.update(layerscale_value=1.0, use_swiglu_ffn=False, drop_path_rate=0.0,
                  apply_layernorm=True)
    config.update({"num_register_tokens": ours.num_registers} if ours.num_registers
                  else {"use_mask_token": True})
  else:
    config["encoder_stride"] = ours.patch
  config["dtype"] = "float32"
  config["id2label"] = {str(i): name for i, name in enumerate(names)}
  if len(set(names)) == len(names):
    config["label2id"] = {name: i for i, name in enumerate(names)}
  return config


def _mlp_ratio(ours):
  """Dinov2Config's ``mlp_ratio``, the MLP's width over the hidden size, a whole number."""
  ratio, rest = divmod(ours.mlp_dim, ours.width)
  if rest:
    raise ValueError(f"model.mlp_dim={ours.mlp_dim} is no whole multiple of the hidden "
                     f"size {ours.width}, as transformers' DINOv2 states it (mlp_ratio); "
                     f"export this model to timm instead")
  return ratio


# PIL's resample codes of TensorFlow's resize methods that transformers'
# processors run; the others are stated as bilinear, which transformers 5
# antialiases: its processors resize with torch, which has no box filter for
# TF's area (timm's PIL does, `timm_format._TIMM_INTERPOLATIONS`).
_RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3}


def preprocessor_config(*, image_size, mean, std, eval_resize=None):
  """An image processor's settings that resize and crop as ``eval_resize``
  (`vit_jax.data.preprocess.eval_resize.EvalResize`) and give the model its
  input range.

  ViTImageProcessor resizes both sides (`resize`); DeiTImageProcessor then
  crops the centre (`resize` and `central_crop`); CLIPImageProcessor resizes
  the shorter side and crops the centre (`resize_small`, and `central_crop`).
  Without ``eval_resize``, a resize of both sides to ``image_size``.
  """
  resample = _RESAMPLE.get(getattr(eval_resize, "method", "bilinear"), 2)
  common = {"do_resize": True, "resample": resample,
            "do_rescale": True, "rescale_factor": 1 / 255,
            "do_normalize": True, "image_mean": timm_format.per_channel(mean),
            "image_std": timm_format.per_channel(std)}
  mode = getattr(eval_resize, "mode", None)
  if mode == "squash" and eval_resize.crop < eval_resize.resize_to:
    side = eval_resize.resize_to
    return {"image_processor_type": "DeiTImageProcessor",
            "size": {"height": side, "width": side}, "do_center_crop": True,
            "crop_size": {"height": image_size, "width": image_size}, **common}
  if mode == "shorter_side":
    return {"image_processor_type": "CLIPImageProcessor",
            "size": {"shortest_edge": eval_resize.resize_to}, "do_center_crop": True,
            "crop_size": {"height": image_size, "width": image_size},
            "do_convert_rgb": True, **common}
  return {"image_processor_type": "ViTImageProcessor",
          "size": {"height": image_size, "width": image_size}, **common}


def save(params, out, *, image_size, mean, std, class_names=None, gelu="tanh",
         layer_norm_epsilon=1e-6, eval_resize=None):
  """Writes a Hugging Face model directory: config.json, model.safetensors and
  preprocessor_config.json (``mean``, ``std`` normalise [0, 1] pixels to the
  model's input range; `preprocessor_config` states ``eval_resize``).
  Returns the config."""
  state_dict = to_hf(params)  # refusals before anything is written
  config = hf_config(params, image_size=image_size, class_names=class_names, gelu=gelu,
                     layer_norm_epsilon=layer_norm_epsilon)
  os.makedirs(out, exist_ok=True)
  timm_format.write_safetensors(state_dict, os.path.join(out, WEIGHTS_FILES[0]))
  for name, content in ((CONFIG_FILE, config), (PREPROCESSOR_FILE, preprocessor_config(
      image_size=image_size, mean=mean, std=std, eval_resize=eval_resize))):
    with open(os.path.join(out, name), "w") as f:
      json.dump(content, f, indent=2)
  return config


def hf_model(directory):
  """transformers' classifier of a model directory `save` wrote (needs transformers)."""
  transformers = timm_format.require("transformers",
                                     purpose="building a Hugging Face model")
  config = timm_format.read_json(os.path.join(directory, CONFIG_FILE))
  model_class = getattr(transformers, _CLASSIFIERS[config["model_type"]])
  return model_class.from_pretrained(directory).eval()


# ---------------------------------------------------------------------------
# Hugging Face -> ours
# ---------------------------------------------------------------------------


def _renamed(state_dict, renames):
  renamed = {}
  for name, value in state_dict.items():
    for pattern, replacement in renames:
      name = pattern.sub(replacement, name)
    renamed[name] = value
  return renamed


def _file_names(state_dict, prefix):
  """``state_dict`` under the names of a ViTForImageClassification file
  (``prefix`` 'vit.'), or a DeiT one's ('deit.')."""
  renamed = _renamed(state_dict, _V5_RENAMES)
  if not any(name.startswith(prefix) for name in renamed):  # a bare ViTModel or DeiTModel
    renamed = {name if "classifier." in name else prefix + name: value
               for name, value in renamed.items()}
  return renamed


def _size(value, what, source):
  """A square size from a config value (an int or [h, w])."""
  if isinstance(value, (list, tuple)):
    if len(set(value)) != 1:
      raise ValueError(f"{source}: {what} {value} is not square, as this ViT's patches are")
    value = value[0]
  return int(value)


def _vision_config(config):
  """The image model's part of a config: a CLIP config's vision_config, with
  CLIPVisionConfig's defaults; the config itself for the others."""
  if config.get("model_type") not in CLIP_MODEL_TYPES:
    return config
  vision = (config.get("vision_config") or {}) if config["model_type"] == "clip" else config
  return {**_CLIP_VISION_DEFAULTS, **vision, "model_type": config["model_type"]}


def stated_function(config, *, source):
  """What a transformers ViT, DeiT, DINOv2 or CLIP config computes, where our model
  has a setting for it: {config.model field: value}."""
  config = _vision_config(config)
  return {"gelu": stated_gelu(config, source=source),
          "layer_norm_epsilon": float(config.get(
              "layer_norm_eps", _DEFAULT_EPSILONS.get(config.get("model_type"), 1e-12)))}


def stated_gelu(config, *, source):
  """Which of vit.GELUS a transformers ViT config computes; another activation
  is refused."""
  act = config.get("hidden_act", "gelu")  # ViTConfig's default
  forms = {name: form for form, names in HIDDEN_ACTS.items() for name in names}
  if act not in forms:
    raise ValueError(f"{source}: hidden_act={act!r}; this ViT computes "
                     f"{', '.join(map(repr, forms))}")
  return forms[act]


def _shape(config, source, *, patch_size):
  """(width, depth, heads, patch) that a ViT's or DINOv2's config states
  (``patch_size``: the model's default)."""
  stated_gelu(config, source=source)  # refuses another activation
  if config.get("num_channels", 3) != 3:
    raise ValueError(f"{source}: num_channels={config['num_channels']}; this ViT takes "
                     f"RGB images")
  width = int(config.get("hidden_size", 768))
  heads = int(config.get("num_attention_heads", 12))
  if width % heads:
    raise ValueError(f"{source}: hidden_size {width} is not divisible by "
                     f"num_attention_heads {heads}")
  return (width, int(config.get("num_hidden_layers", 12)), heads,
          _size(config.get("patch_size", patch_size), "patch_size", source))


# One layer's attention projections: ViT's and DINOv2's file names, CLIP's.
_VIT_ATTENTION = dict(query="attention.attention.query", key="attention.attention.key",
                      value="attention.attention.value", out="attention.output.dense")
_CLIP_ATTENTION = dict(query="self_attn.q_proj", key="self_attn.k_proj",
                       value="self_attn.v_proj", out="self_attn.out_proj")


def _attention_from_hf(sd, theirs, block, *, width, heads, qkv_bias, flat,
                       names=_VIT_ATTENTION):
  """One layer's attention, its projections ``{theirs}{names[...]}``. Without
  query/key/value biases (``qkv_bias=False``) ours are zero, which computes
  the same."""
  for name in ("query", "key", "value"):
    weight = sd.take(f"{theirs}{names[name]}.weight", (width, width))
    bias = (sd.take(f"{theirs}{names[name]}.bias", (width,)) if qkv_bias
            else np.zeros(width, weight.dtype))
    flat[f"{block}{OUR_ATTENTION}{name}/kernel"] = timm_format.heads_from_torch(weight, heads)
    flat[f"{block}{OUR_ATTENTION}{name}/bias"] = timm_format.heads_from_torch(bias, heads)
  flat[f"{block}{OUR_ATTENTION}out/kernel"] = timm_format.out_from_torch(
      sd.take(f"{theirs}{names['out']}.weight", (width, width)), heads)
  flat[f"{block}{OUR_ATTENTION}out/bias"] = sd.take(f"{theirs}{names['out']}.bias", (width,))


def from_hf(state_dict, config, *, source):
  """Our ViT parameters (numpy) from a transformers ViT, DeiT, DINOv2 or CLIP
  state dict and its config.

  The config gives width, depth, heads, MLP size and patch size, which the
  tensors must have; the position embeddings give the grid.
  """
  if config.get("model_type") not in MODEL_TYPES:
    raise ValueError(f"{source}: model_type {config.get('model_type')!r}; this ViT "
                     f"reads Hugging Face's model_type {', '.join(map(repr, MODEL_TYPES))}")
  if config["model_type"] in DINOV2_MODEL_TYPES:
    return _from_dinov2(state_dict, config, source=source)
  if config["model_type"] in CLIP_MODEL_TYPES:
    return _from_clip(state_dict, _vision_config(config), source=source)
  width, depth, heads, patch = _shape(config, source, patch_size=16)
  mlp_dim = int(config.get("intermediate_size", 3072))
  distilled = config["model_type"] == DEIT_MODEL_TYPE
  prefix = f"{config['model_type']}."

  state_dict = _file_names(state_dict, prefix)
  # Masked-image modelling's mask token takes no part in classification.
  state_dict.pop(f"{prefix}embeddings.mask_token", None)
  if distilled:  # DeiTForImageClassification's class-token classifier: see above
    state_dict = {n: v for n, v in state_dict.items() if not n.startswith("classifier.")}
  has_classifier = "classifier.weight" in state_dict
  if has_classifier or distilled:  # no classifier of theirs runs the pooler
    state_dict = {n: v for n, v in state_dict.items() if not n.startswith(f"{prefix}pooler.")}
  sd = TorchTensors(state_dict, source, f"Hugging Face {'DeiT' if distilled else 'ViT'} "
                                        f"of hidden_size {width}, {depth} layers, "
                                        f"intermediate_size {mlp_dim}")
  tokens = sd.shape(f"{prefix}embeddings.position_embeddings")[1]
  flat = {"cls": sd.take(f"{prefix}embeddings.cls_token", (1, 1, width)),
          npz.POSEMB: sd.take(f"{prefix}embeddings.position_embeddings", (1, tokens, width)),
          "embedding/kernel": timm_format.conv_from_torch(sd.take(
              f"{prefix}embeddings.patch_embeddings.projection.weight",
              (width, 3, patch, patch))),
          "embedding/bias": sd.take(f"{prefix}embeddings.patch_embeddings.projection.bias",
                                    (width,))}
  if distilled:
    flat["dist"] = sd.take(f"{prefix}embeddings.distillation_token", (1, 1, width))
  for i in range(depth):
    block, theirs = OUR_BLOCK.format(i), prefix + _LAYER.format(i)
    norms, dense_layers = _VIT_BLOCK
    for our_norm, their_norm in zip(("LayerNorm_0", "LayerNorm_2"), norms):
      timm_format.norm_from_torch(sd, theirs + their_norm, block + our_norm, width, flat)
    _attention_from_hf(sd, theirs, block, width=width, heads=heads,
                       qkv_bias=config.get("qkv_bias", True), flat=flat)
    for our_dense, their_dense, (n_out, n_in) in zip(
        ("Dense_0", "Dense_1"), dense_layers, ((mlp_dim, width), (width, mlp_dim))):
      flat[f"{block}MlpBlock_3/{our_dense}/kernel"] = sd.take(
          f"{theirs}{their_dense}.weight", (n_out, n_in)).T
      flat[f"{block}MlpBlock_3/{our_dense}/bias"] = sd.take(f"{theirs}{their_dense}.bias",
                                                           (n_out,))
  timm_format.norm_from_torch(sd, f"{prefix}layernorm", "Transformer/encoder_norm", width,
                              flat)
  if distilled:
    for head, classifier in _DEIT_HEADS:
      if f"{classifier}.weight" in state_dict:
        num_classes = sd.shape(f"{classifier}.weight")[0]
        flat[f"{head}/kernel"] = sd.take(f"{classifier}.weight", (num_classes, width)).T
        flat[f"{head}/bias"] = sd.take(f"{classifier}.bias", (num_classes,))
  if "vit.pooler.dense.weight" in state_dict:
    if config.get("pooler_act", "tanh") != "tanh":
      raise ValueError(f"{source}: pooler_act={config['pooler_act']!r}; this ViT's "
                       f"pre_logits layer is Dense + tanh")
    size = sd.shape("vit.pooler.dense.weight")[0]
    flat["pre_logits/kernel"] = sd.take("vit.pooler.dense.weight", (size, width)).T
    flat["pre_logits/bias"] = sd.take("vit.pooler.dense.bias", (size,))
  if has_classifier:
    features = flat["pre_logits/kernel"].shape[1] if "pre_logits/kernel" in flat else width
    num_classes = sd.shape("classifier.weight")[0]
    flat["head/kernel"] = sd.take("classifier.weight", (num_classes, features)).T
    flat["head/bias"] = sd.take("classifier.bias", (num_classes,))
  sd.check_all_taken()
  return npz.unflatten({name: np.ascontiguousarray(value) for name, value in flat.items()})


def _from_dinov2(state_dict, config, *, source):
  """Our parameters from a DINOv2 state dict (Dinov2Model or
  Dinov2WithRegistersModel, the backbone, or the classification model's)."""
  if config.get("use_swiglu_ffn"):
    raise ValueError(f"{source}: use_swiglu_ffn=True (DINOv2's giant model) is a SwiGLU "
                     f"MLP; this ViT's MLP is Dense, GELU, Dense")
  width, depth, heads, patch = _shape(config, source,
                                      patch_size=_DINOV2_PATCH_SIZES[config["model_type"]])
  # The classification models' backbone is `dinov2.`, or `dinov2_with_registers.`.
  state_dict = {_DINOV2_PREFIX.sub("", name): value for name, value
                in _renamed(state_dict, _V5_ATTENTION_RENAMES).items()}
  # Masked-image modelling's mask token takes no part in a forward pass.
  state_dict.pop("embeddings.mask_token", None)
  sd = TorchTensors(state_dict, source, f"DINOv2 of hidden_size {width}, {depth} layers")
  tokens = sd.shape("embeddings.position_embeddings")[1]
  flat = {"cls": sd.take("embeddings.cls_token", (1, 1, width)),
          npz.POSEMB: sd.take("embeddings.position_embeddings", (1, tokens, width)),
          "embedding/kernel": timm_format.conv_from_torch(sd.take(
              "embeddings.patch_embeddings.projection.weight", (width, 3, patch, patch))),
          "embedding/bias": sd.take("embeddings.patch_embeddings.projection.bias", (width,))}
  if "embeddings.register_tokens" in state_dict:  # added after the positions, as ours
    count = sd.shape("embeddings.register_tokens")[1]
    flat["registers"] = sd.take("embeddings.register_tokens", (1, count, width))
  for i in range(depth):
    block, theirs = OUR_BLOCK.format(i), _LAYER.format(i)
    for our_norm, their_norm in zip(("LayerNorm_0", "LayerNorm_2"), _DINOV2_BLOCK[0]):
      timm_format.norm_from_torch(sd, theirs + their_norm, block + our_norm, width, flat)
    _attention_from_hf(sd, theirs, block, width=width, heads=heads,
                       qkv_bias=config.get("qkv_bias", True), flat=flat)
    # mlp.fc1 and mlp.fc2 (_DINOV2_BLOCK), as timm names them.
    timm_format.mlp_from_torch(sd, theirs + "mlp", block + "MlpBlock_3", width, flat)
    for our_scale, their_scale in _DINOV2_LAYER_SCALES:
      flat[f"{block}{our_scale}/scale"] = sd.take(f"{theirs}{their_scale}.lambda1", (width,))
  timm_format.norm_from_torch(sd, "layernorm", "Transformer/encoder_norm", width, flat)
  if "classifier.weight" in state_dict:
    _dinov2_head(sd, width, flat)
  sd.check_all_taken()
  return npz.unflatten({name: np.ascontiguousarray(value) for name, value in flat.items()})


def _dinov2_head(sd, width, flat):
  """Dinov2ForImageClassification's classifier reads the class token beside
  the patches' mean. Where the mean's half is zero, as `to_hf` writes ours,
  it is our head; otherwise ours cannot compute it, and it is left out (a
  fine-tuning starts a fresh head)."""
  num_classes = sd.shape("classifier.weight")[0]
  weight = sd.take("classifier.weight", (num_classes, 2 * width))
  bias = sd.take("classifier.bias", (num_classes,))
  if weight[:, width:].any():
    logging.info("%s: Dinov2ForImageClassification's classifier reads the patches' mean, "
                 "which this ViT's head does not; it is left out", sd.source)
  else:
    flat["head/kernel"], flat["head/bias"] = weight[:, :width].T, bias


def _from_clip(state_dict, config, *, source):
  """Our parameters from CLIP's image tower (CLIPModel's ``vision_model``, or a
  CLIPVisionModel's file or live state dict, ``config`` its vision config)."""
  width, depth, heads, patch = _shape(config, source, patch_size=32)
  mlp_dim = int(config.get("intermediate_size", 3072))
  prefix = "vision_model."
  if any(name.startswith(prefix) for name in state_dict):  # the text tower goes
    state_dict = {name.removeprefix(prefix): value for name, value in state_dict.items()
                  if name.startswith(prefix)}
  # transformers before 4.31 saved the positions' indices, a buffer, beside
  # the weights; they are 0, 1, ... as our model counts them.
  position_ids = state_dict.pop(_CLIP_POSITION_IDS, None)
  sd = TorchTensors(state_dict, source, f"CLIP image tower of hidden_size {width}, "
                                        f"{depth} layers, intermediate_size {mlp_dim}")
  tokens = sd.shape("embeddings.position_embedding.weight")[0]
  if position_ids is not None and not np.array_equal(np.ravel(position_ids), np.arange(tokens)):
    raise ValueError(f"{source}: the image tower's {_CLIP_POSITION_IDS} is not 0, 1, ..., "
                     f"{tokens - 1}; this ViT reads the {tokens} position embeddings in order")
  kernel = timm_format.conv_from_torch(
      sd.take("embeddings.patch_embedding.weight", (width, 3, patch, patch)))
  flat = {"cls": sd.take("embeddings.class_embedding", (width,)).reshape(1, 1, width),
          npz.POSEMB: sd.take("embeddings.position_embedding.weight",
                              (tokens, width))[None],
          # CLIP's patch embedding has no bias: ours is then 0.
          "embedding/kernel": kernel, "embedding/bias": np.zeros(width, kernel.dtype)}
  timm_format.norm_from_torch(sd, "pre_layrnorm", timm_format.PRE_NORM, width, flat)
  for i in range(depth):
    block, theirs = OUR_BLOCK.format(i), f"encoder.layers.{i}."
    for our_norm, their_norm in (("LayerNorm_0", "layer_norm1"), ("LayerNorm_2", "layer_norm2")):
      timm_format.norm_from_torch(sd, theirs + their_norm, block + our_norm, width, flat)
    _attention_from_hf(sd, theirs, block, width=width, heads=heads, qkv_bias=True, flat=flat,
                       names=_CLIP_ATTENTION)
    timm_format.mlp_from_torch(sd, theirs + "mlp", block + "MlpBlock_3", width, flat)
  # Applied to the class token alone, as ours to every token before reading it.
  timm_format.norm_from_torch(sd, "post_layernorm", "Transformer/encoder_norm", width, flat)
  sd.check_all_taken()
  return npz.unflatten({name: np.ascontiguousarray(value) for name, value in flat.items()})


def load(path):
  """Our parameters from a Hugging Face ViT: its directory, or its weights file
  with config.json beside it."""
  if os.path.isdir(path):
    directory, weights = path, timm_format.weights_file(path)
  else:
    directory, weights = os.path.dirname(path), path
  config_path = os.path.join(directory, CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f"{path}: a Hugging Face ViT needs its {CONFIG_FILE} "
                            f"(sizes, heads, activation) beside the weights")
  return from_hf(timm_format.read_state_dict(weights), timm_format.read_json(config_path),
                 source=path)
