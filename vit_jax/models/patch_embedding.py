"""The patch embedding: each p x p patch of the image, linearly, to a token.

The checkpoint holds it as a convolution, ``embedding/kernel`` of shape
(p, p, channels, hidden) and ``embedding/bias``; both implementations take
that parameter, with flax ``nn.Conv``'s initialisers, so checkpoints and
initial values do not change. ``config.model.embedding_implementation``
picks how it is computed:

- ``conv``: a stride-p convolution, as flax's ``nn.Conv`` computes it; the
  default.
- ``matmul``: the image cut into patches (a reshape and a transpose) and
  one (batch * patches, p * p * channels) x (p * p * channels, hidden)
  matmul. A stride-p convolution with a p x p kernel is exactly that
  product, but XLA:GPU runs it as a convolution (cuDNN's, ~3% of a B/16
  step at 34 TFLOP/s on the H200: docs/benchmarks.md), where the product
  would go to cuBLAS's GEMMs, its weight gradient too. On the CPU the two
  take the same time (docs/benchmarks.md), so ``conv`` stays the default
  until a GPU measures ``matmul``.

``conv`` is flax's computation to the bit, values and gradients; ``matmul``
agrees with it up to float rounding (tests/models/test_patch_embedding.py).
"""
import flax.linen as nn
import jax.numpy as jnp
from jax import lax

IMPLEMENTATIONS = ('conv', 'matmul')


def check(implementation: str) -> str:
  """``implementation``, if it names one; else an error naming the choices."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f'unknown embedding_implementation {implementation!r}; '
                     f'valid: {", ".join(IMPLEMENTATIONS)}')
  return implementation


def patchify(images, patch_size: int):
  """(batch, height, width, channels) -> (batch, patches, p * p * channels).

  Patches in row-major order of the grid, each flattened as (row, column,
  channel): the order in which the conv kernel's (p, p, channels) axes
  flatten, and in which the conv's output grid reshapes to tokens.
  """
  batch, height, width, channels = images.shape
  p = patch_size
  grid = images.reshape(batch, height // p, p, width // p, p, channels)
  grid = jnp.transpose(grid, (0, 1, 3, 2, 4, 5))
  return grid.reshape(batch, (height // p) * (width // p), p * p * channels)


class PatchEmbedding(nn.Module, kw_only=True):
  """Tokens (batch, patches, hidden) of NHWC images, by ``implementation``."""
  hidden_size: int
  patch_size: int
  dtype: object
  param_dtype: object
  implementation: str = 'conv'

  @nn.compact
  def __call__(self, images):
    p = self.patch_size
    kernel = self.param('kernel', nn.linear.default_kernel_init,
                        (p, p, images.shape[-1], self.hidden_size), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros_init(), (self.hidden_size,),
                      self.param_dtype)
    images, kernel, bias = nn.dtypes.promote_dtype(images, kernel, bias, dtype=self.dtype)
    if check(self.implementation) == 'conv':
      grid = lax.conv_general_dilated(images, kernel, window_strides=(p, p),
                                      padding='VALID',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      return (grid + bias).reshape(images.shape[0], -1, self.hidden_size)
    return patchify(images, p) @ kernel.reshape(-1, self.hidden_size) + bias
