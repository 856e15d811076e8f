"""The ResNets' convolutions and max pool, in the form each backend runs best.

``config.model.conv_implementation`` picks one (BiT ResNets and the hybrids'
stems); parameters are the same either way, and values and gradients up to
float rounding:

- ``xla``: ``lax.conv_general_dilated`` and flax's ``max_pool``,
  differentiated by JAX.
- ``matrix``: the same forward convolution, with a hand-written backward
  pass whose weight gradient is a 2-D matmul per kernel tap, the tap's
  (strided) slice of the input^T x the output gradient, the input gradient
  XLA's; and the max pool as the maximum of its strided slices, whose
  gradient is elementwise selects. On XLA:CPU a convolution's weight
  gradient costs 2-3x a matmul of the same FLOPs for 1x1 kernels and
  1.2-1.4x for 3x3 ones on large maps, and the max pool's gradient
  (select-and-scatter) 20x its forward pass (docs/benchmarks.md).
- ``auto``: ``matrix`` on the CPU, ``xla`` on accelerators, whose
  convolution gradients run at matmul speed.

The max pool's gradient differs from select-and-scatter only where a window
holds its maximum twice: select-and-scatter gives it all to one of them,
``matrix`` half to each (both are subgradients).
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from vit_jax.models import implementations

IMPLEMENTATIONS = ('auto', 'xla', 'matrix')
_DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')


def resolve(implementation: str) -> str:
  """The concrete implementation: ``auto`` is ``matrix`` on CPU, else ``xla``."""
  return implementations.resolve('conv_implementation', implementation, IMPLEMENTATIONS,
                                 on_cpu='matrix', elsewhere='xla')


def _explicit_pads(padding, kernel_size, strides, spatial):
  """((top, bottom), (left, right)) for 'SAME', 'VALID' or explicit pairs."""
  if isinstance(padding, str):
    return tuple(lax.padtype_to_pads(spatial, (kernel_size,) * 2, (strides,) * 2, padding))
  return tuple(tuple(pair) for pair in padding)


def _strided_windows(x, kernel_size, strides, out_height, out_width):
  """The kernel_size**2 slices of padded ``x`` that each kernel tap reads, row-major."""
  span_h, span_w = strides * (out_height - 1) + 1, strides * (out_width - 1) + 1
  return [x[:, i:i + span_h:strides, j:j + span_w:strides, :]
          for i in range(kernel_size) for j in range(kernel_size)]


def conv(x, kernel, *, strides, padding, implementation):
  """A 2-D convolution of NHWC ``x`` with an HWIO ``kernel``, no bias."""
  pads = _explicit_pads(padding, kernel.shape[0], strides, x.shape[1:3])
  if resolve(implementation) == 'matrix':
    return _tapwise_conv(x, kernel, strides, pads)
  return _xla_conv(x, kernel, strides, pads)


def _xla_conv(x, kernel, strides, pads):
  return lax.conv_general_dilated(x, kernel, window_strides=(strides, strides),
                                  padding=pads, dimension_numbers=_DIMENSIONS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _tapwise_conv(x, kernel, strides, pads):
  return _xla_conv(x, kernel, strides, pads)


def _tapwise_conv_forward(x, kernel, strides, pads):
  return _xla_conv(x, kernel, strides, pads), (x, kernel)


def _tapwise_conv_backward(strides, pads, residuals, d_out):
  x, kernel = residuals
  _, d_x_of = jax.vjp(lambda x: _xla_conv(x, kernel, strides, pads), x)
  d_x, = d_x_of(d_out)
  batch, out_height, out_width, out_channels = d_out.shape
  rows = batch * out_height * out_width
  d_rows = d_out.reshape(rows, out_channels)
  padded = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  # Contracting the leading axis of both, as they lie: XLA:CPU runs this
  # through its matmul without transposing a copy first (see dense.py).
  taps = [lax.dot_general(window.reshape(rows, x.shape[-1]), d_rows,
                          (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)
          for window in _strided_windows(padded, kernel.shape[0], strides,
                                         out_height, out_width)]
  return d_x, jnp.stack(taps).reshape(kernel.shape).astype(kernel.dtype)


_tapwise_conv.defvjp(_tapwise_conv_forward, _tapwise_conv_backward)


def max_pool(x, *, window, strides, padding, implementation):
  """Max pool of NHWC ``x`` over ``window`` x ``window`` windows."""
  pads = _explicit_pads(padding, window, strides, x.shape[1:3])
  if resolve(implementation) == 'xla':
    return nn.max_pool(x, (window, window), strides=(strides, strides), padding=pads)
  padded = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=-jnp.inf)
  out_height = (padded.shape[1] - window) // strides + 1
  out_width = (padded.shape[2] - window) // strides + 1
  return functools.reduce(jnp.maximum, _strided_windows(
      padded, window, strides, out_height, out_width))
