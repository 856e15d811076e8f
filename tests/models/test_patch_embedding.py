"""The patch embedding as a matmul: the convolution's parameters, values and gradients."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from trees import assert_gradients_close
from vit_jax import models
from vit_jax.inference import export
from vit_jax.models import build, patch_embedding


def test_patchify_orders_patches_and_pixels_as_the_conv_kernel_flattens():
  # 4x6 image, 2x2 patches: pixel (row, col, channel) holds 100 row + 10 col + channel.
  rows, cols, channels = np.meshgrid(np.arange(4), np.arange(6), np.arange(3), indexing="ij")
  image = jnp.asarray(100 * rows + 10 * cols + channels)[None]
  patches = patch_embedding.patchify(image, 2)
  assert patches.shape == (1, 6, 12)
  # The grid's second patch (row 0, column 1) starts at pixel (0, 2).
  np.testing.assert_array_equal(
      patches[0, 1], [20, 21, 22, 30, 31, 32, 120, 121, 122, 130, 131, 132])
  # The last (row 1, column 2) starts at pixel (2, 4).
  np.testing.assert_array_equal(patches[0, 5, :3], [240, 241, 242])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_matmul_equals_flax_conv_in_values_and_gradients(dtype):
  """The same parameters as the `nn.Conv` the checkpoints were written from."""
  images = jax.random.normal(jax.random.key(0), (3, 32, 48, 3))
  conv = nn.Conv(16, (8, 8), strides=(8, 8), padding="VALID", dtype=dtype)
  embeddings = {name: patch_embedding.PatchEmbedding(
      hidden_size=16, patch_size=8, dtype=dtype, param_dtype=jnp.float32,
      implementation=name) for name in ("conv", "matmul")}
  params = conv.init(jax.random.key(1), images)
  for module in embeddings.values():  # the same initial values under the same key
    jax.tree.map(np.testing.assert_array_equal,
                 module.init(jax.random.key(1), images), params)
  params = jax.tree.map(lambda p: p + 0.1, params)  # a nonzero bias

  def loss(apply):
    return lambda p, x: jnp.sum(jnp.sin(apply(p, x).astype(jnp.float32)))

  want = conv.apply(params, images).reshape(3, 24, 16)
  want_grads = jax.grad(loss(lambda p, x: conv.apply(p, x).reshape(3, 24, 16)),
                        argnums=(0, 1))(params, images)
  # `conv` is flax's computation to the bit, so checkpoints train as before.
  tolerances = {"conv": dict(rtol=0, atol=0),
                "matmul": dict(rtol=2e-2, atol=2e-2) if dtype == "bfloat16"
                else dict(rtol=1e-5, atol=1e-5)}
  for name, module in embeddings.items():
    got = module.apply(params, images)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got.astype(jnp.float32), want.astype(jnp.float32),
                               **tolerances[name])
    got_grads = jax.grad(loss(module.apply), argnums=(0, 1))(params, images)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, **tolerances[name]),
                 got_grads, want_grads)


def test_vit_logits_and_gradients_do_not_depend_on_the_implementation():
  images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  labels = jax.nn.one_hot(jnp.array([1, 3]), 5)
  vits = {name: models.get_model("Ti/16", num_classes=5, hidden_size=32, num_layers=2,
                                 mlp_dim=64, num_heads=2, embedding_implementation=name)
          for name in ("conv", "matmul")}
  params = build.init_params(vits["conv"], 32, seed=1)
  # A nonzero head, so that every parameter has a gradient.
  params["head"]["kernel"] = jax.random.normal(jax.random.key(2), params["head"]["kernel"].shape)

  def loss(model):
    return lambda p: -jnp.sum(labels * jax.nn.log_softmax(
        model.apply({"params": p}, images, train=True)))

  logits = {name: export.model_logits(model, params, images) for name, model in vits.items()}
  np.testing.assert_allclose(logits["matmul"], logits["conv"], rtol=1e-5, atol=1e-5)
  grads = {name: jax.jit(jax.grad(loss(model)))(params) for name, model in vits.items()}
  assert_gradients_close(grads["matmul"], grads["conv"], relative=1e-5)


def test_a_bad_name_is_an_error_naming_the_field_and_the_choices():
  with pytest.raises(ValueError, match="unknown embedding_implementation 'fft'; "
                                       "valid: conv, matmul"):
    models.get_model("Ti/16", num_classes=5, embedding_implementation="fft").init(
        jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)
