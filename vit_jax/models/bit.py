"""BiT: ResNet-v2 with GroupNorm and weight standardisation, in flax.linen.

Kolesnikov et al. 2020, "Big Transfer (BiT): General Visual Representation
Learning". Module and parameter names are the published BiT checkpoints'
(BiT-S/M-R50x1.npz and the rest, which the BiT ports and timm's
``resnetv2_*_bit`` read), so a BiT .npz loads as it is:

  resnet/root_block/standardized_conv2d/kernel
  resnet/block{1..4}/unit{01..}/{a,b,c}/group_norm/{gamma,beta}
  resnet/block{1..4}/unit{01..}/{a,b,c}/standardized_conv2d/kernel
  resnet/block{1..4}/unit01/a/proj/standardized_conv2d/kernel
  resnet/group_norm/{gamma,beta}
  resnet/head/conv2d/{kernel,bias}          kernel (1, 1, channels, classes)

A unit is pre-activation: its part ``a`` normalises and activates the unit's
input, and both the 1x1 conv ``a/standardized_conv2d`` and, where the shape
or stride changes, the shortcut's projection ``a/proj`` read that activated
input (hence ``proj`` under ``a``). The stride sits in the 3x3 conv of part
``b``, as in all BiT code (the original ResNet-v2 put it in the first 1x1).
Padding is BiT's fixed, symmetric padding of (k - 1) / 2, not 'SAME', and the
root's max pool pads with zeros (not -inf) before a VALID 3x3/2 pool: the
root conv's output is not yet activated, so the two differ, and the
checkpoints were trained with zeros.
"""
import dataclasses
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models import conv, module_fields
from vit_jax.models.std_conv import StdConv

# depth -> units per stage.
VARIANTS = {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
WIDTH_FACTORS = (1, 2, 3, 4)
VARIANT_RE = re.compile(r'^R(?P<depth>[0-9]+)x(?P<width>[0-9]+)$')

# BiT's GroupNorm: 32 groups, epsilon 1e-5 (its TF normalization.py, and the
# PyTorch and JAX ports).
GROUP_NORM_GROUPS = 32
GROUP_NORM_EPSILON = 1e-5


def _fixed_padding(kernel_size):
  """BiT's symmetric padding for a kernel of ``kernel_size``, whatever the stride."""
  total = kernel_size - 1
  return ((total // 2, total - total // 2),) * 2


class GroupNorm(nn.Module, kw_only=True):
  """GroupNorm over (H, W, channels of a group), with BiT's ``gamma``/``beta``.

  Statistics are float32 whatever ``dtype``; the output is in ``dtype``.
  """
  num_groups: int = GROUP_NORM_GROUPS
  epsilon: float = GROUP_NORM_EPSILON
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    batch, height, width, channels = x.shape
    if channels % self.num_groups:
      raise ValueError(f'GroupNorm: {channels} channels are not divisible into '
                       f'{self.num_groups} groups')
    gamma = self.param('gamma', nn.initializers.ones, (channels,), self.param_dtype)
    beta = self.param('beta', nn.initializers.zeros, (channels,), self.param_dtype)
    grouped = x.astype(jnp.float32).reshape(
        batch, height, width, self.num_groups, channels // self.num_groups)
    mean = jnp.mean(grouped, axis=(1, 2, 4), keepdims=True)
    var = jnp.var(grouped, axis=(1, 2, 4), keepdims=True)
    normalised = ((grouped - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
    y = normalised * gamma.astype(jnp.float32) + beta.astype(jnp.float32)
    return y.astype(self.dtype)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Dtypes:
  """Compute and parameter dtypes and the convolutions' implementation,
  handed down whole (hashable, for nn.remat)."""
  dtype: Any
  param_dtype: Any
  conv_implementation: str

  def conv(self, features, kernel_size, *, strides=1, name='standardized_conv2d'):
    return StdConv(features=features, kernel_size=kernel_size, strides=strides,
                   padding=_fixed_padding(kernel_size), standardization='bit',
                   dtype=self.dtype, param_dtype=self.param_dtype,
                   implementation=self.conv_implementation, name=name)

  def norm(self, *, name='group_norm'):
    return GroupNorm(dtype=self.dtype, param_dtype=self.param_dtype, name=name)


class RootBlock(nn.Module, kw_only=True):
  """7x7/2 conv to ``width`` channels, zero padding, 3x3/2 max pool: 1/4 resolution."""
  width: int
  dtypes: _Dtypes

  @nn.compact
  def __call__(self, x):
    x = self.dtypes.conv(self.width, 7, strides=2)(x)
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return conv.max_pool(x, window=3, strides=2, padding='VALID',
                         implementation=self.dtypes.conv_implementation)


class Projection(nn.Module, kw_only=True):
  """The shortcut's 1x1 conv (the checkpoint's ``proj`` scope around it)."""
  features: int
  strides: int
  dtypes: _Dtypes

  @nn.compact
  def __call__(self, x):
    return self.dtypes.conv(self.features, 1, strides=self.strides)(x)


class PreActivatedConv(nn.Module, kw_only=True):
  """GroupNorm, ReLU, then a conv: one of a unit's parts ``a``, ``b``, ``c``.

  With ``projection_features`` (part ``a`` of a unit that changes shape or
  stride) it also projects the activated input for the shortcut, and returns
  it as the second element; otherwise the second element is None.
  """
  features: int
  kernel_size: int
  strides: int = 1
  projection_features: int | None = None
  projection_strides: int = 1
  dtypes: _Dtypes

  @nn.compact
  def __call__(self, x):
    x = nn.relu(self.dtypes.norm()(x))
    shortcut = None
    if self.projection_features is not None:
      shortcut = Projection(features=self.projection_features,
                            strides=self.projection_strides, dtypes=self.dtypes,
                            name='proj')(x)
    return self.dtypes.conv(self.features, self.kernel_size, strides=self.strides)(x), shortcut


class BottleneckUnit(nn.Module, kw_only=True):
  """Pre-activation bottleneck: 1x1 to ``mid``, 3x3/stride, 1x1 to 4 * ``mid``.

  ``x`` is the only argument, so that ``nn.remat`` needs no static ones.
  """
  mid: int
  strides: int
  dtypes: _Dtypes

  @nn.compact
  def __call__(self, x):
    out = 4 * self.mid
    needs_projection = x.shape[-1] != out or self.strides != 1
    y, shortcut = PreActivatedConv(
        features=self.mid, kernel_size=1, dtypes=self.dtypes,
        projection_features=out if needs_projection else None,
        projection_strides=self.strides, name='a')(x)
    y, _ = PreActivatedConv(features=self.mid, kernel_size=3, strides=self.strides,
                            dtypes=self.dtypes, name='b')(y)
    y, _ = PreActivatedConv(features=out, kernel_size=1, dtypes=self.dtypes, name='c')(y)
    return y + (x if shortcut is None else shortcut)


class Stage(nn.Module, kw_only=True):
  """``num_units`` bottleneck units ``unit01``, ``unit02``...; the first strides."""
  num_units: int
  mid: int
  first_strides: int
  remat: bool
  dtypes: _Dtypes

  @nn.compact
  def __call__(self, x):
    unit_cls = nn.remat(BottleneckUnit) if self.remat else BottleneckUnit
    for i in range(self.num_units):
      x = unit_cls(mid=self.mid, strides=self.first_strides if i == 0 else 1,
                   dtypes=self.dtypes, name=f'unit{i + 1:02d}')(x)
    return x


class Head(nn.Module, kw_only=True):
  """The classifier as BiT stores it: a 1x1 conv ``conv2d`` on the pooled vector."""
  num_classes: int
  bias_init: float
  param_dtype: Any

  @nn.compact
  def __call__(self, pooled):
    batch, channels = pooled.shape
    logits = nn.Conv(self.num_classes, (1, 1), dtype=jnp.float32,
                     param_dtype=self.param_dtype, kernel_init=nn.initializers.zeros,
                     bias_init=nn.initializers.constant(self.bias_init),
                     name='conv2d')(pooled.reshape(batch, 1, 1, channels))
    return logits.reshape(batch, self.num_classes)


class Body(nn.Module, kw_only=True):
  """Everything under the checkpoint's ``resnet/`` scope: (pooled features, logits)."""
  num_classes: int
  block_sizes: tuple[int, ...]
  width_factor: int
  remat: bool
  head_bias_init: float
  dtypes: _Dtypes

  @nn.compact
  def __call__(self, images):
    width = 64 * self.width_factor
    x = RootBlock(width=width, dtypes=self.dtypes, name='root_block')(images)
    for i, num_units in enumerate(self.block_sizes):
      x = Stage(num_units=num_units, mid=width * 2**i, first_strides=1 if i == 0 else 2,
                remat=self.remat, dtypes=self.dtypes, name=f'block{i + 1}')(x)
    x = nn.relu(self.dtypes.norm()(x))
    pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    logits = Head(num_classes=self.num_classes, bias_init=self.head_bias_init,
                  param_dtype=self.dtypes.param_dtype, name='head')(pooled)
    return pooled, logits


class ResNetV2(nn.Module, kw_only=True):
  """BiT ResNet-v2 classifier; logits are float32 whatever ``dtype``.

  ``dtype`` is the compute dtype of the body (GroupNorm statistics, weight
  standardisation, pooling and head stay float32); parameters stay in
  ``param_dtype``. ``remat`` rematerialises each bottleneck unit in the
  backward pass. BiT has neither dropout nor batch statistics, so ``train``
  changes nothing; it is there so that every model is called alike.
  """
  num_classes: int
  block_sizes: tuple[int, ...]
  width_factor: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: bool = False
  head_bias_init: float = 0.0
  # One of vit_jax.models.conv.IMPLEMENTATIONS; 'auto' picks by backend.
  conv_implementation: str = 'auto'

  @nn.compact
  def __call__(self, images, *, train: bool):
    del train  # no dropout, no batch statistics
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'expected NHWC RGB images, got shape {images.shape}')
    conv.resolve(self.conv_implementation)  # a bad name fails before anything is built
    pooled, logits = Body(
        num_classes=self.num_classes, block_sizes=tuple(self.block_sizes),
        width_factor=self.width_factor, remat=self.remat,
        head_bias_init=self.head_bias_init,
        dtypes=_Dtypes(dtype=self.dtype, param_dtype=self.param_dtype,
                       conv_implementation=self.conv_implementation),
        name='resnet')(images)
    # The frozen features of few-shot probes (vit_jax.evaluators.fewshot), as
    # VisionTransformer sows them: the vector the head reads.
    self.sow('intermediates', 'features', pooled)
    assert logits.shape == (images.shape[0], self.num_classes), logits.shape
    return logits


def get_model(variant: str, *, num_classes: int, **overrides) -> ResNetV2:
  """Builds a BiT ResNet from an 'R{depth}x{width}' string such as 'R50x1'.

  ``overrides`` replace any field; dtypes may be given as strings
  ('bfloat16') because configs hold strings.
  """
  match = VARIANT_RE.match(variant) if isinstance(variant, str) else None
  if (match is None or int(match['depth']) not in VARIANTS
      or int(match['width']) not in WIDTH_FACTORS):
    raise ValueError(
        f'unknown BiT variant {variant!r}; valid: R{{depth}}x{{width}} with depth one of '
        f'{", ".join(map(str, VARIANTS))} and width one of '
        f'{", ".join(map(str, WIDTH_FACTORS))}, e.g. \'R50x1\'')
  defaults = dict(num_classes=num_classes, block_sizes=VARIANTS[int(match['depth'])],
                  width_factor=int(match['width']))
  if 'block_sizes' in overrides:  # a config's list; module fields must hash
    overrides = dict(overrides, block_sizes=tuple(overrides['block_sizes']))
  return module_fields.build(ResNetV2, defaults, overrides)
