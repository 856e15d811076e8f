"""Vision Transformer (ViT) in flax.linen.

Module and parameter names are the checkpoint format: they match the published
ViT checkpoints (``embedding``, ``cls``, ``Transformer/encoderblock_{i}/...``,
``pre_logits``, ``head``) so that those checkpoints, and third-party loaders
written for them, work unchanged. Every submodule is therefore named
explicitly rather than left to flax's auto-naming.

With ``scan`` the blocks are one `nn.scan` over parameters stacked along a
leading layer axis, ``Transformer/encoderblock/...``: XLA then compiles one
block rather than ``num_layers`` copies, so compile time stops growing with
depth. Files keep the published per-block layout whatever the run used
(`vit_jax.models.layer_stack` converts).

Later additions, each off by default, are timm's, so that its checkpoints
with them load (DeiT-III, DINOv2, CLIP): ``layer_scale_init``, a learned
per-channel scale on each residual branch (CaiT's LayerScale);
``num_registers``, learned tokens that join the patches without a position
("Vision Transformers Need Registers", Darcet et al. 2023); ``pre_norm``, a
LayerNorm before the first block (CLIP's ``ln_pre``); ``fc_norm``, the final
LayerNorm after the 'gap' mean rather than on every token;
``distillation_token``, DeiT's second token and head (Touvron et al. 2021);
and the ``gelu`` forms of `GELUS`.

The ViT-22B paper's changes ("Scaling Vision Transformers to 22 Billion
Parameters") are fields, each off by default: ``parallel_block``,
``qk_norm``, ``use_bias=False`` and the ``'map'`` classifier; its variant
'22B' turns them all on.
"""
import dataclasses
import numbers
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models import (activation_sharding, attention, conv, dense, dropout,
                            layer_norm, layer_stack, module_fields, patch_embedding,
                            resnet_stem)

# name -> (hidden_size, num_layers, mlp_dim, num_heads), as in the ViT paper
# (Ti and S from the DeiT / "How to train your ViT" follow-ups).
VARIANTS = {
    'Ti': (192, 12, 768, 3),
    'S': (384, 12, 1536, 6),
    'B': (768, 12, 3072, 12),
    'L': (1024, 24, 4096, 16),
    'H': (1280, 32, 5120, 16),
    # "Scaling Vision Transformers" (Zhai et al. 2022), Table 2, as
    # big_vision's vit.decode_variant has them.
    'g': (1408, 40, 6144, 16),
    'G': (1664, 48, 8192, 16),
    'e': (1792, 56, 15360, 16),
    # "Scaling Vision Transformers to 22 Billion Parameters", Table 1.
    '22B': (6144, 48, 24576, 48),
}

# A variant's own choices beyond its shape; an override replaces any of them.
VARIANT_OPTIONS = {
    '22B': dict(parallel_block=True, qk_norm=True, use_bias=False, classifier='map'),
}

# The MLP's GELU: 'tanh', flax's default approximation, as the original ViT
# and big_vision compute it; 'exact', the erf form, PyTorch's and so timm's
# and Hugging Face's default; 'quick', CLIP's x * sigmoid(1.702 x): the
# latter two for those checkpoints' own function.
GELUS = ('tanh', 'exact', 'quick')


def apply_gelu(x, form: str):
  """The GELU of `GELUS` named ``form``."""
  if form == 'quick':
    return x * jax.nn.sigmoid(1.702 * x)
  return nn.gelu(x, approximate=form == 'tanh')

# 'token': the class token's output; 'gap': the tokens' mean; 'map':
# multi-head attention pooling (`MAPHead`), a learned probe attending over them.
CLASSIFIERS = ('token', 'gap', 'map')

# What a rematerialised block keeps for the backward pass (`jax.checkpoint_policies`):
# nothing (the least memory, the whole forward pass again), every matmul's
# output, or the outputs of the matmuls with weights (projections and MLP)
# while the attention's batched matmuls and all elementwise work are redone.
REMAT_POLICIES = ('nothing_saveable', 'dots_saveable', 'dots_with_no_batch_dims_saveable')


def remat_policy(name: str):
  """The `jax.checkpoint_policies` function that ``config.model.remat_policy`` names."""
  if name not in REMAT_POLICIES:
    raise ValueError(f'unknown remat_policy {name!r}; valid: {", ".join(REMAT_POLICIES)}')
  return getattr(jax.checkpoint_policies, name)

# The original ViT initialises Dense layers this way; tiny biases rather than
# zeros keep the same checkpoint statistics and training behaviour.
_dense_kernel_init = nn.initializers.xavier_uniform()
_dense_bias_init = nn.initializers.normal(stddev=1e-6)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ComputeSettings:
  """How the body computes: its dtypes, its GELU and which kernel runs each layer kind.

  The fields are VisionTransformer's of the same names, which configs and
  `get_model` override one by one. VisionTransformer gathers them here once
  and hands the whole to every submodule, so on the way down no setting can
  land in another's place, and a new one is added here and where it is used
  rather than to every class in between. Frozen, hence hashable, as flax
  module fields and ``nn.remat``'s static arguments must be.
  """
  dtype: Any
  param_dtype: Any
  gelu: str  # one of GELUS
  layer_norm_epsilon: float
  attention_implementation: str
  token_padding: str
  layer_norm_implementation: str
  dense_implementation: str

  def dense_args(self, *, bias_init):
    """Keyword arguments of the blocks' Dense layers: dtypes, kernel, initialisers."""
    return dict(dtype=self.dtype, param_dtype=self.param_dtype,
                kernel_init=_dense_kernel_init, bias_init=bias_init,
                dot_general=dense.dot_general(self.dense_implementation))

  def norm(self, *, name: str, use_bias: bool = True):
    """A LayerNorm in these dtypes, computed by ``layer_norm_implementation``.

    Without a bias it is ViT-22B's: "applied without bias and centering",
    that is an RMSNorm (x / rms(x) * scale), whose one parameter has the
    LayerNorm's name, ``scale``.
    """
    if not use_bias:
      return nn.RMSNorm(name=name, dtype=self.dtype, param_dtype=self.param_dtype,
                        epsilon=self.layer_norm_epsilon)
    return layer_norm.LayerNorm(name=name, dtype=self.dtype, param_dtype=self.param_dtype,
                                epsilon=self.layer_norm_epsilon,
                                implementation=self.layer_norm_implementation)


# The modules below take every field by keyword (``kw_only``): their fields
# are rates, sizes and names of like types in a row, which a positional call
# could swap without any error.


class AddPositionEmbs(nn.Module, kw_only=True):
  """Adds a learned position embedding, one vector per token.

  The table's length is fixed by the input at init; running at another
  resolution needs the table resampled (flax raises a shape error otherwise).
  """
  compute: ComputeSettings

  @nn.compact
  def __call__(self, x):
    assert x.ndim == 3, f'expected (batch, tokens, hidden), got {x.shape}'
    posemb = self.param('pos_embedding', nn.initializers.normal(stddev=0.02),
                        (1, x.shape[1], x.shape[2]), self.compute.param_dtype)
    return x + posemb.astype(x.dtype)


class LayerScale(nn.Module, kw_only=True):
  """A learned per-channel scale of a residual branch (CaiT; timm's ``ls1``/``ls2``).

  Starting near 0 (timm's ``init_values``, 1e-5 to 1e-6), each block begins
  close to the identity, which CaiT and DeiT-III found lets deep ViTs train.
  """
  init_value: float
  compute: ComputeSettings

  @nn.compact
  def __call__(self, x):
    scale = self.param('scale', nn.initializers.constant(self.init_value), (x.shape[-1],),
                       self.compute.param_dtype)
    return x * scale.astype(x.dtype)


class MlpBlock(nn.Module, kw_only=True):
  """Transformer MLP: Dense -> gelu -> dropout -> Dense -> dropout.

  The final dropout is the residual-branch dropout of the original ViT, so the
  encoder block adds no further one after the MLP.
  """
  mlp_dim: int
  dropout_rate: float
  compute: ComputeSettings

  @nn.compact
  def __call__(self, x, *, train: bool):
    layer = self.compute.dense_args(bias_init=_dense_bias_init)
    y = nn.Dense(self.mlp_dim, name='Dense_0', **layer)(x)
    y = apply_gelu(y, self.compute.gelu)
    y = dropout.Dropout(rate=self.dropout_rate, name='Dropout_0')(y, deterministic=not train)
    y = nn.Dense(x.shape[-1], name='Dense_1', **layer)(y)
    return dropout.Dropout(rate=self.dropout_rate, name='Dropout_1')(
        y, deterministic=not train)


class MultiHeadDotProductAttention(nn.Module, kw_only=True):
  """Multi-head self-attention with the checkpoint's query/key/value/out layout.

  Without attention dropout, the attention itself is `vit_jax.models.attention`'s
  ``compute.attention_implementation`` (fused kernels on GPU, a CPU-friendly
  layout on CPU). Those have no dropout on the attention weights, so training
  with attention dropout takes an explicit path. All take the softmax in
  float32.
  """
  num_heads: int
  dropout_rate: float
  # ViT-22B's QK normalisation: a LayerNorm over each head's queries and keys
  # (parameters shared by the heads) bounds the attention logits, whose growth
  # made its large runs diverge.
  qk_norm: bool
  # Biases of the query/key/value projections (and their LayerNorms' bias
  # and centring); the out projection keeps its bias, as in ViT-22B.
  use_bias: bool
  compute: ComputeSettings
  # Where the encoder padded the tokens (`attention.pads_once`): how many are
  # real, the rest masked out as keys. None: no padding.
  valid_tokens: int | None = None

  @nn.compact
  def __call__(self, x, *, train: bool):
    batch, tokens, hidden = x.shape
    if hidden % self.num_heads:
      raise ValueError(
          f'hidden_size {hidden} is not divisible by num_heads {self.num_heads}')
    head_dim = hidden // self.num_heads
    layer = self.compute.dense_args(bias_init=nn.initializers.zeros)
    q, k, v = (nn.DenseGeneral((self.num_heads, head_dim), name=name,
                               use_bias=self.use_bias, **layer)(x)
               for name in ('query', 'key', 'value'))
    assert q.shape == (batch, tokens, self.num_heads, head_dim), q.shape
    if self.qk_norm:
      q = self.compute.norm(name='query_ln', use_bias=self.use_bias)(q)
      k = self.compute.norm(name='key_ln', use_bias=self.use_bias)(k)

    if train and self.dropout_rate > 0:
      logits = jnp.einsum('bqhd,bkhd->bhqk', q, k,
                          preferred_element_type=jnp.float32)
      weights = jax.nn.softmax(logits * head_dim**-0.5)
      weights = dropout.Dropout(rate=self.dropout_rate, name='attention_dropout')(
          weights, deterministic=False)
      y = jnp.einsum('bhqk,bkhd->bqhd', weights.astype(v.dtype), v)
    else:
      y = attention.attention(
          q, k, v, implementation=self.compute.attention_implementation,
          valid_tokens=self.valid_tokens,
          pad_per_call=self.compute.token_padding == 'per_attention')
    assert y.shape == (batch, tokens, self.num_heads, head_dim), y.shape

    return nn.DenseGeneral(hidden, axis=(-2, -1), name='out', **layer)(y)


class Encoder1DBlock(nn.Module, kw_only=True):
  """Pre-LayerNorm transformer block: attention then MLP, or both at once.

  With ``parallel`` (ViT-22B, after PaLM) the attention and the MLP read the
  same LayerNorm'd input and both outputs join the residual,
  x + attn(LN(x)) + mlp(LN(x)): one LayerNorm, and the two branches' matmuls
  are independent, which lets a model-parallel layout overlap them.
  ``train`` is positional so that ``nn.remat`` can mark it static;
  ``drop_path_rate`` is this block's stochastic-depth rate, traced under a
  scan, None where the model has none.
  """
  mlp_dim: int
  num_heads: int
  dropout_rate: float
  attention_dropout_rate: float
  parallel: bool
  qk_norm: bool
  use_bias: bool
  # The initial value of each branch's LayerScale; None: no layer scale.
  layer_scale_init: float | None
  compute: ComputeSettings
  valid_tokens: int | None = None  # see MultiHeadDotProductAttention

  @nn.compact
  def __call__(self, x, train: bool, drop_path_rate=None):
    y = self.compute.norm(name='LayerNorm_0', use_bias=self.use_bias)(x)

    def scaled(branch, index):
      if self.layer_scale_init is None:
        return branch
      return LayerScale(init_value=self.layer_scale_init, compute=self.compute,
                        name=f'LayerScale_{index}')(branch)

    def dropped(branch, index):
      if drop_path_rate is None:
        return branch
      return dropout.DropPath(name=f'DropPath_{index}')(
          branch, drop_path_rate, deterministic=not train)

    attended = MultiHeadDotProductAttention(
        num_heads=self.num_heads, dropout_rate=self.attention_dropout_rate,
        qk_norm=self.qk_norm, use_bias=self.use_bias, compute=self.compute,
        valid_tokens=self.valid_tokens,
        name='MultiHeadDotProductAttention_1')(y, train=train)
    attended = dropout.Dropout(rate=self.dropout_rate, name='Dropout_1')(
        attended, deterministic=not train)
    mlp = MlpBlock(mlp_dim=self.mlp_dim, dropout_rate=self.dropout_rate,
                   compute=self.compute, name='MlpBlock_3')
    if self.parallel:  # one stochastic-depth draw for the sum of both branches
      return x + dropped(scaled(attended, 0) + scaled(mlp(y, train=train), 1), 0)
    x = x + dropped(scaled(attended, 0), 0)
    y = self.compute.norm(name='LayerNorm_2', use_bias=self.use_bias)(x)
    return x + dropped(scaled(mlp(y, train=train), 1), 1)


class Encoder(nn.Module, kw_only=True):
  """Position embedding, a stack of blocks, and a final LayerNorm (none with
  ``final_norm=False``, where the model normalises after pooling; and, with
  ``pre_norm``, one before the blocks, as CLIP).

  ``registers`` (1, R, hidden), where the model has any, join the tokens
  after the position embedding, at the end: they have no position, and the
  attention does not depend on the tokens' order.
  """
  num_layers: int
  mlp_dim: int
  num_heads: int
  dropout_rate: float
  attention_dropout_rate: float
  drop_path_rate: float
  remat: bool
  remat_policy: str
  scan: bool
  parallel_block: bool
  qk_norm: bool
  use_bias: bool
  layer_scale_init: float | None
  pre_norm: bool
  final_norm: bool
  compute: ComputeSettings

  @nn.compact
  def __call__(self, x, *, train: bool, registers=None):
    x = AddPositionEmbs(compute=self.compute, name='posembed_input')(x)
    if registers is not None:
      x = jnp.concatenate([x, jnp.tile(registers.astype(x.dtype), (x.shape[0], 1, 1))],
                          axis=1)
    x = dropout.Dropout(rate=self.dropout_rate, name='Dropout_0')(x, deterministic=not train)
    if self.pre_norm:
      x = self.compute.norm(name='pre_norm', use_bias=self.use_bias)(x)
    tokens = x.shape[1]
    # cuDNN's attention trains on an even token count only: pad once here
    # rather than around every block's attention (`attention.pads_once`).
    # The attention-dropout path computes its own attention and needs none.
    pad = (train and tokens % 2 == 1 and self.attention_dropout_rate == 0
           and attention.pads_once(self.compute.token_padding,
                                   self.compute.attention_implementation))
    if pad:
      x = jnp.pad(x, ((0, 0), (0, 1), (0, 0)))
    # Every block's input and output split over the batch axes (under a
    # mesh): with FSDP, XLA would otherwise carry the parameters' split of the
    # hidden units into the activations and keep the batch whole on each
    # fsdp device (`activation_sharding.constrain_batch`).
    x = activation_sharding.constrain_batch(x)

    # Rematerialising trades recomputation in the backward pass for not
    # storing each block's activations, all or those the policy does not
    # keep; `train` (argument 2, counting self) selects Python control flow,
    # so it must be static. Inside a scan the loop already keeps XLA from
    # merging the recomputation into the forward pass, so remat's own guard
    # against that (prevent_cse) would only cost.
    block_cls = Encoder1DBlock
    if self.remat:
      block_cls = nn.remat(Encoder1DBlock, static_argnums=(2,), prevent_cse=not self.scan,
                           policy=remat_policy(self.remat_policy))
    block_args = dict(
        mlp_dim=self.mlp_dim, num_heads=self.num_heads, dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate, parallel=self.parallel_block,
        qk_norm=self.qk_norm, use_bias=self.use_bias,
        layer_scale_init=self.layer_scale_init, compute=self.compute,
        valid_tokens=tokens if pad else None)
    rates = drop_path_rates(self.drop_path_rate, self.num_layers)
    if self.scan:
      # One block traced and compiled, run num_layers times over its stacked
      # parameters; each layer draws its own init and dropout keys, and
      # takes its own stochastic-depth rate.
      x, _ = nn.scan(_scan_step, variable_axes={'params': 0},
                     split_rngs={'params': True, 'dropout': True},
                     in_axes=(nn.broadcast, 0), length=self.num_layers)(
                         block_cls(name=layer_stack.STACKED_BLOCKS, **block_args), x, train,
                         None if rates is None else jnp.asarray(rates, jnp.float32))
    else:
      for i in range(self.num_layers):
        x = activation_sharding.constrain_batch(
            block_cls(name=layer_stack.block_name(i), **block_args)(
                x, train, None if rates is None else rates[i]))
    if pad:
      x = x[:, :tokens]
    if not self.final_norm:
      return x
    return self.compute.norm(name='encoder_norm', use_bias=self.use_bias)(x)


def num_prefix_tokens(model) -> int:
  """The tokens before the patches, with a position each: the class token and
  DeiT's distillation token (none for 'gap' and 'map', or a ResNet)."""
  if getattr(model, 'classifier', None) != 'token':
    return 0
  return 1 + bool(getattr(model, 'distillation_token', False))


def check_option_values(*, layer_scale_init, num_registers, layer_norm_epsilon):
  """Refuses a layer scale, register count or LayerNorm epsilon no model has,
  naming the config key."""
  if layer_scale_init is not None and not (
      isinstance(layer_scale_init, numbers.Real) and not isinstance(layer_scale_init, bool)
      and layer_scale_init > 0):
    raise ValueError(f'layer_scale_init {layer_scale_init!r} must be a number above 0, '
                     f'e.g. 1e-5 as DINOv2 (config.model.layer_scale_init; None: no '
                     f'layer scale)')
  if (isinstance(num_registers, bool) or not isinstance(num_registers, numbers.Integral)
      or num_registers < 0):
    raise ValueError(f'num_registers {num_registers!r} must be a whole number of register '
                     f'tokens, 0 or more (config.model.num_registers)')
  if not (isinstance(layer_norm_epsilon, numbers.Real) and layer_norm_epsilon > 0):
    raise ValueError(f'layer_norm_epsilon {layer_norm_epsilon!r} must be a number above 0, '
                     f'e.g. 1e-6 (config.model.layer_norm_epsilon)')


def _scan_step(block, x, train, drop_path_rate):
  """One layer of the scan: the carry is the tokens; nothing is stacked out."""
  return activation_sharding.constrain_batch(block(x, train, drop_path_rate)), None


def drop_path_rates(rate: float, num_layers: int) -> list[float] | None:
  """Each block's stochastic-depth rate: 0 for the first, rising linearly to
  ``rate`` for the last (timm's ``linspace(0, drop_path_rate, depth)``, the
  AugReg recipe's); None for no stochastic depth."""
  if not rate:
    return None
  if not 0 <= rate < 1:
    raise ValueError(f'drop_path_rate {rate} must lie in [0, 1) '
                     f'(config.model.drop_path_rate)')
  return [rate * i / max(num_layers - 1, 1) for i in range(num_layers)]


def _float32_softmax_attention(query, key, value, mask=None):
  """MAPHead's ``attention_fn``: JAX's attention, whose logits and softmax
  are float32 as every block's are; flax's own computes them in the compute
  dtype, bfloat16 in a bfloat16 model."""
  return jax.nn.dot_product_attention(query, key, value, mask=mask)


class MAPHead(nn.Module, kw_only=True):
  """Multi-head attention pooling, big_vision's ``MAPHead``.

  A learned probe token attends over every token, and an MLP block refines
  the result: probe' = MHA(probe, x); probe' + MLP(LN(probe')). The
  parameter names are big_vision's, so its MAP-head checkpoints load.
  """
  mlp_dim: int
  num_heads: int
  compute: ComputeSettings

  @nn.compact
  def __call__(self, x):
    batch, _, hidden = x.shape
    probe = self.param('probe', nn.initializers.xavier_uniform(), (1, 1, hidden),
                       self.compute.param_dtype)
    probe = jnp.tile(probe.astype(x.dtype), (batch, 1, 1))
    x = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, kernel_init=nn.initializers.xavier_uniform(),
        dtype=self.compute.dtype, param_dtype=self.compute.param_dtype,
        attention_fn=_float32_softmax_attention,
        name='MultiHeadDotProductAttention_0')(probe, x)
    y = self.compute.norm(name='LayerNorm_0')(x)
    x = x + MlpBlock(mlp_dim=self.mlp_dim, dropout_rate=0.0, compute=self.compute,
                     name='MlpBlock_0')(y, train=False)
    return x[:, 0]


class VisionTransformer(nn.Module, kw_only=True):
  """ViT classifier: patch embedding, transformer encoder, linear head.

  ``dtype`` is the compute dtype of the body; parameters stay in
  ``param_dtype``. These and the ``*_implementation`` fields reach the
  submodules as one `ComputeSettings`. The head runs in float32 and logits
  are always float32, because they feed a softmax cross-entropy where
  bfloat16's ~3 significant digits would visibly coarsen the loss, and the
  head is a negligible cost.
  """
  num_classes: int
  patch_size: int
  hidden_size: int
  num_layers: int
  mlp_dim: int
  num_heads: int
  classifier: str = 'token'
  representation_size: int | None = None
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  # One of GELUS: the MLPs' activation.
  gelu: str = 'tanh'
  # Every LayerNorm's epsilon: flax's and the original ViT's 1e-6; CLIP's is
  # 1e-5, Google's ViTs converted to Hugging Face state 1e-12.
  layer_norm_epsilon: float = 1e-6
  # Stochastic depth: the last block's rate of dropping each residual branch
  # for an example, the earlier blocks' rising linearly from 0 (`drop_path_rates`).
  drop_path_rate: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: bool = False
  # One of REMAT_POLICIES: what each block keeps when ``remat`` is on.
  remat_policy: str = 'nothing_saveable'
  # The blocks as one nn.scan over stacked parameters (see the module's
  # docstring): compile time independent of depth, the same numbers.
  scan: bool = False
  # ViT-22B's block options; see Encoder1DBlock and MultiHeadDotProductAttention.
  parallel_block: bool = False
  qk_norm: bool = False
  use_bias: bool = True
  # timm's init_values: each residual branch scaled by a learned vector that
  # starts at this value (`LayerScale`); None: no layer scale.
  layer_scale_init: float | None = None
  # timm's reg_tokens: learned tokens beside the patches, without a position,
  # which the blocks attend to and the classifier does not pool.
  num_registers: int = 0
  # timm's pre_norm (CLIP's ln_pre): a LayerNorm of the tokens before the
  # first block, ``Transformer/pre_norm``.
  pre_norm: bool = False
  # timm's fc_norm, with the 'gap' classifier (its default for 'avg' pooling):
  # the LayerNorm moves from every token (``encoder_norm``) to their mean
  # (``fc_norm``).
  fc_norm: bool = False
  # DeiT's distillation token, with the 'token' classifier: a second learned
  # token after the class token (``dist``), read by a head of its own
  # (``head_dist``); the logits are the two heads' mean, as DeiT's at test
  # time, and the features the two tokens' mean.
  distillation_token: bool = False
  head_bias_init: float = 0.0
  # One of vit_jax.models.attention.IMPLEMENTATIONS; 'auto' picks by backend.
  attention_implementation: str = 'auto'
  # One of vit_jax.models.attention.TOKEN_PADDINGS: how a training step gives
  # cuDNN's attention the even token count it needs.
  token_padding: str = 'per_attention'
  # One of vit_jax.models.layer_norm.IMPLEMENTATIONS; 'auto' picks by backend.
  layer_norm_implementation: str = 'auto'
  # One of vit_jax.models.dense.IMPLEMENTATIONS, for the blocks' Dense layers.
  dense_implementation: str = 'auto'
  # One of vit_jax.models.patch_embedding.IMPLEMENTATIONS, for the patch embedding.
  embedding_implementation: str = 'conv'
  # A hybrid (the paper's section 3.1): the units of each stage of a ResNet
  # stem whose feature map is the patch grid, e.g. (3, 4, 9) for R50+B/16 or
  # () for the root alone, and its width factor. ``patch_size`` stays the
  # stride on the image, a multiple of the stem's (`resnet_stem.stem_stride`).
  resnet_blocks: tuple[int, ...] | None = None
  resnet_width: int = 1
  # One of vit_jax.models.conv.IMPLEMENTATIONS, for the hybrid stem's
  # convolutions and max pool; 'auto' picks by backend.
  conv_implementation: str = 'auto'

  @nn.compact
  def __call__(self, images, *, train: bool):
    if self.classifier not in CLASSIFIERS:
      raise ValueError(
          f'unknown classifier {self.classifier!r}; valid: {", ".join(CLASSIFIERS)}')
    if self.gelu not in GELUS:
      raise ValueError(f'unknown gelu {self.gelu!r}; valid: {", ".join(GELUS)}')
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'expected NHWC RGB images, got shape {images.shape}')
    # A bad implementation name fails here, before anything is built.
    attention.resolve(self.attention_implementation)
    attention.pads_once(self.token_padding, self.attention_implementation)
    layer_norm.resolve(self.layer_norm_implementation)
    dense.resolve(self.dense_implementation)
    patch_embedding.check(self.embedding_implementation)
    conv.resolve(self.conv_implementation)
    remat_policy(self.remat_policy)
    check_option_values(layer_scale_init=self.layer_scale_init,
                        num_registers=self.num_registers,
                        layer_norm_epsilon=self.layer_norm_epsilon)
    if self.fc_norm and self.classifier != 'gap':
      raise ValueError(f'fc_norm normalises the tokens\' mean, which classifier='
                       f'{self.classifier!r} does not take: fc_norm needs classifier=\'gap\' '
                       f'(config.model.fc_norm, config.model.classifier)')
    if self.distillation_token and (self.classifier != 'token'
                                    or self.representation_size is not None):
      raise ValueError(f'distillation_token is read beside the class token by a head of '
                       f'its own, as DeiT\'s: it needs classifier=\'token\' and no '
                       f'pre_logits (config.model.distillation_token, '
                       f'config.model.classifier, config.model.representation_size)')
    batch, height, width, _ = images.shape
    p = self.patch_size
    if height % p or width % p:
      raise ValueError(
          f'image height {height} and width {width} must both be divisible by '
          f'the patch size {p}')
    # A hybrid's patches are whole cells of its stem's feature map. () is a
    # stem of the root alone (stride 4), as in the AugReg release's R+Ti/16.
    if self.resnet_blocks is not None:
      stride = resnet_stem.stem_stride(self.resnet_blocks)
      if p % stride:
        raise ValueError(
            f'patch_size {p} is not a multiple of {stride}, the stride of the ResNet '
            f'stem of resnet_blocks={tuple(self.resnet_blocks)}; valid: {stride}, '
            f'{2 * stride}, {3 * stride}...')

    x = images
    if self.resnet_blocks is not None:
      x = resnet_stem.resnet_stem(x, block_sizes=self.resnet_blocks,
                                  width_factor=self.resnet_width, dtype=self.dtype,
                                  param_dtype=self.param_dtype,
                                  conv_implementation=self.conv_implementation)
      p //= stride  # patches of the feature map
    x = patch_embedding.PatchEmbedding(
        hidden_size=self.hidden_size, patch_size=p, dtype=self.dtype,
        param_dtype=self.param_dtype, implementation=self.embedding_implementation,
        name='embedding')(x)

    if self.classifier == 'token':
      prefix = [self.param(name, nn.initializers.zeros, (1, 1, self.hidden_size),
                           self.param_dtype)
                for name in ('cls', 'dist')[:1 + self.distillation_token]]
      x = jnp.concatenate([jnp.tile(token.astype(x.dtype), (batch, 1, 1))
                           for token in prefix] + [x], axis=1)
    # Distinct from the start (timm's and DINOv2's init): identical registers
    # would get identical gradients and never tell apart.
    registers = None
    if self.num_registers:
      registers = self.param('registers', nn.initializers.normal(stddev=1e-6),
                             (1, self.num_registers, self.hidden_size), self.param_dtype)

    compute = ComputeSettings(
        dtype=self.dtype, param_dtype=self.param_dtype, gelu=self.gelu,
        layer_norm_epsilon=self.layer_norm_epsilon,
        attention_implementation=self.attention_implementation,
        token_padding=self.token_padding,
        layer_norm_implementation=self.layer_norm_implementation,
        dense_implementation=self.dense_implementation)
    x = Encoder(num_layers=self.num_layers, mlp_dim=self.mlp_dim, num_heads=self.num_heads,
                dropout_rate=self.dropout_rate,
                attention_dropout_rate=self.attention_dropout_rate,
                drop_path_rate=self.drop_path_rate, remat=self.remat,
                remat_policy=self.remat_policy, scan=self.scan,
                parallel_block=self.parallel_block, qk_norm=self.qk_norm,
                use_bias=self.use_bias, layer_scale_init=self.layer_scale_init,
                pre_norm=self.pre_norm, final_norm=not self.fc_norm, compute=compute,
                name='Transformer')(x, train=train, registers=registers)

    # The registers (the last tokens) are not pooled, as in timm.
    x = x[:, :x.shape[1] - self.num_registers]
    distilled = None
    if self.classifier == 'token':
      x, distilled = x[:, 0], (x[:, 1] if self.distillation_token else None)
    elif self.classifier == 'map':
      x = MAPHead(mlp_dim=self.mlp_dim, num_heads=self.num_heads, compute=compute,
                  name='MAPHead_0')(x)
    else:
      x = jnp.mean(x.astype(jnp.float32), axis=1)
      if self.fc_norm:
        x = compute.norm(name='fc_norm', use_bias=self.use_bias)(x)
    assert x.shape == (batch, self.hidden_size), x.shape

    if self.representation_size is not None:
      x = nn.Dense(self.representation_size, name='pre_logits', dtype=self.dtype,
                   param_dtype=self.param_dtype)(x)
      x = jnp.tanh(x)
    # The frozen features of few-shot probes (vit_jax.evaluators.fewshot);
    # kept only where the caller asks for the 'intermediates' collection.
    self.sow('intermediates', 'features', x if distilled is None else (x + distilled) / 2)

    def head(name):
      return nn.Dense(self.num_classes, name=name, dtype=jnp.float32,
                      param_dtype=self.param_dtype, kernel_init=nn.initializers.zeros,
                      bias_init=nn.initializers.constant(self.head_bias_init))

    logits = head('head')(x)
    if distilled is not None:
      logits = (logits + head('head_dist')(distilled)) / 2
    assert logits.shape == (batch, self.num_classes), logits.shape
    return logits


# The fields a variant may choose, which a config leaves unset (None) to take
# the variant's choice.
_OPTION_FIELDS = frozenset(key for options in VARIANT_OPTIONS.values() for key in options)
# The shape a variant's name gives, which a config also leaves unset (None).
_SHAPE_FIELDS = frozenset(('hidden_size', 'num_layers', 'mlp_dim', 'num_heads'))


_VARIANT_RE = re.compile(r'^(?P<name>[A-Za-z0-9]+)/(?P<patch>[0-9]+)$')
def get_model(variant: str, *, num_classes: int, **overrides) -> VisionTransformer:
  """Builds a ViT from a 'NAME/PATCH' string such as 'B/16'.

  ``overrides`` replace any field, e.g. a tiny model for demos and tests;
  dtypes may be given as strings ('bfloat16') because configs hold strings.
  An override of None for the shape (hidden_size, num_layers, mlp_dim,
  num_heads) or one of a variant's options (`VARIANT_OPTIONS`): a config's
  unset field, keeps the variant's.
  """
  match = _VARIANT_RE.match(variant) if isinstance(variant, str) else None
  if match is None or match['name'] not in VARIANTS or int(match['patch']) < 1:
    raise ValueError(
        f'unknown ViT variant {variant!r}; valid: {", ".join(VARIANTS)} '
        f"followed by /PATCH, e.g. 'B/16' (ResNets: 'R50x1', hybrids: 'R50x1+B/16')")
  hidden_size, num_layers, mlp_dim, num_heads = VARIANTS[match['name']]
  defaults = dict(num_classes=num_classes, patch_size=int(match['patch']),
                  hidden_size=hidden_size, num_layers=num_layers, mlp_dim=mlp_dim,
                  num_heads=num_heads, **VARIANT_OPTIONS.get(match['name'], {}))
  overrides = {key: value for key, value in overrides.items()
               if value is not None or key not in _OPTION_FIELDS | _SHAPE_FIELDS}
  return module_fields.build(VisionTransformer, defaults, overrides)
