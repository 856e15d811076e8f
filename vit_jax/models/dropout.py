"""Dropout of elements, drawn 16 random bits each, and of whole residual branches.

`Dropout` draws 16 random bits per element, not flax's 32.

flax's ``nn.Dropout`` draws a float32 uniform for every element: one 32-bit
threefry word each, and threefry is ~20 integer operations per word. With the
paper's pre-training dropout of 0.1 those draws cost more than anything but
the matmuls on a CPU (docs/benchmarks.md has the timings). 16 bits per
element resolve a rate to 1/65,536, so this module draws one word for every
two elements and compares each 16-bit half with the rate.

The drop probability is the rate rounded to a multiple of 2^-16 (0.1 ->
0.1000061), and kept values are scaled by the inverse of the realised keep
probability, so every element's expectation is unchanged exactly (in
bfloat16 up to the rounding of each product: the scale is applied in
float32, since rounded to bfloat16 itself it would shrink every kept value
alike, by 0.16% at rate 0.1). The
module has no parameters: swapping it for flax's leaves checkpoints as they
are, and only the random masks differ.

`DropPath` is stochastic depth (Huang et al. 2016): a residual branch dropped
for whole examples, as timm's ``drop_path`` and the AugReg ViTs' recipe.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

_LEVELS = 2**16  # distinct values of a 16-bit draw


class Dropout(nn.Module):
  """Inverted dropout over all elements, called like ``flax.linen.Dropout``."""
  rate: float
  rng_collection: str = 'dropout'

  @nn.compact
  def __call__(self, x, deterministic: bool):
    if not 0.0 <= self.rate <= 1.0:
      raise ValueError(f'dropout rate {self.rate} must lie in [0, 1] '
                       f'(config.model.dropout_rate, attention_dropout_rate)')
    if deterministic:
      return x
    threshold = round(self.rate * _LEVELS)
    if threshold == 0:
      return x
    if threshold == _LEVELS:
      return jnp.zeros_like(x)
    keep = _keep_mask(self.make_rng(self.rng_collection), x.shape, threshold)
    scale = _LEVELS / (_LEVELS - threshold)
    scaled = (x.astype(jnp.float32) * scale).astype(x.dtype)
    return jnp.where(keep, scaled, jnp.zeros((), x.dtype))


def _keep_mask(key, shape, threshold: int):
  """True where a uniform 16-bit draw is at least ``threshold``.

  One 32-bit word serves two elements of the last axis: its low half the
  first half of the row, its high half the second.
  """
  if not shape:  # a scalar: one row of one element
    return _keep_mask(key, (1,), threshold).reshape(())
  *leading, last = shape
  words = jax.random.bits(key, (*leading, (last + 1) // 2), jnp.uint32)
  draws = jnp.concatenate([words & 0xFFFF, words >> 16], axis=-1)[..., :last]
  return draws >= threshold


class DropPath(nn.Module):
  """Zeroes the whole of ``x`` for a ``rate`` of the examples (axis 0) and
  scales the rest by 1 / (1 - rate), so the expectation is unchanged.

  ``rate`` may be traced: a scan over layers gives each its own (a Python
  0 draws nothing). A batch draws one float32 uniform per example, so the
  16-bit trick of `Dropout` would save nothing here.
  """
  rng_collection: str = 'dropout'

  @nn.compact
  def __call__(self, x, rate, deterministic: bool):
    if deterministic or (isinstance(rate, (int, float)) and rate == 0):
      return x
    draws = jax.random.uniform(self.make_rng(self.rng_collection),
                               (x.shape[0],) + (1,) * (x.ndim - 1))
    scale = 1 / (1 - jnp.asarray(rate, jnp.float32))
    scaled = (x.astype(jnp.float32) * scale).astype(x.dtype)
    return jnp.where(draws >= rate, scaled, jnp.zeros((), x.dtype))
