"""The matmul of the Dense layers, in the form each backend runs best.

flax's ``Dense`` and ``DenseGeneral`` call a ``dot_general``; this module
picks it from ``config.model.dense_implementation``. Parameters are the
same either way, and values and gradients up to float rounding (the sums
run in another order):

- ``flax``: ``lax.dot_general``, as flax calls it, differentiated by JAX.
- ``matrix``: the product as one 2-D matmul, (tokens, in) x (in, out), with
  a hand-written backward pass. JAX's own backward pass leaves XLA:CPU to
  send the weight gradient to its YNNPACK matmuls, which want the
  contracted (token) axis last on the left, so XLA first copies an operand
  transposed: for ViT-Ti the MLP's 768-wide output gradient, and the
  query, key and value gradients once more each. Here the weight gradient
  is a dot contracting the leading axis of the 2-D operands as they lie,
  which XLA:CPU runs through Eigen's matmul, reading them in place: no
  copies. Its narrower side comes first (out x in for a layer that narrows,
  then transposed, which is small), as measured faster for the MLP's
  second layer.
- ``auto``: ``matrix`` on the CPU, ``flax`` on accelerators, whose matmuls
  read transposed operands at no cost.

What ``matrix`` saves on the CPU, and what taking every weight gradient as
x^T dy would, is in docs/benchmarks.md, measured with `scripts/benchmark.py
--against=model.dense_implementation=flax`.
"""
import math

import jax
from jax import lax

from vit_jax.models import implementations

IMPLEMENTATIONS = ('auto', 'flax', 'matrix')


def resolve(implementation: str) -> str:
  """The concrete implementation: ``auto`` is ``matrix`` on CPU, else ``flax``."""
  return implementations.resolve(
      'dense_implementation', implementation, IMPLEMENTATIONS,
      on_cpu='matrix', elsewhere='flax')


def dot_general(implementation: str):
  """What flax's Dense layers should call for ``implementation`` (None: flax's own)."""
  return matrix_dot_general if resolve(implementation) == 'matrix' else None


def matrix_dot_general(lhs, rhs, dimension_numbers, precision=None,
                       preferred_element_type=None, **kwargs):
  """``lax.dot_general`` as a 2-D matmul with `_matmul`'s backward pass.

  Takes the products flax's Dense layers make: the trailing axes of ``lhs``
  against the leading axes of ``rhs``, no batch axes, default precision.
  Anything else goes to ``lax.dot_general`` unchanged.
  """
  (lhs_contracting, rhs_contracting), batch = dimension_numbers
  ndim, count = lhs.ndim, len(lhs_contracting)
  if (batch[0] or batch[1] or precision is not None
      or preferred_element_type is not None or kwargs
      or tuple(lhs_contracting) != tuple(range(ndim - count, ndim))
      or tuple(rhs_contracting) != tuple(range(count))):
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type, **kwargs)
  inner = math.prod(lhs.shape[ndim - count:])
  out = _matmul(lhs.reshape(-1, inner), rhs.reshape(inner, -1))
  return out.reshape(lhs.shape[:ndim - count] + rhs.shape[count:])


@jax.custom_vjp
def _matmul(x, w):
  return x @ w


def _matmul_forward(x, w):
  return x @ w, (x, w)


def _matmul_backward(residuals, d_out):
  """dx = dy w^T; dw = x^T dy, contracting the token axis where both lie.

  dw is taken as (dy^T x)^T when the layer narrows (in > out): the same
  numbers, and the measured faster orientation of Eigen's matmul.
  """
  x, w = residuals
  d_x = lax.dot_general(d_out, w, (((1,), (1,)), ((), ())))
  if x.shape[1] <= d_out.shape[1]:
    d_w = lax.dot_general(x, d_out, (((0,), (0,)), ((), ())))
  else:
    d_w = lax.dot_general(d_out, x, (((0,), (0,)), ((), ()))).T
  return d_x, d_w


_matmul.defvjp(_matmul_forward, _matmul_backward)
