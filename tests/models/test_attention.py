"""Tests for vit_jax.models.attention: each implementation computes the same thing."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpu_mark import needs_a_gpu
from vit_jax.models import attention

# ViT-like: a class token makes the token count odd; several heads.
SHAPE = (3, 17, 4, 8)  # (batch, tokens, heads, head_dim)


def qkv(dtype=jnp.float32, scale=3.0):
  keys = jax.random.split(jax.random.key(0), 3)
  # Large enough logits that the softmax is far from uniform.
  return [(scale * jax.random.normal(k, SHAPE)).astype(dtype) for k in keys]


def reference(q, k, v):
  """Textbook attention, in float64 numpy."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  logits = np.einsum('bqhd,bkhd->bhqk', q, k) / np.sqrt(q.shape[-1])
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  return np.einsum('bhqk,bkhd->bqhd', weights, v)


@pytest.mark.parametrize('implementation', ['dot_product_attention', 'head_major'])
def test_matches_textbook_attention(implementation):
  q, k, v = qkv()
  got = jax.jit(lambda *a: attention.attention(*a, implementation=implementation))(q, k, v)
  assert got.shape == SHAPE and got.dtype == jnp.float32
  np.testing.assert_allclose(got, reference(q, k, v), rtol=1e-5, atol=1e-5)


def textbook_attention(q, k, v):
  """`reference` in jax.numpy, to differentiate in float64 (jax.nn's
  attention computes its softmax in float32 whatever the inputs)."""
  logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) / np.sqrt(q.shape[-1])
  return jnp.einsum('bhqk,bkhd->bqhd', jax.nn.softmax(logits, axis=-1), v)


def test_head_major_gradients_match_float64_autodiff_as_the_library_kernels_do():
  """The hand-written backward pass is as close to the exact gradients (autodiff
  of textbook attention in float64) as JAX's autodiff of jax.nn's attention.

  The float32 gradients are off by 2e-7 to 4e-7 of their largest magnitude
  (head-major) and 2e-7 to 8e-7 (jax.nn's) on AMD EPYC with jax 0.10.2;
  compared with each other element by element, their rounding alone broke
  a fixed tolerance.
  """
  q, k, v = qkv()
  cotangent = jax.random.normal(jax.random.key(1), SHAPE)

  def grads(attend, dtype):
    loss = lambda *a: jnp.sum(attend(*a) * cotangent.astype(dtype))
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*(x.astype(dtype) for x in (q, k, v)))

  with jax.enable_x64(True):
    exact = [np.asarray(g) for g in grads(textbook_attention, jnp.float64)]
    assert exact[0].dtype == np.float64
  for implementation in ('head_major', 'dot_product_attention'):
    attend = functools.partial(attention.attention, implementation=implementation)
    for got, want, name in zip(grads(attend, jnp.float32), exact, 'qkv'):
      assert got.dtype == jnp.float32
      scale = np.abs(want).max()
      assert scale > 0.1, name  # a real gradient
      error = np.abs(np.asarray(got, np.float64) - want).max() / scale
      assert error < 4e-6, (implementation, name, error)


def test_head_major_in_bfloat16_keeps_the_dtype_and_the_value():
  q, k, v = qkv(jnp.bfloat16, scale=1.0)
  out, vjp = jax.vjp(
      lambda *a: attention.attention(*a, implementation='head_major'), q, k, v)
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(out.astype(np.float32), reference(q, k, v),
                             rtol=3e-2, atol=3e-2)
  grads = vjp(jnp.ones(SHAPE, jnp.bfloat16))
  assert [g.dtype for g in grads] == [jnp.bfloat16] * 3


def test_auto_picks_head_major_on_this_cpu():
  assert jax.default_backend() == 'cpu'
  assert attention.resolve('auto') == 'head_major'


@pytest.mark.parametrize('backend, expected', [
    ('gpu', 'cudnn'), ('tpu', 'dot_product_attention')])
def test_auto_by_backend_and_names_as_given(monkeypatch, backend, expected):
  monkeypatch.setattr(jax, 'default_backend', lambda: backend)
  assert attention.resolve('auto') == expected
  for name in ('cudnn', 'dot_product_attention', 'head_major'):
    assert attention.resolve(name) == name


def auto_on_a_gpu(monkeypatch, caplog, dtype):
  """`auto` as a GPU host runs it, and what it logged about cuDNN."""
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  attention._warn_once.cache_clear()
  q, k, v = qkv(dtype, scale=1.0)
  with caplog.at_level('WARNING'):
    got = jax.jit(lambda *a: attention.attention(*a, implementation='auto'))(q, k, v)
  np.testing.assert_allclose(np.asarray(got, np.float32), reference(q, k, v),
                             rtol=3e-2, atol=3e-2)
  return [r.getMessage() for r in caplog.records if 'cuDNN' in r.getMessage()]


def test_auto_on_a_gpu_falls_back_to_xla_where_cudnn_refuses(monkeypatch, caplog):
  """This jaxlib has no cuDNN: a bfloat16 q asks for it and is refused."""
  refusals = auto_on_a_gpu(monkeypatch, caplog, jnp.bfloat16)
  assert len(refusals) == 1, refusals
  assert 'cuDNN is not detected' in refusals[0] and str(SHAPE) in refusals[0]
  assert 'dot_product_attention' in refusals[0]


def test_auto_on_a_gpu_runs_float32_on_xla_without_asking_cudnn(monkeypatch, caplog):
  assert auto_on_a_gpu(monkeypatch, caplog, jnp.float32) == []


def test_cudnn_by_name_is_an_error_where_it_cannot_run():
  with pytest.raises(ValueError, match=r"attention_implementation 'cudnn' cannot run "
                                       r"q, k, v of shape \(3, 17, 4, 8\) and dtype "
                                       r"float32: cuDNN is not detected.*bfloat16.*"
                                       r"'dot_product_attention'"):
    attention.attention(*qkv(), implementation='cudnn')


def test_unknown_implementation_names_the_valid_ones():
  with pytest.raises(ValueError, match=r"'flash'.*valid: auto, cudnn, "
                                       r"dot_product_attention, head_major"):
    attention.attention(*qkv(), implementation='flash')


def test_masked_padding_leaves_the_real_tokens_as_they_were():
  """Tokens past ``valid_tokens`` (here junk) change neither values nor gradients."""
  q, k, v = qkv()
  junk = jax.random.normal(jax.random.key(5), (SHAPE[0], 1) + SHAPE[2:])
  padded = [jnp.concatenate([x, 10 * junk], axis=1) for x in (q, k, v)]
  cotangent = jax.random.normal(jax.random.key(6), SHAPE)

  def loss(valid_tokens):
    def of(*a):
      out = attention.attention(*a, implementation='dot_product_attention',
                                valid_tokens=valid_tokens)
      return jnp.sum(out[:, :SHAPE[1]] * cotangent)
    return of

  want, want_grads = jax.jit(jax.value_and_grad(loss(None), argnums=(0, 1, 2)))(q, k, v)
  got, got_grads = jax.jit(jax.value_and_grad(loss(SHAPE[1]), argnums=(0, 1, 2)))(*padded)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  for g, w in zip(got_grads, want_grads):
    np.testing.assert_allclose(g[:, :SHAPE[1]], w, rtol=1e-4, atol=1e-5)
  # The pad's key and value feed nothing: no gradient reaches them.
  np.testing.assert_array_equal(got_grads[1][:, SHAPE[1]:], 0)
  np.testing.assert_array_equal(got_grads[2][:, SHAPE[1]:], 0)
  with pytest.raises(ValueError, match="'head_major' cannot mask padded tokens"):
    attention.attention(*padded, implementation='head_major', valid_tokens=SHAPE[1])


def test_padding_once_where_the_attention_can_mask_it():
  assert attention.pads_once('once', 'dot_product_attention')
  assert attention.pads_once('once', 'cudnn')
  assert not attention.pads_once('once', 'auto')  # head_major on this CPU: no padding
  assert not attention.pads_once('per_attention', 'dot_product_attention')
  with pytest.raises(ValueError, match="unknown token_padding 'twice'; valid: "
                                       "per_attention, once"):
    attention.pads_once('twice', 'auto')


@needs_a_gpu
@pytest.mark.parametrize('shape', [SHAPE, (2, 197, 12, 64)])  # ViT-B/16 at 224 px
def test_cudnn_on_a_gpu_matches_textbook_attention_and_xla_gradients(shape):
  """The fused kernel against float64 numpy, and its backward pass against XLA's."""
  keys = jax.random.split(jax.random.key(0), 4)
  q, k, v, cotangent = [jax.device_put(jax.random.normal(key, shape, jnp.bfloat16),
                                       jax.devices('gpu')[0]) for key in keys]

  def value_and_grads(implementation):
    def loss(*a):
      out = attention.attention(*a, implementation=implementation)
      return jnp.sum(out.astype(jnp.float32) * cotangent), out
    (_, out), grads = jax.jit(jax.value_and_grad(
        loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    return out, grads

  out, grads = value_and_grads('cudnn')
  assert out.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(out, np.float32), reference(q, k, v),
                             rtol=2e-2, atol=2e-2)
  _, xla_grads = value_and_grads('dot_product_attention')
  for got, want, name in zip(grads, xla_grads, 'qkv'):
    want = np.asarray(want, np.float32)
    assert np.abs(want).max() > 0.1, name  # a real gradient
    np.testing.assert_allclose(np.asarray(got, np.float32), want,
                               rtol=5e-2, atol=5e-2 * np.abs(want).max(), err_msg=name)


@needs_a_gpu
def test_cudnn_on_a_gpu_runs_an_odd_count_unpadded_and_masks_the_encoders_pad():
  """Inference at 197 tokens without a copy; 198 with the last masked, as 197."""
  shape = (2, 197, 12, 64)
  q, k, v = [jax.device_put(jax.random.normal(key, shape, jnp.bfloat16),
                            jax.devices('gpu')[0])
             for key in jax.random.split(jax.random.key(0), 3)]
  unpadded = jax.jit(lambda *a: attention.attention(
      *a, implementation='cudnn', pad_per_call=False))(q, k, v)
  np.testing.assert_allclose(np.asarray(unpadded, np.float32), reference(q, k, v),
                             rtol=2e-2, atol=2e-2)
  pad = lambda x: jnp.pad(x, ((0, 0), (0, 1), (0, 0), (0, 0)), constant_values=3.0)
  masked = jax.jit(lambda *a: attention.attention(
      *a, implementation='cudnn', valid_tokens=197))(*map(pad, (q, k, v)))
  np.testing.assert_allclose(np.asarray(masked[:, :197], np.float32), reference(q, k, v),
                             rtol=2e-2, atol=2e-2)
