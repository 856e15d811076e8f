"""ViT parameters <-> timm's VisionTransformer, and the files that hold a state dict.

timm (PyTorch Image Models) keeps a ViT as a PyTorch state dict:
``patch_embed.proj``, ``cls_token``, ``pos_embed``, ``blocks.N.{norm1,
attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``, ``head``. Here a
state dict is a flat dict of numpy arrays by those names, so converting needs
neither torch nor timm: `to_timm` and `from_timm` are exact (transposes and
reshapes), and `save` writes timm's hub layout (``model.safetensors`` and
``config.json``) with numpy alone. Reading a pickled ``.pth``/``.bin`` needs
torch, and building timm's model needs timm; both are imported only then,
and their absence is a one-line `MissingPackageError`.

Where the two models differ, the conversion keeps our model's function and
refuses what it cannot keep, naming the tensor:

- pooling: our 'gap' classifier normalises every token (``encoder_norm``) and
  then averages, unless ``model.fc_norm``, which averages and then
  normalises, as timm's ``global_pool='avg'`` does by default (``fc_norm``).
  An export states which; so do a state dict's tensors (``fc_norm`` or
  ``norm``).
- position embeddings: ``pos_embed`` has a row for the class token unless
  timm's ``no_embed_class``, which adds none to it; ours always adds row 0,
  so such a checkpoint gets a zero row there, which sums to the same.
- GELU: ours is flax's tanh approximation unless ``model.gelu`` says
  ``exact`` or ``quick``; timm's default ``nn.GELU`` is the exact erf form,
  some of its SigLIP architectures register the tanh one and OpenAI CLIP's
  (``_quickgelu``) QuickGELU. An export states ours as ``act_layer``;
  `stated_function` reads a checkpoint's, which `pretrained.check_function`
  compares with the model's.
- qk-norm (``qk_norm``), attention pooling (``global_pool='map'``, timm's
  ``AttentionPoolLatent``), layer scale (``init_values``, ``ls1``/``ls2``,
  as DeiT-III and DINOv2), register tokens (``reg_tokens``) and a LayerNorm
  before the blocks (``pre_norm``, ``norm_pre``, as CLIP) are ours too, the
  same functions. CLIP's LayerNorms take eps 1e-5, ``model.layer_norm_epsilon``
  too.
- register tokens: ours have no position embedding; where timm gives them
  rows of ``pos_embed`` (unless ``no_embed_class``), those rows are the same
  for every image and fold into the tokens, and an export gives zero rows.
  Ours come after the patches, timm's before them: attention does not
  depend on the tokens' order, so the logits are the same.
- what our ViT does not have (distillation tokens, a LayerNorm after
  pooling; our ``pre_logits`` layer on the way out) is refused by name.

The helpers for state-dict files (`read_state_dict`, `write_safetensors`,
`weights_file`, `require`, `torch_logits`) serve `hf_format` too.
"""
import importlib
import json
import os
import re
import sys

import numpy as np
from absl import logging

from vit_jax.models import npz, vit

INSTALL_INTEROP = "pip install -e '.[interop]'"
CONFIG_FILE = "config.json"
# What a model directory holds its weights in, preferred first (timm's hub
# layout and Hugging Face's alike).
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")
STATE_DICT_SUFFIXES = (".safetensors", ".pth", ".bin", ".pt")

# Our names inside one block.
OUR_BLOCK = "Transformer/encoderblock_{}/"
OUR_ATTENTION = "MultiHeadDotProductAttention_1/"
OUR_BLOCK_RE = re.compile(r"^Transformer/encoderblock_(\d+)/")

# timm's registered names of the plain ViT shapes (our VARIANTS) and their
# sizes; an export whose shape is one of them takes that name.
_TIMM_SIZES = {"Ti": "tiny", "S": "small", "B": "base", "L": "large", "H": "huge"}
TIMM_NAMES = frozenset({
    "vit_tiny_patch16_224", "vit_tiny_patch16_384",
    "vit_small_patch8_224", "vit_small_patch16_224", "vit_small_patch16_384",
    "vit_small_patch32_224", "vit_small_patch32_384",
    "vit_base_patch8_224", "vit_base_patch16_224", "vit_base_patch16_384",
    "vit_base_patch32_224", "vit_base_patch32_384",
    "vit_large_patch14_224", "vit_large_patch16_224", "vit_large_patch16_384",
    "vit_large_patch32_224", "vit_large_patch32_384", "vit_huge_patch14_224"})
# Any shape can be built from this name with model_args overriding it.
_DEFAULT_ARCHITECTURE = "vit_base_patch16_224"
# DeiT's and DeiT-III's names give the heads of ViT's sizes too, but for
# those registered with others (timm's vision_transformer.py).
_ARCHITECTURE_RE = re.compile(r"^(?:vit|deit3?)_(tiny|small|base|large|huge)_")
_ARCHITECTURE_HEADS = {"vit_base_patch16_gap_224": 16}
# Registered with blocks that compute another function under a normal
# block's tensor names: timm's post-norm ResPostBlock, x + norm(attn(x)).
_POST_NORM_ARCHITECTURES = frozenset({"vit_base_patch16_rpn_224"})

# DeiT's distilled ViTs (timm's VisionTransformerDistilled): the shape and
# the rest in model_args, as for `_DEFAULT_ARCHITECTURE`.
_DISTILLED_ARCHITECTURE = "deit_base_distilled_patch16_224"
# Our LayerNorm before the blocks (pre_norm) -> timm's norm_pre.
PRE_NORM = "Transformer/pre_norm"
# Our layer scales of a block's two branches -> timm's.
_LAYER_SCALES = (("LayerScale_0", "ls1"), ("LayerScale_1", "ls2"))
# timm's init_values in an export: the value layer scale starts from, which
# the exported weights replace.
_EXPORT_INIT_VALUES = 1e-5
# Our attention pooling head (big_vision's MAPHead), timm's attn_pool.
OUR_MAP = "MAPHead_0/"
OUR_MAP_ATTENTION = OUR_MAP + "MultiHeadDotProductAttention_0/"
# Our per-head query and key LayerNorms (qk_norm) -> timm's, in attn.
_QK_NORMS = (("query_ln", "q_norm"), ("key_ln", "k_norm"))
# timm's act_layer names of our GELUs (vit.GELUS); with none given, timm
# computes the exact one.
TANH_GELU = "gelu_tanh"
ACT_LAYERS = {"tanh": TANH_GELU, "exact": "gelu", "quick": "quick_gelu"}
# Architectures whose registered act_layer is not timm's default, where a
# hub config.json names the architecture alone (timm 1.0.31's
# vision_transformer.py): the SigLIP ones registered with the tanh GELU
# (timm's other SigLIPs compute the exact one), and OpenAI CLIP's QuickGELU.
_TANH_GELU_ARCHITECTURES = frozenset(
    f"vit_{shape}_siglip_{pool}{size}" for pool in ("", "gap_")
    for shape, sizes in (("base_patch32", (256,)), ("large_patch16", (512,)),
                         ("so400m_patch16", (256, 384, 512)),
                         ("giantopt_patch16", (256, 384)))
    for size in sizes)
_QUICK_GELU_ARCHITECTURE_RE = re.compile(r"_quickgelu_")
# timm's LayerNorm epsilon, which no config.json states: its default, and its
# CLIP architectures' (norm_layer=partial(LayerNorm, eps=1e-5)). An export of
# a model with CLIP's builds on this CLIP architecture, its model_args stating
# the rest.
DEFAULT_EPSILON = 1e-6
CLIP_EPSILON = 1e-5
_CLIP_ARCHITECTURE_RE = re.compile(r"_clip_")
_CLIP_ARCHITECTURE = "vit_base_patch16_clip_224"


class MissingPackageError(ModuleNotFoundError, ValueError):
  """An optional package that a format needs is not installed.

  Also a ValueError, so a command line reports it as its one line
  (`vit_jax.runtime.cli`).
  """


# Packages whose import brings torch, and with it (through torch.fx) triton.
_TORCH_PACKAGES = ("torch", "timm", "transformers")


def _keep_triton_out_after_tensorflow():
  """Keeps triton from loading into a process that has TensorFlow.

  torch's Linux wheels bring triton, which torch.fx imports (timm and
  transformers import that); triton and TensorFlow each carry LLVM, and
  triton loaded after TensorFlow crashes the process (a segfault in
  libtriton). Our commands load TensorFlow first (the input pipeline,
  SavedModel export) and run torch on the CPU only, which needs no triton:
  torch, finding none, does without it.
  """
  if "tensorflow" in sys.modules and "triton" not in sys.modules:
    sys.modules["triton"] = None  # `import triton` raises ImportError
    logging.info("triton kept out of this process, which has TensorFlow")


def require(module, *, purpose, package=None, install=INSTALL_INTEROP):
  """``module``, imported; a `MissingPackageError` naming ``package`` if absent."""
  package = package or module.split(".")[0]
  if package in _TORCH_PACKAGES:
    _keep_triton_out_after_tensorflow()
  try:
    return importlib.import_module(module)
  except ImportError:
    raise MissingPackageError(f"{purpose} needs {package}, which is not installed: "
                              f"{install}", name=package) from None


# ---------------------------------------------------------------------------
# State-dict files
# ---------------------------------------------------------------------------


def read_state_dict(path):
  """The tensors of a PyTorch state-dict file, as numpy arrays by name.

  ``.safetensors`` is read with numpy alone (bfloat16 through ml_dtypes,
  which jax brings). A pickled ``.pth``/``.bin`` needs torch and is loaded
  with ``weights_only=True``, which refuses arbitrary Python objects; a
  training checkpoint's ``state_dict`` (or ``model``) entry is taken, and
  DistributedDataParallel's ``module.`` prefix dropped.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"checkpoint file {path} does not exist")
  if path.endswith(".safetensors"):
    import ml_dtypes  # noqa: F401  (gives numpy the bfloat16 that safetensors names)
    safetensors = require("safetensors.numpy", purpose=f"reading {path}",
                          install="pip install -e .")
    try:
      tensors = safetensors.load_file(path)
    except Exception as e:  # safetensors' own error type, OSError, ...
      raise ValueError(f"{path} is not a readable .safetensors file: "
                       f"{str(e).splitlines()[0]}") from None
  else:
    torch = require("torch", purpose=f"reading {path}")
    try:
      loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle's, zipfile's and torch's errors alike
      raise ValueError(f"{path} is no PyTorch file that torch reads without running "
                       f"code (weights_only): {str(e).splitlines()[0]}") from None
    for key in ("state_dict", "model"):
      if isinstance(loaded, dict) and isinstance(loaded.get(key), dict):
        loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(
        isinstance(t, torch.Tensor) for t in loaded.values()):
      raise ValueError(f"{path} holds no state dict (a dict of tensors by name)")
    tensors = {name: (t.float() if t.dtype == torch.bfloat16 else t).numpy()
               for name, t in loaded.items()}
  return {name.removeprefix("module."): value for name, value in tensors.items()}


def write_safetensors(tensors, path):
  """Writes numpy ``tensors`` to ``path`` as a PyTorch-flavoured .safetensors.

  ``format: pt`` in the metadata is what transformers checks before loading.
  """
  safetensors = require("safetensors.numpy", purpose=f"writing {path}",
                        install="pip install -e .")
  safetensors.save_file({name: np.ascontiguousarray(value)
                         for name, value in tensors.items()},
                        path, metadata={"format": "pt"})


def weights_file(directory):
  """The weights file of a model directory (timm hub or Hugging Face layout)."""
  for name in WEIGHTS_FILES:
    if os.path.isfile(os.path.join(directory, name)):
      return os.path.join(directory, name)
  raise FileNotFoundError(f"{directory} holds no weights: neither "
                          f"{' nor '.join(WEIGHTS_FILES)}")


def read_json(path):
  with open(path) as f:
    return json.load(f)


def torch_logits(module, images):
  """A torch classifier's logits of NHWC float32 ``images``, as numpy."""
  torch = require("torch", purpose="running a PyTorch model")
  with torch.no_grad():
    out = module(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))))
  return getattr(out, "logits", out).numpy()


# ---------------------------------------------------------------------------
# Both directions of one tensor: torch Linear weights are (out, in)
# ---------------------------------------------------------------------------


def heads_to_torch(kernel):
  """Our query/key/value kernel (D, H, Dh) or bias (H, Dh) -> torch (H*Dh, D) or (H*Dh,)."""
  return kernel.reshape(kernel.shape[0], -1).T if kernel.ndim == 3 else kernel.reshape(-1)


def heads_from_torch(weight, heads):
  """torch (H*Dh, D) or (H*Dh,) -> our (D, H, Dh) or (H, Dh)."""
  if weight.ndim == 2:
    return weight.T.reshape(weight.shape[1], heads, -1)
  return weight.reshape(heads, -1)


def out_to_torch(kernel):
  """Our attention output kernel (H, Dh, D) -> torch (D, H*Dh)."""
  return kernel.reshape(-1, kernel.shape[-1]).T


def out_from_torch(weight, heads):
  """torch (D, H*Dh) -> our (H, Dh, D)."""
  return weight.T.reshape(heads, -1, weight.shape[0])


def conv_to_torch(kernel):
  """Our patch embedding (P, P, C, D), HWIO -> torch (D, C, P, P), OIHW."""
  return kernel.transpose(3, 2, 0, 1)


def conv_from_torch(weight):
  return weight.transpose(2, 3, 1, 0)


class OurParams:
  """Our flat parameters, taken one by one; what is left is named.

  ``to_timm`` and `hf_format.to_hf` take every parameter they convert, so a
  parameter of another model (a hybrid's ResNet stem, a BiT) is named rather
  than dropped.
  """

  def __init__(self, params, target):
    self.flat = npz.npz_arrays(params)  # float32 where the run kept bfloat16
    self.left = dict(self.flat)
    self.target = target
    if "embedding/kernel" not in self.flat or self.flat["embedding/kernel"].ndim != 4:
      raise ValueError(f"these parameters are no plain ViT's (no patch embedding "
                       f"'embedding/kernel'), so there is no {target} of them")
    self.patch, _, _, self.width = self.flat["embedding/kernel"].shape
    blocks = {int(m[1]) for m in map(OUR_BLOCK_RE.match, self.flat) if m}
    self.depth = max(blocks) + 1 if blocks else 0
    query = self.flat.get(OUR_BLOCK.format(0) + OUR_ATTENTION + "query/kernel")
    self.heads = query.shape[1] if query is not None else None
    mlp = self.flat.get(OUR_BLOCK.format(0) + "MlpBlock_3/Dense_0/kernel")
    self.mlp_dim = mlp.shape[1] if mlp is not None else None
    self.has_cls = "cls" in self.flat
    self.has_dist = "dist" in self.flat
    self.has_map = OUR_MAP + "probe" in self.flat
    self.qk_norm = OUR_BLOCK.format(0) + OUR_ATTENTION + "query_ln/scale" in self.flat
    self.layer_scale = OUR_BLOCK.format(0) + "LayerScale_0/scale" in self.flat
    self.pre_norm = PRE_NORM + "/scale" in self.flat
    self.fc_norm = "fc_norm/scale" in self.flat
    self.num_registers = self.flat["registers"].shape[1] if "registers" in self.flat else 0
    self.num_classes = (self.flat["head/kernel"].shape[1] if "head/kernel" in self.flat
                        else 0)
    block = OUR_BLOCK.format(0)
    for lacking, setting in (("LayerNorm_2/scale", "parallel blocks "
                                                   "(model.parallel_block=True)"),
                             ("LayerNorm_0/bias", "no biases (model.use_bias=False)")):
      if self.depth and block + lacking not in self.flat:
        raise ValueError(f"these parameters are of a ViT with {setting}, as "
                         f"ViT-22B's, which {target} does not have")

  def take(self, name):
    if name not in self.left:
      raise ValueError(f"parameter {name} is missing, which {self.target} needs")
    return self.left.pop(name)

  def refuse(self, name, why):
    if name in self.flat:
      raise ValueError(f"parameter {name}: {why}")

  def check_all_taken(self):
    if self.left:
      raise ValueError(f"parameter {sorted(self.left)[0]} has no counterpart in "
                       f"{self.target} ({len(self.left)} such)")


class TorchTensors:
  """A state dict, taken tensor by tensor with the shape each must have.

  Errors name the file and the tensor: a missing one, one of another shape,
  and, once converted, any left over.
  """

  def __init__(self, state_dict, source, model):
    self.tensors = state_dict
    self.left = dict(state_dict)
    self.source = source
    self.model = model

  def _missing(self, name):
    return ValueError(f"{self.source}: tensor {name} is missing, which a {self.model} has")

  def shape(self, name):
    if name not in self.tensors:
      raise self._missing(name)
    return self.tensors[name].shape

  def take(self, name, shape):
    if name not in self.left:
      raise self._missing(name)
    value = self.left.pop(name)
    if tuple(value.shape) != tuple(shape):
      raise ValueError(f"{self.source}: tensor {name} has shape {tuple(value.shape)}, "
                       f"but {tuple(shape)} in a {self.model}")
    return value

  def check_all_taken(self):
    if self.left:
      raise ValueError(f"{self.source}: tensor {sorted(self.left)[0]} has no counterpart "
                       f"in this ViT ({len(self.left)} such)")


def _norm_to_torch(ours, our_name, their_name, sd):
  sd[f"{their_name}.weight"] = ours.take(f"{our_name}/scale")
  sd[f"{their_name}.bias"] = ours.take(f"{our_name}/bias")


def _mlp_to_torch(ours, our_mlp, their_mlp, sd):
  for our_dense, their_fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
    sd[f"{their_mlp}.{their_fc}.weight"] = ours.take(f"{our_mlp}/{our_dense}/kernel").T
    sd[f"{their_mlp}.{their_fc}.bias"] = ours.take(f"{our_mlp}/{our_dense}/bias")


def norm_from_torch(sd, their_name, our_name, size, flat):
  """A torch LayerNorm's weight and bias (timm's and DINOv2's) into ``flat``."""
  flat[f"{our_name}/scale"] = sd.take(f"{their_name}.weight", (size,))
  flat[f"{our_name}/bias"] = sd.take(f"{their_name}.bias", (size,))


def mlp_from_torch(sd, their_mlp, our_mlp, width, flat):
  """An MLP of torch Linears ``fc1`` and ``fc2`` (timm's and DINOv2's) into ``flat``."""
  mlp_dim = sd.shape(f"{their_mlp}.fc1.weight")[0]
  for our_dense, their_fc, (n_out, n_in) in (("Dense_0", "fc1", (mlp_dim, width)),
                                             ("Dense_1", "fc2", (width, mlp_dim))):
    flat[f"{our_mlp}/{our_dense}/kernel"] = sd.take(
        f"{their_mlp}.{their_fc}.weight", (n_out, n_in)).T
    flat[f"{our_mlp}/{our_dense}/bias"] = sd.take(f"{their_mlp}.{their_fc}.bias", (n_out,))


def _block_count(names, pattern):
  blocks = {int(m[1]) for m in map(re.compile(pattern).match, names) if m}
  return max(blocks) + 1 if blocks else 0


def _is_square(n):
  return n >= 0 and int(round(np.sqrt(n))) ** 2 == n


# ---------------------------------------------------------------------------
# Ours -> timm
# ---------------------------------------------------------------------------


def exported_params(params):
  """``params`` as a timm file of them reads back: with ``pre_norm`` timm's
  patch embedding has no bias, so ours joins the patches' position rows
  (the same for every image) and reads back as 0; otherwise unchanged."""
  flat = npz.npz_arrays(params)
  if PRE_NORM + "/scale" not in flat or not flat.get("embedding/bias", np.zeros(1)).any():
    return params
  bias = flat["embedding/bias"]
  prefix = int("cls" in flat) + int("dist" in flat)
  posemb = flat[npz.POSEMB]
  flat[npz.POSEMB] = np.concatenate([posemb[:, :prefix], posemb[:, prefix:] + bias], axis=1)
  flat["embedding/bias"] = np.zeros_like(bias)
  return npz.unflatten(flat)


def to_timm(params):
  """timm's VisionTransformer state dict (numpy, by torch name) of our ``params``.

  A ``pre_logits`` layer is refused: timm's ViT has no representation layer.
  """
  ours = OurParams(exported_params(params), "timm's VisionTransformer")
  if ours.has_dist and ours.num_registers:
    raise ValueError("parameters dist and registers: timm's distilled DeiT has no "
                     "register tokens (config.model.num_registers)")
  ours.refuse("pre_logits/kernel",
              "timm's VisionTransformer has no representation layer (Dense + tanh "
              "before the head); fine-tune with model.representation_size=None to "
              "export to timm")
  sd = {"patch_embed.proj.weight": conv_to_torch(ours.take("embedding/kernel"))}
  embedding_bias = ours.take("embedding/bias")
  if not ours.pre_norm:  # with it, 0 (`exported_params`), and timm has none
    sd["patch_embed.proj.bias"] = embedding_bias
  prefix = int(ours.has_cls) + int(ours.has_dist)
  if ours.has_cls:
    sd["cls_token"] = ours.take("cls")
  if ours.has_dist:
    sd["dist_token"] = ours.take("dist")
  posemb = ours.take(npz.POSEMB)
  if ours.num_registers:  # zero rows: ours have no position
    sd["reg_token"] = ours.take("registers")
    posemb = np.concatenate([posemb[:, :prefix], np.zeros_like(sd["reg_token"]),
                             posemb[:, prefix:]], axis=1)
  sd["pos_embed"] = posemb
  if ours.pre_norm:
    _norm_to_torch(ours, PRE_NORM, "norm_pre", sd)
  for i in range(ours.depth):
    block, theirs = OUR_BLOCK.format(i), f"blocks.{i}."
    for our_norm, their_norm in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
      _norm_to_torch(ours, block + our_norm, theirs + their_norm, sd)
    if ours.qk_norm:
      for our_norm, their_norm in _QK_NORMS:
        _norm_to_torch(ours, block + OUR_ATTENTION + our_norm, f"{theirs}attn.{their_norm}", sd)
    for part in ("kernel", "bias"):
      sd[f"{theirs}attn.qkv.{'weight' if part == 'kernel' else 'bias'}"] = np.concatenate(
          [heads_to_torch(ours.take(f"{block}{OUR_ATTENTION}{name}/{part}"))
           for name in ("query", "key", "value")])
    sd[f"{theirs}attn.proj.weight"] = out_to_torch(ours.take(f"{block}{OUR_ATTENTION}out/kernel"))
    sd[f"{theirs}attn.proj.bias"] = ours.take(f"{block}{OUR_ATTENTION}out/bias")
    _mlp_to_torch(ours, block + "MlpBlock_3", theirs + "mlp", sd)
    if ours.layer_scale:
      for our_scale, their_scale in _LAYER_SCALES:
        sd[f"{theirs}{their_scale}.gamma"] = ours.take(f"{block}{our_scale}/scale")
  if ours.fc_norm:  # after the 'gap' mean, and none on every token
    _norm_to_torch(ours, "fc_norm", "fc_norm", sd)
  else:
    _norm_to_torch(ours, "Transformer/encoder_norm", "norm", sd)
  if ours.has_map:
    sd["attn_pool.latent"] = ours.take(OUR_MAP + "probe")
    take = lambda name: ours.take(OUR_MAP_ATTENTION + name)
    sd["attn_pool.q.weight"] = heads_to_torch(take("query/kernel"))
    sd["attn_pool.q.bias"] = heads_to_torch(take("query/bias"))
    sd["attn_pool.kv.weight"] = np.concatenate(
        [heads_to_torch(take(f"{name}/kernel")) for name in ("key", "value")])
    sd["attn_pool.kv.bias"] = np.concatenate(
        [heads_to_torch(take(f"{name}/bias")) for name in ("key", "value")])
    sd["attn_pool.proj.weight"] = out_to_torch(take("out/kernel"))
    sd["attn_pool.proj.bias"] = take("out/bias")
    _norm_to_torch(ours, OUR_MAP + "LayerNorm_0", "attn_pool.norm", sd)
    _mlp_to_torch(ours, OUR_MAP + "MlpBlock_0", "attn_pool.mlp", sd)
  for head in ("head", "head_dist"):
    if f"{head}/kernel" in ours.flat:
      sd[f"{head}.weight"] = ours.take(f"{head}/kernel").T
      sd[f"{head}.bias"] = ours.take(f"{head}/bias")
  ours.check_all_taken()
  return {name: np.ascontiguousarray(value) for name, value in sd.items()}


def model_args(params, *, image_size, gelu="tanh"):
  """timm's VisionTransformer arguments that build the model of ``params``,
  whose MLPs compute ``gelu`` (one of vit.GELUS)."""
  ours = OurParams(params, "timm's VisionTransformer")
  mlp_ratio = ours.mlp_dim / ours.width
  if int(ours.width * mlp_ratio) != ours.mlp_dim:  # how timm sizes its MLP
    raise ValueError(f"an MLP of {ours.mlp_dim} units is no mlp_ratio timm can "
                     f"state for width {ours.width}")
  return dict(
      img_size=image_size, patch_size=ours.patch, embed_dim=ours.width,
      depth=ours.depth, num_heads=ours.heads, mlp_ratio=mlp_ratio,
      class_token=ours.has_cls,
      global_pool="map" if ours.has_map else "token" if ours.has_cls else "avg",
      qk_norm=ours.qk_norm, fc_norm=ours.fc_norm,
      act_layer=ACT_LAYERS[gelu], pre_norm=ours.pre_norm,
      init_values=_EXPORT_INIT_VALUES if ours.layer_scale else None,
      reg_tokens=ours.num_registers, num_classes=ours.num_classes)


def architecture(args, *, layer_norm_epsilon=DEFAULT_EPSILON, distilled=False):
  """timm's registered name of the shape in ``args``, or the default to override;
  for CLIP's LayerNorm epsilon, a CLIP architecture to override; for DeiT's
  distillation token, a distilled DeiT to override."""
  if distilled and layer_norm_epsilon == DEFAULT_EPSILON:
    return _DISTILLED_ARCHITECTURE
  if layer_norm_epsilon == CLIP_EPSILON and not distilled:
    return _CLIP_ARCHITECTURE
  if layer_norm_epsilon != DEFAULT_EPSILON:
    raise ValueError(f"layer_norm_epsilon={layer_norm_epsilon}: a timm config.json builds "
                     f"LayerNorms of epsilon {DEFAULT_EPSILON} or, through a CLIP "
                     f"architecture{' (no distilled one)' if distilled else ''}, "
                     f"{CLIP_EPSILON} (config.model.layer_norm_epsilon)")
  shape = (args["embed_dim"], args["depth"], int(args["embed_dim"] * args["mlp_ratio"]),
           args["num_heads"])
  for variant, size in _TIMM_SIZES.items():
    name = f"vit_{size}_patch{args['patch_size']}_{args['img_size']}"
    if vit.VARIANTS[variant] == shape and name in TIMM_NAMES:
      return name
  return _DEFAULT_ARCHITECTURE


def per_channel(value):
  """``mean`` or ``std`` as the libraries' configs write them: one per RGB channel."""
  values = [float(v) for v in np.ravel(value)]
  return values * 3 if len(values) == 1 else values


def hub_config(params, *, image_size, mean, std, class_names=None, gelu="tanh",
               layer_norm_epsilon=DEFAULT_EPSILON, eval_resize=None):
  """The config.json of timm's hub layout for ``params``.

  ``model_args`` states every argument that differs from a plain timm ViT
  (the GELU, the pooling, no fc_norm), even where ``architecture``
  names the shape, so the architecture's defaults never decide.
  ``eval_resize`` (`vit_jax.data.preprocess.eval_resize.EvalResize`) is
  stated as timm's eval transform (crop_pct, crop_mode, interpolation);
  without one, a resize of the shorter side to ``image_size`` and a
  central crop.
  """
  args = model_args(params, image_size=image_size, gelu=gelu)
  name = architecture(args, layer_norm_epsilon=layer_norm_epsilon,
                      distilled="dist" in npz.flatten(params))
  config = {
      "architecture": name,
      "num_classes": args["num_classes"],
      "num_features": args["embed_dim"],
      "global_pool": args["global_pool"],
      "model_args": args,
      "pretrained_cfg": {
          "architecture": name,
          "input_size": [3, image_size, image_size],
          "fixed_input_size": True,
          **_eval_transform(eval_resize),
          "mean": per_channel(mean),
          "std": per_channel(std),
          "num_classes": args["num_classes"],
          "first_conv": "patch_embed.proj",
          "classifier": "head",
          "custom_load": False,
      },
  }
  if class_names:
    config["label_names"] = list(class_names)
  return config


# timm's interpolation (PIL's filters) of TensorFlow's resize methods; TF's
# area averaging is PIL's box filter. The others are stated as bilinear.
_TIMM_INTERPOLATIONS = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest",
                        "area": "box", "lanczos3": "lanczos"}


def _eval_transform(eval_resize):
  """timm's pretrained_cfg fields of its eval transform for ``eval_resize``."""
  if eval_resize is None:
    return {"interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center"}
  return {"interpolation": _TIMM_INTERPOLATIONS.get(eval_resize.method, "bilinear"),
          "crop_pct": eval_resize.crop_pct,
          # timm's 'squash' resizes both sides, as `resize`; 'center' the shorter.
          "crop_mode": "squash" if eval_resize.mode == "squash" else "center"}


def save(params, out, *, image_size, mean, std, class_names=None, gelu="tanh",
         layer_norm_epsilon=DEFAULT_EPSILON, eval_resize=None):
  """Writes ``out``/model.safetensors and ``out``/config.json in timm's hub layout.

  ``mean`` and ``std`` (a number, or one per channel) are timm's
  normalisation of [0, 1] pixels that gives the model's input range (0.5,
  0.5 for [-1, 1]). Returns the config.
  """
  state_dict = to_timm(params)  # refusals before anything is written
  config = hub_config(params, image_size=image_size, mean=mean, std=std,
                      class_names=class_names, gelu=gelu,
                      layer_norm_epsilon=layer_norm_epsilon, eval_resize=eval_resize)
  os.makedirs(out, exist_ok=True)
  write_safetensors(state_dict, os.path.join(out, WEIGHTS_FILES[0]))
  with open(os.path.join(out, CONFIG_FILE), "w") as f:
    json.dump(config, f, indent=2)
  return config


def timm_model(directory):
  """timm's model of a `save`d directory, built as docs/checkpoints.md says (needs timm).

  The head is kept only where the overlay's ``num_classes`` matches the
  model's; timm otherwise drops it and starts that layer afresh.
  """
  timm = require("timm", purpose="building a timm model")
  config = read_json(os.path.join(directory, CONFIG_FILE))
  model = timm.create_model(
      config["architecture"], pretrained=True,
      pretrained_cfg_overlay=dict(file=os.path.join(directory, WEIGHTS_FILES[0]),
                                  num_classes=config["num_classes"]),
      **config["model_args"])
  return model.eval()


# ---------------------------------------------------------------------------
# timm -> ours
# ---------------------------------------------------------------------------


def _timm_args(config):
  """The model arguments a timm config.json states (hub layout or a bare pretrained_cfg)."""
  args = dict(config.get("model_args") or {})
  pretrained_cfg = config.get("pretrained_cfg") or {}
  name = config.get("architecture") or pretrained_cfg.get("architecture")
  if name:
    args.setdefault("architecture", name)
  if config.get("global_pool") is not None:
    args.setdefault("global_pool", config["global_pool"])
  if "act_layer" not in args and name in _TANH_GELU_ARCHITECTURES:
    args["act_layer"] = TANH_GELU
  if "act_layer" not in args and _QUICK_GELU_ARCHITECTURE_RE.search(name or ""):
    args["act_layer"] = ACT_LAYERS["quick"]
  return args


def gelu_of(args, *, source):
  """Which of vit.GELUS timm's model arguments compute; another activation is refused."""
  act = args.get("act_layer") or ACT_LAYERS["exact"]
  forms = {name: form for form, name in ACT_LAYERS.items()}
  if act not in forms:
    raise ValueError(f"{source}: act_layer={act!r}; this ViT computes "
                     f"{', '.join(map(repr, forms))}")
  return forms[act]


def stated_function(config, *, source):
  """What a timm config.json (or, empty, timm's defaults) builds, where our
  model has a setting for it: {config.model field: value}."""
  args = _timm_args(config)
  clip = _CLIP_ARCHITECTURE_RE.search(args.get("architecture") or "")
  return {"gelu": gelu_of(args, source=source),
          "layer_norm_epsilon": CLIP_EPSILON if clip else DEFAULT_EPSILON}


def _heads_of(args, width, num_heads, source):
  """Heads, which no tensor's shape tells: config.json, the name, or the caller."""
  if args.get("num_heads"):
    return int(args["num_heads"])
  match = _ARCHITECTURE_RE.match(args.get("architecture") or "")
  if match:
    # timm builds the name's heads unless model_args state others, also where
    # they change the width (vit_base_patch16_224 with embed_dim=384: 12); a
    # name alone describes only a checkpoint of its width.
    variant = {size: v for v, size in _TIMM_SIZES.items()}[match[1]]
    if "embed_dim" in args or vit.VARIANTS[variant][0] == width:
      return _ARCHITECTURE_HEADS.get(args["architecture"], vit.VARIANTS[variant][3])
  if num_heads:
    logging.warning("%s: %d attention heads, as the caller says (no config.json "
                    "states them)", source, num_heads)
    return int(num_heads)
  raise ValueError(f"{source}: the number of attention heads (num_heads) is not "
                   f"in the tensors' shapes; put timm's config.json (model_args, or "
                   f"an architecture name such as vit_base_patch16_224) beside the file")


def from_timm(state_dict, *, source, config=None, num_heads=None):
  """Our ViT parameters (numpy) from a timm VisionTransformer state dict.

  ``config`` is timm's config.json, where there is one: it gives the heads,
  the pooling, the activation and ``no_embed_class``; without it, the heads
  come from ``num_heads`` and the rest from the tensors (a class token reads
  the class token; without one, the tokens are averaged). ``source`` names
  the checkpoint in errors.
  """
  args = _timm_args(config or {})
  names = sorted(state_dict)
  if any(n.startswith(("vit.embeddings.", "embeddings.patch_embeddings.")) for n in names):
    raise ValueError(f"{source} holds Hugging Face transformers names "
                     f"(vit.embeddings...), not timm's: give the model directory "
                     f"with its config.json")
  gelu_of(args, source=source)  # refuses another activation
  if args.get("architecture") in _POST_NORM_ARCHITECTURES:
    raise ValueError(f"{source}: {args['architecture']} is timm's post-norm ViT "
                     f"(block_fn=ResPostBlock, x + norm(attn(x))); this ViT's blocks "
                     f"normalise the input of attention and MLP")

  sd = TorchTensors(state_dict, source, "timm ViT")
  width, channels, patch, patch_w = sd.shape("patch_embed.proj.weight")
  if channels != 3 or patch != patch_w:
    raise ValueError(f"{source}: tensor patch_embed.proj.weight has shape "
                     f"{sd.shape('patch_embed.proj.weight')}; this ViT takes square "
                     f"patches of RGB images")
  depth = _block_count(names, r"^blocks\.(\d+)\.")
  mlp_dim = sd.shape("blocks.0.mlp.fc1.weight")[0]
  heads = _heads_of(args, width, num_heads, source)
  if width % heads:
    raise ValueError(f"{source}: width {width} is not divisible by {heads} heads")
  has_cls = "cls_token" in state_dict
  has_dist = "dist_token" in state_dict  # DeiT's, after the class token
  num_registers = sd.shape("reg_token")[1] if "reg_token" in state_dict else 0
  has_map = "attn_pool.latent" in state_dict
  if has_map and has_cls:
    raise ValueError(f"{source}: a class token (cls_token) beside attention pooling "
                     f"(attn_pool); this ViT's 'map' classifier pools tokens without one")
  if "fc_norm.weight" in state_dict and (has_cls or has_map):
    raise ValueError(f"{source}: a LayerNorm after pooling (fc_norm) beside "
                     f"{'a class token' if has_cls else 'attention pooling'}; this ViT "
                     f"normalises after pooling only the tokens' mean ('gap')")
  pool = args.get("global_pool")
  ours_pool = "map" if has_map else "token" if has_cls else "avg"
  if args.get("pool_include_prefix") and num_registers and ours_pool != "token":
    raise ValueError(f"{source}: pool_include_prefix=True pools the register tokens "
                     f"too; this ViT pools the patch tokens only")
  if pool not in (None, ours_pool):
    raise ValueError(
        f"{source}: global_pool={pool!r} {'beside' if has_cls else 'without'} a class "
        f"token{' and with attn_pool tensors' if has_map else ''}; this ViT reads the "
        f"class token ('token'), averages all tokens of a model without one "
        f"('gap'), or pools them with attention ('map', attn_pool)")
  sd.model = f"timm ViT of width {width}, depth {depth}, MLP {mlp_dim}"

  flat = {"embedding/kernel": conv_from_torch(
              sd.take("patch_embed.proj.weight", (width, 3, patch, patch)))}
  # With pre_norm (CLIP) timm's patch embedding has no bias; ours is then 0.
  flat["embedding/bias"] = (sd.take("patch_embed.proj.bias", (width,))
                            if "patch_embed.proj.bias" in state_dict
                            else np.zeros(width, flat["embedding/kernel"].dtype))
  if has_cls:
    flat["cls"] = sd.take("cls_token", (1, 1, width))
  if has_dist:
    if not has_cls:
      raise ValueError(f"{source}: a distillation token (dist_token) without a class "
                       f"token; this ViT reads it beside the class token, as DeiT")
    flat["dist"] = sd.take("dist_token", (1, 1, width))
  tokens = sd.shape("pos_embed")[1]
  posemb = sd.take("pos_embed", (1, tokens, width))
  positioned = int(has_cls) + int(has_dist)  # our prefix tokens, with a position each
  prefix = positioned + num_registers
  no_embed_class = args.get("no_embed_class")
  if no_embed_class is None:  # the patch tokens alone form a square grid
    no_embed_class = prefix > 0 and _is_square(tokens) and not _is_square(tokens - prefix)
  if num_registers:
    registers = sd.take("reg_token", (1, num_registers, width))
    if not no_embed_class:  # the registers' rows, the same for every image
      registers = registers + posemb[:, positioned:prefix]
      posemb = np.concatenate([posemb[:, :positioned], posemb[:, prefix:]], axis=1)
    flat["registers"] = registers
  if positioned and no_embed_class:
    posemb = np.concatenate([np.zeros_like(posemb[:, :positioned]), posemb], axis=1)
  flat[npz.POSEMB] = posemb
  if "norm_pre.weight" in state_dict:  # pre_norm, as CLIP
    norm_from_torch(sd, "norm_pre", PRE_NORM, width, flat)
  for i in range(depth):
    block, theirs = OUR_BLOCK.format(i), f"blocks.{i}."
    for our_norm, their_norm in (("LayerNorm_0", "norm1"), ("LayerNorm_2", "norm2")):
      norm_from_torch(sd, theirs + their_norm, block + our_norm, width, flat)
    if f"{theirs}attn.q_norm.weight" in state_dict:  # qk_norm
      for our_norm, their_norm in _QK_NORMS:
        norm_from_torch(sd, f"{theirs}attn.{their_norm}", block + OUR_ATTENTION + our_norm,
                         width // heads, flat)
    qkv = sd.take(f"{theirs}attn.qkv.weight", (3 * width, width))
    # Without biases (qkv_bias=False, as timm's medium ViTs) ours are zero,
    # which computes the same.
    qkv_bias = (sd.take(f"{theirs}attn.qkv.bias", (3 * width,))
                if f"{theirs}attn.qkv.bias" in state_dict else np.zeros(3 * width, qkv.dtype))
    for name, weight, bias in zip(("query", "key", "value"), np.split(qkv, 3),
                                  np.split(qkv_bias, 3)):
      flat[f"{block}{OUR_ATTENTION}{name}/kernel"] = heads_from_torch(weight, heads)
      flat[f"{block}{OUR_ATTENTION}{name}/bias"] = heads_from_torch(bias, heads)
    flat[f"{block}{OUR_ATTENTION}out/kernel"] = out_from_torch(
        sd.take(f"{theirs}attn.proj.weight", (width, width)), heads)
    flat[f"{block}{OUR_ATTENTION}out/bias"] = sd.take(f"{theirs}attn.proj.bias", (width,))
    mlp_from_torch(sd, theirs + "mlp", block + "MlpBlock_3", width, flat)
    if f"{theirs}ls1.gamma" in state_dict:  # layer scale (init_values)
      for our_scale, their_scale in _LAYER_SCALES:
        flat[f"{block}{our_scale}/scale"] = sd.take(f"{theirs}{their_scale}.gamma", (width,))
  if "fc_norm.weight" in state_dict:  # after the 'avg' pooling, and no norm before it
    norm_from_torch(sd, "fc_norm", "fc_norm", width, flat)
  else:
    norm_from_torch(sd, "norm", "Transformer/encoder_norm", width, flat)
  if has_map:
    flat[OUR_MAP + "probe"] = sd.take("attn_pool.latent", (1, 1, width))
    q = sd.take("attn_pool.q.weight", (width, width))
    q_bias = sd.take("attn_pool.q.bias", (width,))
    kv = sd.take("attn_pool.kv.weight", (2 * width, width))
    kv_bias = sd.take("attn_pool.kv.bias", (2 * width,))
    for name, weight, bias in zip(("query", "key", "value"), (q, *np.split(kv, 2)),
                                  (q_bias, *np.split(kv_bias, 2))):
      flat[f"{OUR_MAP_ATTENTION}{name}/kernel"] = heads_from_torch(weight, heads)
      flat[f"{OUR_MAP_ATTENTION}{name}/bias"] = heads_from_torch(bias, heads)
    flat[OUR_MAP_ATTENTION + "out/kernel"] = out_from_torch(
        sd.take("attn_pool.proj.weight", (width, width)), heads)
    flat[OUR_MAP_ATTENTION + "out/bias"] = sd.take("attn_pool.proj.bias", (width,))
    norm_from_torch(sd, "attn_pool.norm", OUR_MAP + "LayerNorm_0", width, flat)
    mlp_from_torch(sd, "attn_pool.mlp", OUR_MAP + "MlpBlock_0", width, flat)
  for ours, theirs in (("head", "head"), ("head_dist", "head_dist")):
    if f"{theirs}.weight" in state_dict:
      num_classes = sd.shape(f"{theirs}.weight")[0]
      flat[f"{ours}/kernel"] = sd.take(f"{theirs}.weight", (num_classes, width)).T
      flat[f"{ours}/bias"] = sd.take(f"{theirs}.bias", (num_classes,))
  sd.check_all_taken()
  return npz.unflatten({name: np.ascontiguousarray(value) for name, value in flat.items()})


def is_timm_config(config):
  """Whether a parsed config.json is timm's (hub layout, or a bare pretrained_cfg)."""
  return isinstance(config, dict) and ("architecture" in config or "pretrained_cfg" in config)


def load(path, *, num_heads=None):
  """Our parameters from a timm checkpoint: a state-dict file or a hub directory.

  timm's config.json (beside the file, or in the directory) gives the heads
  and the rest of `from_timm`'s ``config``; without one, ``num_heads`` must.
  """
  if os.path.isdir(path):
    directory, weights = path, weights_file(path)
  else:
    directory, weights = os.path.dirname(path), path
  config_path = os.path.join(directory, CONFIG_FILE)
  config = read_json(config_path) if os.path.isfile(config_path) else {}
  return from_timm(read_state_dict(weights), source=path, num_heads=num_heads,
                   config=config if is_timm_config(config) else {})
