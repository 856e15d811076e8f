"""The encoder's one-off token padding: the unpadded model's logits and gradients."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpu_mark import needs_a_gpu
from trees import assert_gradients_close
from vit_jax import models
from vit_jax.models import vit
from vit_jax.models.build import init_params

TINY = dict(hidden_size=32, num_layers=2, mlp_dim=64, num_heads=4, patch_size=8)
# 16 px images in 8 px patches and a class token: 5 tokens, an odd count.
IMAGES = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1, maxval=1)
# Without a class token ('gap', 'map'), 24 px: 9 tokens.
WIDER = jax.random.uniform(jax.random.key(0), (2, 24, 24, 3), minval=-1, maxval=1)
LABELS = jax.nn.one_hot(jnp.array([1, 3]), 5)


def block_token_counts(model, params, images, *, train, rngs=None):
  """The token count that each block's call saw, call by call (traced, not run)."""
  counts = []

  def record(call, args, kwargs, context):
    if isinstance(context.module, vit.Encoder1DBlock) and context.method_name == '__call__':
      counts.append(args[0].shape[1])
    return call(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.apply({'params': params}, images, train=train, rngs=rngs))
  return counts


def logits_and_grads(model, params, images=IMAGES):
  @jax.jit
  def logits_and_grads_of(p):
    def loss(p):
      logits = model.apply({'params': p}, images, train=True)
      return -jnp.sum(LABELS * jax.nn.log_softmax(logits)), logits
    (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(p)
    return logits, grads
  return logits_and_grads_of(params)


@pytest.mark.parametrize('options', [
    dict(classifier='token'), dict(classifier='gap'), dict(classifier='map'),
    dict(scan=True), dict(remat=True),
    dict(classifier='gap', num_registers=2, layer_scale_init=0.5)])
def test_padding_once_gives_the_unpadded_logits_and_gradients(options):
  """XLA's attention masks the pad here as cuDNN's does on a GPU."""
  build = lambda padding: models.get_model(
      'Ti/8', num_classes=5, attention_implementation='dot_product_attention',
      token_padding=padding, **TINY, **options)
  padded, unpadded = build('once'), build('per_attention')  # the latter: none on a CPU
  images, tokens = (WIDER, 9) if options.get('classifier') in ('gap', 'map') else (IMAGES, 5)
  tokens += options.get('num_registers', 0)
  params = init_params(unpadded, images.shape[1], seed=1)
  params['head']['kernel'] = jax.random.normal(jax.random.key(2),
                                               params['head']['kernel'].shape)

  # (A scan traces its one block more than once.)
  assert set(block_token_counts(padded, params, images, train=True)) == {tokens + 1}
  assert set(block_token_counts(padded, params, images, train=False)) == {tokens}
  assert set(block_token_counts(unpadded, params, images, train=True)) == {tokens}

  want_logits, want_grads = logits_and_grads(unpadded, params, images)
  got_logits, got_grads = logits_and_grads(padded, params, images)
  np.testing.assert_allclose(got_logits, want_logits, rtol=1e-5, atol=1e-5)
  assert_gradients_close(got_grads, want_grads, relative=1e-5)


def test_no_padding_under_attention_dropout_which_computes_its_own_attention():
  model = models.get_model('Ti/8', num_classes=5, attention_implementation='dot_product_attention',
                           token_padding='once', attention_dropout_rate=0.1, **TINY)
  params = init_params(model, 16, seed=1)
  assert block_token_counts(model, params, IMAGES, train=True,
                            rngs={'dropout': jax.random.key(0)}) == [5, 5]


def test_head_major_attention_needs_and_gets_no_padding():
  model = models.get_model('Ti/8', num_classes=5, attention_implementation='head_major',
                           token_padding='once', **TINY)
  params = init_params(model, 16, seed=1)
  assert set(block_token_counts(model, params, IMAGES, train=True)) == {5}


@needs_a_gpu
def test_cudnn_on_a_gpu_padded_once_equals_padded_per_attention():
  """ViT-B's head_dim (64), bfloat16: the two paddings, one numbers."""
  build = lambda padding: models.get_model(
      'B/8', num_classes=5, num_layers=2, attention_implementation='cudnn',
      token_padding=padding, dtype='bfloat16', patch_size=8)
  once, per_attention = build('once'), build('per_attention')
  params = init_params(once, 16, seed=1)
  params['head']['kernel'] = jax.random.normal(jax.random.key(2),
                                               params['head']['kernel'].shape)
  want_logits, want_grads = logits_and_grads(per_attention, params)
  got_logits, got_grads = logits_and_grads(once, params)
  np.testing.assert_allclose(got_logits, want_logits, rtol=2e-2, atol=2e-2)
  assert_gradients_close(got_grads, want_grads, relative=2e-2)
