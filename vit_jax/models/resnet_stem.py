"""The ResNet stem of the ViT hybrids (R50+ViT-B/16 and the rest), in flax.linen.

The ViT paper's hybrids feed the transformer the feature map of a ResNet
instead of image patches. This is that ResNet as vision_transformer's
``models_resnet.py`` and ``models_vit.py`` build it, because their names and
numerics are the published checkpoints' (R50+ViT-B_16.npz), which timm's
``vit_base_r50_s16_*`` also read. It is not BiT's ResNet-v2 (`bit.py`):

- units are post-activation (v1-style): conv -> GroupNorm -> ReLU, and the
  unit's last GroupNorm ``gn3`` starts with zero scale, so that each unit
  starts as its shortcut; the ReLU comes after the residual sum;
- the shortcut's projection is conv then GroupNorm (``conv_proj``, ``gn_proj``);
- weight standardisation is ``(w - mean) / (std + 1e-5)`` (`std_conv`), and
  GroupNorm is flax's (32 groups, epsilon 1e-6, ``scale``/``bias``);
- padding is 'SAME' throughout, the stride in the 3x3 conv ``conv2``; the root
  is conv_root 7x7/2 -> gn_root -> ReLU -> 3x3/2 'SAME' max pool;
- units are numbered ``unit1``, ``unit2``... (no zero padding).

`resnet_stem` creates its modules in whatever ``nn.compact`` method calls it,
so their parameters land at the top of the caller's tree (``conv_root/kernel``,
``gn_root/scale``, ``block1/unit1/conv1/kernel``...), beside ``embedding``, as
in the published files.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from vit_jax.models import conv
from vit_jax.models.std_conv import StdConv


def stem_stride(block_sizes: Sequence[int]) -> int:
  """How many image pixels one feature-map cell spans: 4 after the root, x2 a later stage."""
  return 4 * 2**max(len(block_sizes) - 1, 0)


def _conv(features, kernel_size, *, strides=1, name, dtype, param_dtype,
          implementation):
  return StdConv(features=features, kernel_size=kernel_size, strides=strides,
                 padding='SAME', standardization='vit_hybrid', dtype=dtype,
                 param_dtype=param_dtype, implementation=implementation, name=name)


class ResidualUnit(nn.Module, kw_only=True):
  """Post-activation bottleneck: 1x1 to ``features``, 3x3/stride, 1x1 to 4x."""
  features: int
  strides: int = 1
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  conv_implementation: str = 'auto'

  @nn.compact
  def __call__(self, x):
    dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    convs = dict(dtypes, implementation=self.conv_implementation)
    out = 4 * self.features
    residual = x
    if x.shape[-1] != out or self.strides != 1:
      residual = _conv(out, 1, strides=self.strides, name='conv_proj', **convs)(x)
      residual = nn.GroupNorm(name='gn_proj', **dtypes)(residual)

    y = _conv(self.features, 1, name='conv1', **convs)(x)
    y = nn.relu(nn.GroupNorm(name='gn1', **dtypes)(y))
    y = _conv(self.features, 3, strides=self.strides, name='conv2', **convs)(y)
    y = nn.relu(nn.GroupNorm(name='gn2', **dtypes)(y))
    y = _conv(out, 1, name='conv3', **convs)(y)
    y = nn.GroupNorm(name='gn3', scale_init=nn.initializers.zeros, **dtypes)(y)
    return nn.relu(residual + y)


class ResNetStage(nn.Module, kw_only=True):
  """``num_units`` residual units ``unit1``, ``unit2``...; the first strides."""
  num_units: int
  features: int
  first_strides: int
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  conv_implementation: str = 'auto'

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_units):
      x = ResidualUnit(features=self.features,
                       strides=self.first_strides if i == 0 else 1, dtype=self.dtype,
                       param_dtype=self.param_dtype,
                       conv_implementation=self.conv_implementation,
                       name=f'unit{i + 1}')(x)
    return x


def resnet_stem(x, *, block_sizes: Sequence[int], width_factor: int, dtype: Any,
                param_dtype: Any, conv_implementation: str = 'auto'):
  """The hybrid's ResNet on NHWC images: a feature map at 1 / `stem_stride`.

  Call it inside an ``nn.compact`` method: the modules bind to that method's
  module, under the checkpoint's names. Its output has
  4 * 64 * width_factor * 2**(len(block_sizes) - 1) channels (1024 for R50
  /16), or 64 * width_factor with no stages (the root alone).
  """
  width = 64 * width_factor
  dtypes = dict(dtype=dtype, param_dtype=param_dtype)
  x = _conv(width, 7, strides=2, name='conv_root', implementation=conv_implementation,
            **dtypes)(x)
  x = nn.relu(nn.GroupNorm(name='gn_root', **dtypes)(x))
  x = conv.max_pool(x, window=3, strides=2, padding='SAME',
                    implementation=conv_implementation)
  for i, num_units in enumerate(block_sizes):
    x = ResNetStage(num_units=num_units, features=width * 2**i,
                    first_strides=1 if i == 0 else 2, conv_implementation=conv_implementation,
                    name=f'block{i + 1}', **dtypes)(x)
  return x
