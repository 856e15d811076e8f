"""vit_jax.layer_norm.LayerNorm computes flax's LayerNorm, values and gradients."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import layer_norm


def _inputs_and_variables():
  """Rows far from zero mean and unit variance, and non-trivial scale/bias."""
  x = 3.0 * jax.random.normal(jax.random.key(0), (4, 7, 48)) + 1.5
  variables = nn.LayerNorm().init(jax.random.key(1), x)
  variables = jax.tree.map(
      lambda p: p + jax.random.normal(jax.random.key(2), p.shape), variables)
  return x, variables


def _value_and_grads(module, variables, x):
  def loss(variables, x):
    return jnp.sum(jnp.sin(module.apply(variables, x).astype(jnp.float32)))
  return module.apply(variables, x), jax.grad(loss, argnums=(0, 1))(variables, x)


def test_parameters_are_flax_layer_norms():
  x, _ = _inputs_and_variables()
  ours = layer_norm.LayerNorm(param_dtype=jnp.bfloat16).init(jax.random.key(0), x)
  flax_own = nn.LayerNorm(param_dtype=jnp.bfloat16).init(jax.random.key(0), x)
  assert jax.tree.map(lambda p: (p.shape, p.dtype), ours) == jax.tree.map(
      lambda p: (p.shape, p.dtype), flax_own)
  np.testing.assert_array_equal(ours["params"]["scale"], flax_own["params"]["scale"])
  np.testing.assert_array_equal(ours["params"]["bias"], flax_own["params"]["bias"])


@pytest.mark.parametrize("dtype, tolerance", [(jnp.float32, 2e-5), (jnp.bfloat16, 1e-2)])
def test_matches_flax_values_and_gradients(dtype, tolerance):
  assert layer_norm._use_matvec_statistics()  # the tests run on the CPU
  x, variables = _inputs_and_variables()
  x = x.astype(dtype)
  ours, our_grads = _value_and_grads(layer_norm.LayerNorm(dtype=dtype), variables, x)
  flax_y, flax_grads = _value_and_grads(nn.LayerNorm(dtype=dtype), variables, x)
  assert ours.dtype == flax_y.dtype == dtype
  np.testing.assert_allclose(ours.astype(np.float32), flax_y.astype(np.float32),
                             atol=tolerance)
  for ours_grad, flax_grad in zip(jax.tree.leaves(our_grads), jax.tree.leaves(flax_grads)):
    assert ours_grad.dtype == flax_grad.dtype
    np.testing.assert_allclose(ours_grad.astype(np.float32),
                               flax_grad.astype(np.float32), atol=tolerance)


def test_statistics_are_float32_for_bfloat16_inputs():
  """bfloat16 statistics would round a mean of 526 (steps of 4 there)."""
  values = 512.0 + 4.0 * np.arange(8.0)  # exact in bfloat16
  x = jnp.asarray(values, jnp.bfloat16)[None]
  variables = nn.LayerNorm().init(jax.random.key(0), x)
  y = layer_norm.LayerNorm(dtype=jnp.float32).apply(variables, x)
  expected = (values - values.mean()) / np.sqrt(values.var() + 1e-6)
  np.testing.assert_allclose(np.asarray(y[0]), expected, atol=1e-5)


def test_off_the_cpu_it_is_flax_layer_norm(monkeypatch):
  monkeypatch.setattr(layer_norm, "_use_matvec_statistics", lambda: False)
  x, variables = _inputs_and_variables()
  np.testing.assert_array_equal(layer_norm.LayerNorm().apply(variables, x),
                                nn.LayerNorm().apply(variables, x))
  jaxpr = str(jax.make_jaxpr(lambda x: layer_norm.LayerNorm().apply(variables, x))(x))
  assert "custom_vjp" not in jaxpr and "dot_general" not in jaxpr


def test_matvec_statistics_on_the_cpu():
  """The CPU path is the one whose means are matvecs, with its own backward."""
  x, variables = _inputs_and_variables()
  jaxpr = str(jax.make_jaxpr(lambda x: layer_norm.LayerNorm().apply(variables, x))(x))
  assert "custom_vjp" in jaxpr and "dot_general" in jaxpr


def test_other_configurations_fall_back_to_flax():
  """Normalising over other axes is flax's own code, parameters included."""
  x, _ = _inputs_and_variables()
  ours = layer_norm.LayerNorm(reduction_axes=(1, 2), feature_axes=-1)
  theirs = nn.LayerNorm(reduction_axes=(1, 2), feature_axes=-1)
  variables = theirs.init(jax.random.key(0), x)
  np.testing.assert_array_equal(ours.apply(variables, x), theirs.apply(variables, x))
