"""Weight-standardised convolution, as BiT and the ViT hybrids use it.

Weight standardisation (Qiao et al. 2019, arXiv:1903.10520) rescales each
output channel's kernel to zero mean and unit variance over (kh, kw, cin)
before convolving; with GroupNorm it stands in for BatchNorm, and unlike
BatchNorm it keeps nothing across examples, so it behaves the same at any
batch size and when fine-tuning.

The two published families standardise with different epsilons, in
different places, and their checkpoints were trained that way, so each keeps
its own (`STANDARDIZATIONS`):

  'bit'        (w - mean) / sqrt(var + 1e-10)   BiT (big_transfer, all ports)
  'vit_hybrid' (w - mean) / (std + 1e-5)        vision_transformer's
                                                models_resnet.StdConv

The kernel is the plain parameter ``kernel`` (HWIO), stored unstandardised as
in both checkpoint formats; standardising happens on every call, in float32
whatever ``dtype``, since a mean and variance over a few thousand weights in
bfloat16 would lose the small differences that standardising brings out.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models import conv


def standardize_bit(kernel):
  """BiT's standardisation: per output channel, ``(w - mean) / sqrt(var + 1e-10)``."""
  mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
  var = jnp.var(kernel, axis=(0, 1, 2), keepdims=True)
  return (kernel - mean) * jax.lax.rsqrt(var + 1e-10)


def standardize_vit_hybrid(kernel):
  """vision_transformer's: per output channel, ``(w - mean) / (std + 1e-5)``."""
  centred = kernel - jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
  return centred / (jnp.std(centred, axis=(0, 1, 2), keepdims=True) + 1e-5)


STANDARDIZATIONS = {'bit': standardize_bit, 'vit_hybrid': standardize_vit_hybrid}


class StdConv(nn.Module, kw_only=True):
  """A bias-free 2-D convolution of NHWC inputs with a standardised HWIO kernel.

  ``padding`` is 'SAME', 'VALID' or explicit ((top, bottom), (left, right))
  pairs; BiT pads symmetrically (explicit pairs), the hybrid's stem uses
  'SAME' (flax's default, which pads the bottom/right more for even inputs at
  stride 2). Its one parameter is ``kernel``, so the enclosing module's name is
  the checkpoint's.
  """
  features: int
  kernel_size: int
  strides: int = 1
  padding: str | Sequence[tuple[int, int]] = 'VALID'
  standardization: str
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  # One of vit_jax.models.conv.IMPLEMENTATIONS; 'auto' picks by backend.
  implementation: str = 'auto'

  @nn.compact
  def __call__(self, x):
    if self.standardization not in STANDARDIZATIONS:
      raise ValueError(f'unknown standardization {self.standardization!r}; valid: '
                       f'{", ".join(STANDARDIZATIONS)}')
    k = self.kernel_size
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (k, k, x.shape[-1], self.features), self.param_dtype)
    kernel = STANDARDIZATIONS[self.standardization](kernel.astype(jnp.float32))
    return conv.conv(x.astype(self.dtype), kernel.astype(self.dtype),
                     strides=self.strides, padding=self.padding,
                     implementation=self.implementation)
