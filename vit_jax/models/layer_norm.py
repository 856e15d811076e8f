"""LayerNorm whose row statistics XLA:CPU computes as matrix-vector products.

A drop-in for ``flax.linen.LayerNorm`` over the last axis: the same
parameters (``scale``, ``bias``), initialisers, epsilon and output dtype, so
checkpoints do not change. Its ``implementation`` (from
``config.model.layer_norm_implementation``) picks how the statistics are
computed: ``matvec`` (below), ``flax`` (flax's own code), or ``auto``:
``matvec`` on the CPU, where it was measured to help, and ``flax`` on
accelerators.

On the CPU, XLA computes a product with a vector of 1/features (an Eigen
matvec) faster than the reduction loop it emits for a mean over the last
axis. So the means here are matvecs (at 'highest' precision, so nothing is
rounded below float32), and the backward pass is written out so that its
two row means are matvecs as well. Statistics are float32 whatever the input
dtype, as in flax. What this saves is in docs/benchmarks.md, measured with
`scripts/benchmark.py --against=model.layer_norm_implementation=flax`.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models import implementations

IMPLEMENTATIONS = ('auto', 'flax', 'matvec')


def resolve(implementation: str) -> str:
  """The concrete implementation: ``auto`` is ``matvec`` on CPU, else ``flax``."""
  return implementations.resolve(
      'layer_norm_implementation', implementation, IMPLEMENTATIONS,
      on_cpu='matvec', elsewhere='flax')


class LayerNorm(nn.LayerNorm):
  """`flax.linen.LayerNorm`, with matvec statistics where ``implementation`` says.

  Only the configuration ViT uses (normalise and scale the last axis, with
  scale and bias, no cross-device axis) takes the matvec path; any other is
  flax's.
  """
  implementation: str = 'auto'

  @nn.compact
  def __call__(self, x, *, mask=None):
    plain = (mask is None and self.use_bias and self.use_scale
             and self.reduction_axes in (-1, (-1,), x.ndim - 1)
             and self.feature_axes in (-1, (-1,), x.ndim - 1)
             and self.axis_name is None)
    if not plain or resolve(self.implementation) == 'flax':
      return super().__call__(x, mask=mask)
    features = x.shape[-1]
    scale = self.param('scale', self.scale_init, (features,), self.param_dtype)
    bias = self.param('bias', self.bias_init, (features,), self.param_dtype)
    dtype = self.dtype or jnp.result_type(x, scale, bias)
    as_f32 = lambda a: a.astype(jnp.float32)
    return _normalize(as_f32(x), as_f32(scale), as_f32(bias),
                      self.epsilon).astype(dtype)


def _row_mean(x):
  """Mean over the last axis, as a matvec, kept with a trailing axis of 1."""
  features = x.shape[-1]
  weights = jnp.full((features,), 1.0 / features, x.dtype)
  return jnp.einsum('...c,c->...', x, weights, precision='highest')[..., None]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _normalize(x, scale, bias, epsilon):
  return _normalize_forward(x, scale, bias, epsilon)[0]


def _normalize_forward(x, scale, bias, epsilon):
  """(x - mean) / sqrt(var + epsilon) * scale + bias, all float32."""
  centred = x - _row_mean(x)
  inv_std = jax.lax.rsqrt(_row_mean(centred * centred) + epsilon)
  normalized = centred * inv_std
  return normalized * scale + bias, (normalized, inv_std, scale)


def _normalize_backward(epsilon, residuals, d_out):
  """Gradients of `_normalize_forward`.

  With n = (x - mean) * inv_std and g = d_out * scale, the gradient by x is
  inv_std * (g - mean(g) - n * mean(g * n)), the means taken over each row.
  """
  del epsilon
  normalized, inv_std, scale = residuals
  g = d_out * scale
  d_x = inv_std * (g - _row_mean(g) - normalized * _row_mean(g * normalized))
  rows = tuple(range(d_out.ndim - 1))
  return d_x, jnp.sum(d_out * normalized, axis=rows), jnp.sum(d_out, axis=rows)


_normalize.defvjp(_normalize_forward, _normalize_backward)
