"""The ResNets' convolution and max pool implementations agree with XLA's."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import models
from vit_jax.models import build, conv


def values_and_gradients(function, *args):
  return jax.jit(jax.value_and_grad(lambda *a: jnp.sum(function(*a) ** 2),
                                    argnums=tuple(range(len(args)))))(*args)


@pytest.mark.parametrize("kernel_size, strides, padding", [
    (1, 1, "VALID"), (1, 2, "VALID"), (1, 2, "SAME"), (3, 2, ((1, 1), (1, 1))),
    (7, 2, "SAME")])
def test_matrix_convolution_equals_xlas_with_its_gradients(kernel_size, strides, padding):
  keys = jax.random.split(jax.random.key(0), 2)
  x = jax.random.normal(keys[0], (2, 9, 9, 16))
  kernel = jax.random.normal(keys[1], (kernel_size, kernel_size, 16, 24))
  (value, grads), (reference, reference_grads) = (
      values_and_gradients(lambda x, k, impl=impl: conv.conv(
          x, k, strides=strides, padding=padding, implementation=impl), x, kernel)
      for impl in ("matrix", "xla"))
  np.testing.assert_allclose(value, reference, rtol=1e-5)
  for grad, reference_grad in zip(grads, reference_grads):
    np.testing.assert_allclose(grad, reference_grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("padding", ["SAME", "VALID", ((1, 1), (1, 1))])
def test_slice_max_pool_equals_xlas_with_its_gradient(padding):
  x = jax.random.normal(jax.random.key(1), (2, 10, 11, 4))  # no ties
  (value, grad), (reference, reference_grad) = (
      values_and_gradients(lambda x, impl=impl: conv.max_pool(
          x, window=3, strides=2, padding=padding, implementation=impl), x)
      for impl in ("matrix", "xla"))
  np.testing.assert_array_equal(value, reference)
  np.testing.assert_allclose(grad[0], reference_grad[0], rtol=1e-6)


@pytest.mark.parametrize("variant, overrides", [
    ("R26x1", dict(block_sizes=(1, 1))),
    ("R26x1+Ti/8", dict(resnet_blocks=(1, 1), hidden_size=32, num_layers=1,
                        mlp_dim=64, num_heads=2))])
def test_both_implementations_give_a_model_the_same_loss_and_gradients(variant, overrides):
  def run(implementation):
    model = models.get_model(variant, num_classes=10, conv_implementation=implementation,
                             **overrides)
    params = build.init_params(model, 32, seed=0)
    images = jax.random.normal(jax.random.key(2), (2, 32, 32, 3))
    return values_and_gradients(
        lambda p: model.apply({"params": p}, images, train=False), params)

  (loss, grads), (reference, reference_grads) = run("matrix"), run("xla")
  np.testing.assert_allclose(loss, reference, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5),
               grads, reference_grads)


def test_an_unknown_implementation_names_the_valid_ones():
  with pytest.raises(ValueError, match=r"unknown conv_implementation 'fast'; valid: "
                                       r"auto, xla, matrix"):
    build.init_params(models.get_model("R26x1", num_classes=2, conv_implementation="fast"),
                      32, seed=0)
