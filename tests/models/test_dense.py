"""The Dense layers' 2-D matmul: the same values and gradients as lax.dot_general."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from vit_jax.models import dense


@pytest.mark.parametrize("lhs_shape, rhs_shape, contracting", [
    ((4, 5, 6), (6, 7), 1),        # Dense: (batch, tokens, in) x (in, out)
    ((4, 5, 6), (6, 2, 3), 1),     # DenseGeneral to heads: query, key, value
    ((4, 5, 2, 3), (2, 3, 6), 2),  # DenseGeneral from heads: out
    ((5, 8), (8, 3), 1),           # plain 2-D
])
def test_values_and_gradients_equal_dot_generals(lhs_shape, rhs_shape, contracting):
  lhs_key, rhs_key = jax.random.split(jax.random.key(0))
  lhs = jax.random.normal(lhs_key, lhs_shape)
  rhs = jax.random.normal(rhs_key, rhs_shape)
  ndim = len(lhs_shape)
  numbers = ((tuple(range(ndim - contracting, ndim)), tuple(range(contracting))), ((), ()))

  def loss(dot):
    return lambda a, b: jnp.sum(jnp.sin(dot(a, b, numbers)))

  want = lax.dot_general(lhs, rhs, numbers)
  got = dense.matrix_dot_general(lhs, rhs, numbers)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  want_grads = jax.grad(loss(lax.dot_general), argnums=(0, 1))(lhs, rhs)
  got_grads = jax.jit(jax.grad(loss(dense.matrix_dot_general), argnums=(0, 1)))(lhs, rhs)
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_other_products_go_to_dot_general_unchanged():
  """Batch axes or leading contracted axes are not a Dense layer's product."""
  a, b = jnp.ones((2, 3, 4)), jnp.ones((2, 4, 5))
  batched = (((2,), (1,)), ((0,), (0,)))
  np.testing.assert_array_equal(dense.matrix_dot_general(a, b, batched),
                                lax.dot_general(a, b, batched))
  assert "custom_vjp" not in str(jax.make_jaxpr(
      lambda a, b: dense.matrix_dot_general(a, b, batched))(a, b))


def test_bfloat16_stays_bfloat16():
  x, w = jnp.ones((3, 4), jnp.bfloat16), jnp.ones((4, 2), jnp.bfloat16)
  numbers = (((1,), (0,)), ((), ()))
  y, grads = jax.value_and_grad(
      lambda x, w: jnp.sum(dense.matrix_dot_general(x, w, numbers).astype(jnp.float32)),
      argnums=(0, 1))(x, w)
  assert y == 24 and [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]


def test_auto_is_the_matrix_form_on_cpu_only(monkeypatch):
  assert dense.resolve("auto") == "matrix"
  assert dense.dot_general("auto") is dense.matrix_dot_general
  assert dense.dot_general("flax") is None
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  assert dense.resolve("auto") == "flax" and dense.dot_general("auto") is None
  with pytest.raises(ValueError, match="unknown dense_implementation 'fast'; valid: "
                                       "auto, flax, matrix"):
    dense.resolve("fast")
