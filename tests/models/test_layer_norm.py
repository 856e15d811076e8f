"""vit_jax.models.layer_norm.LayerNorm computes flax's LayerNorm, values and gradients."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.models import layer_norm


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
def test_matvec_matches_flax_values_and_gradients(dtype, tolerance):
  x, variables = _inputs_and_variables()
  x = x.astype(dtype)
  matvec = layer_norm.LayerNorm(dtype=dtype, implementation="matvec")
  ours, our_grads = _value_and_grads(matvec, variables, x)
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
  y = layer_norm.LayerNorm(dtype=jnp.float32, implementation="matvec").apply(variables, x)
  expected = (values - values.mean()) / np.sqrt(values.var() + 1e-6)
  np.testing.assert_allclose(np.asarray(y[0]), expected, atol=1e-5)


def _jaxpr(module, variables, x):
  return str(jax.make_jaxpr(lambda x: module.apply(variables, x))(x))


def test_flax_implementation_is_flax_layer_norm():
  x, variables = _inputs_and_variables()
  flax_impl = layer_norm.LayerNorm(implementation="flax")
  np.testing.assert_array_equal(flax_impl.apply(variables, x),
                                nn.LayerNorm().apply(variables, x))
  assert _jaxpr(flax_impl, variables, x) == _jaxpr(nn.LayerNorm(), variables, x)


def test_matvec_means_are_matvecs_with_their_own_backward():
  x, variables = _inputs_and_variables()
  jaxpr = _jaxpr(layer_norm.LayerNorm(implementation="matvec"), variables, x)
  assert "custom_vjp" in jaxpr and "dot_general" in jaxpr


@pytest.mark.parametrize("backend, expected", [("cpu", "matvec"), ("gpu", "flax"),
                                               ("tpu", "flax")])
def test_auto_is_matvec_on_the_cpu_only(monkeypatch, backend, expected):
  monkeypatch.setattr(jax, "default_backend", lambda: backend)
  assert layer_norm.resolve("auto") == expected
  assert layer_norm.resolve("flax") == "flax"


def test_unknown_implementation_names_the_valid_ones():
  with pytest.raises(ValueError, match=r"'fused'; valid: auto, flax, matvec"):
    layer_norm.resolve("fused")


def test_other_configurations_fall_back_to_flax():
  """Normalising over other axes is flax's own code, parameters included."""
  x, _ = _inputs_and_variables()
  ours = layer_norm.LayerNorm(reduction_axes=(1, 2), feature_axes=-1,
                              implementation="matvec")
  theirs = nn.LayerNorm(reduction_axes=(1, 2), feature_axes=-1)
  variables = theirs.init(jax.random.key(0), x)
  np.testing.assert_array_equal(ours.apply(variables, x), theirs.apply(variables, x))
