"""Tests for vit_jax.models: checkpoint layout, numerics and error messages.

Full-size models are only traced (jax.eval_shape), never materialised, so the
golden parameter counts cost no memory; numerics use a tiny model.
"""
import collections
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn
import pytest
from flax import traverse_util

from vit_jax import models
from vit_jax.models import dense, dropout, layer_norm, patch_embedding, vit

TINY = dict(hidden_size=32, num_layers=2, mlp_dim=64, num_heads=4)


def abstract_params(model, height=224, width=224):
  """Parameter shapes of `model` without allocating them."""
  spec = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False), spec)
  return variables['params']


def flat_shapes(params):
  return {'/'.join(k): tuple(v.shape)
          for k, v in traverse_util.flatten_dict(params).items()}


def tiny_model(**overrides):
  return models.get_model('B/8', num_classes=10, **{**TINY, **overrides})


def images(height=16, width=16, batch=2, seed=0):
  return jax.random.uniform(jax.random.key(seed), (batch, height, width, 3),
                            minval=-1.0, maxval=1.0)


@functools.partial(jax.jit, static_argnames='model')
def init(model, x):
  """Compiled once per (model, shape): compiling is what costs on CPU."""
  return model.init(jax.random.key(1), x, train=False)['params']


@functools.partial(jax.jit, static_argnames=('model', 'train'))
def _apply(model, params, x, key, train):
  return model.apply({'params': params}, x, train=train, rngs={'dropout': key})


def apply(model, params, x, *, train=False, seed=0):
  """Forward pass, compiled once per (model, train, shapes)."""
  return _apply(model, params, x, jax.random.key(seed), train)


def randomize_head(params, seed=2):
  """The head is zero-initialised, which would hide every difference in logits."""
  head = params['head']
  kernel = 0.1 * jax.random.normal(jax.random.key(seed), head['kernel'].shape)
  return {**params, 'head': {**head, 'kernel': kernel}}


@pytest.fixture(scope='module')
def tiny_params():
  """Shared by every tiny variant with the same tree (dtype, dropout, remat)."""
  return randomize_head(init(tiny_model(), images()))


@pytest.mark.parametrize('variant,param_count', [
    ('Ti/16', 5_717_416),
    ('S/16', 22_050_664),
    ('B/16', 86_567_656),
    ('B/32', 88_224_232),
    ('L/16', 304_326_632),
    ('H/14', 632_045_800),
])
def test_golden_parameter_counts(variant, param_count):
  params = abstract_params(models.get_model(variant, num_classes=1000))
  count = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
  assert count == param_count


def test_b16_checkpoint_names_and_shapes():
  model = models.get_model('B/16', num_classes=1000, representation_size=768)
  shapes = flat_shapes(abstract_params(model))
  block = 'Transformer/encoderblock_0'
  attn = f'{block}/MultiHeadDotProductAttention_1'
  expected = {
      'embedding/kernel': (16, 16, 3, 768),
      'embedding/bias': (768,),
      'cls': (1, 1, 768),
      'Transformer/posembed_input/pos_embedding': (1, 197, 768),
      f'{block}/LayerNorm_0/scale': (768,),
      f'{block}/LayerNorm_0/bias': (768,),
      f'{attn}/query/kernel': (768, 12, 64),
      f'{attn}/query/bias': (12, 64),
      f'{attn}/key/kernel': (768, 12, 64),
      f'{attn}/key/bias': (12, 64),
      f'{attn}/value/kernel': (768, 12, 64),
      f'{attn}/value/bias': (12, 64),
      f'{attn}/out/kernel': (12, 64, 768),
      f'{attn}/out/bias': (768,),
      f'{block}/LayerNorm_2/scale': (768,),
      f'{block}/LayerNorm_2/bias': (768,),
      f'{block}/MlpBlock_3/Dense_0/kernel': (768, 3072),
      f'{block}/MlpBlock_3/Dense_0/bias': (3072,),
      f'{block}/MlpBlock_3/Dense_1/kernel': (3072, 768),
      f'{block}/MlpBlock_3/Dense_1/bias': (768,),
      'Transformer/encoder_norm/scale': (768,),
      'Transformer/encoder_norm/bias': (768,),
      'pre_logits/kernel': (768, 768),
      'pre_logits/bias': (768,),
      'head/kernel': (768, 1000),
      'head/bias': (1000,),
  }
  for name, shape in expected.items():
    assert shapes[name] == shape, name
  per_block = {k.split('/', 2)[2] for k in shapes if k.startswith(f'{block}/')}
  assert len(per_block) == 16
  for i in range(12):
    for rest in per_block:
      assert f'Transformer/encoderblock_{i}/{rest}' in shapes
  assert len(shapes) == len(expected) - 16 + 12 * 16


@pytest.mark.parametrize('classifier,tokens', [('token', 5), ('gap', 4)])
def test_classifier_token_vs_gap(classifier, tokens):
  model = tiny_model(classifier=classifier)
  x = images()
  params = init(model, x)
  assert params['Transformer']['posembed_input']['pos_embedding'].shape == (1, tokens, 32)
  assert ('cls' in params) == (classifier == 'token')
  assert 'pre_logits' not in params
  logits = apply(model, randomize_head(params), x)
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))


def test_non_square_input():
  model = models.get_model('S/16', num_classes=5, **TINY)
  x = images(32, 48)
  params = init(model, x)
  posemb = params['Transformer']['posembed_input']['pos_embedding']
  assert posemb.shape == (1, 1 + 2 * 3, 32)
  assert apply(model, params, x).shape == (2, 5)


def test_bf16_compute_with_f32_params(tiny_params):
  x = images()
  bf16_model = tiny_model(dtype='bfloat16', param_dtype='float32')
  shapes = abstract_params(bf16_model, 16, 16)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(shapes))
  want = apply(tiny_model(), tiny_params, x)
  got = apply(bf16_model, tiny_params, x)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, atol=5e-2, rtol=5e-2)
  assert not np.array_equal(got, want)  # bf16 really was used


@pytest.mark.parametrize('policy', models.REMAT_POLICIES)
def test_remat_matches_plain(tiny_params, policy):
  x, params = images(), tiny_params
  plain, rematted = tiny_model(), tiny_model(remat=True, remat_policy=policy)
  assert flat_shapes(abstract_params(rematted, 16, 16)) == flat_shapes(params)

  np.testing.assert_allclose(apply(rematted, params, x), apply(plain, params, x),
                             rtol=1e-6, atol=1e-6)

  def grads(model):
    loss = lambda p: jnp.sum(model.apply({'params': p}, x, train=False) ** 2)
    return jax.jit(jax.grad(loss))(params)

  grads_plain, grads_remat = grads(plain), grads(rematted)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               grads_remat, grads_plain)


@pytest.mark.parametrize('dense_implementation', ['flax', 'matrix'])
def test_remat_policy_decides_which_matmuls_the_backward_pass_redoes(dense_implementation):
  """Matmuls in the lowered gradient, against the same model without remat.

  ``dots_saveable`` keeps every matmul's output, so none is redone;
  ``dots_with_no_batch_dims_saveable`` redoes the attention's two batched
  matmuls in each block; ``nothing_saveable`` redoes those and the
  projections and the MLP's. The policies see through the Dense layers'
  hand-written backward pass (`vit_jax/models/dense.py`) alike.
  """
  x, params = images(), init(tiny_model(), images())

  def matmuls(**overrides):
    model = tiny_model(layer_norm_implementation='flax',
                       dense_implementation=dense_implementation, **overrides)
    loss = lambda p: jnp.sum(model.apply({'params': p}, x, train=False) ** 2)
    return jax.jit(jax.grad(loss)).lower(params).as_text().count('stablehlo.dot_general')

  plain = matmuls()
  kept = {policy: matmuls(remat=True, remat_policy=policy) for policy in models.REMAT_POLICIES}
  assert kept['dots_saveable'] == plain
  assert kept['dots_with_no_batch_dims_saveable'] == plain + 2 * TINY['num_layers']
  assert kept['nothing_saveable'] > plain + 2 * TINY['num_layers']


@pytest.mark.parametrize('attention_dropout_rate,remat', [(0.0, False), (0.1, True)])
def test_dropout_only_in_training(tiny_params, attention_dropout_rate, remat):
  model = tiny_model(dropout_rate=0.1, attention_dropout_rate=attention_dropout_rate,
                     remat=remat)
  x, params = images(), tiny_params

  eval_a = apply(model, params, x, seed=0)
  np.testing.assert_array_equal(eval_a, apply(model, params, x, seed=1))
  train_0 = apply(model, params, x, train=True, seed=0)
  np.testing.assert_array_equal(train_0, apply(model, params, x, train=True, seed=0))
  assert not np.allclose(train_0, apply(model, params, x, train=True, seed=1))
  assert not np.allclose(train_0, eval_a)


def test_attention_paths_agree(tiny_params):
  """The explicit softmax path (dropout rate 1e-9 ~ none) equals the fused one."""
  x, params = images(), tiny_params
  model = tiny_model(attention_dropout_rate=1e-9)
  fused = apply(model, params, x)
  explicit = apply(model, params, x, train=True)
  np.testing.assert_allclose(explicit, fused, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('field, implementation, reference', [
    ('attention_implementation', 'head_major', 'dot_product_attention'),
    ('layer_norm_implementation', 'matvec', 'flax'),
    ('dense_implementation', 'matrix', 'flax'),
])
def test_kernel_implementations_agree(tiny_params, field, implementation, reference):
  """Logits and parameter gradients do not depend on the attention, LayerNorm or Dense kernel."""
  x, params = images(), tiny_params

  def logits_and_grads(name):
    model = tiny_model(**{field: name})
    loss = lambda p: jnp.sum(jnp.tanh(model.apply({'params': p}, x, train=False)))
    return apply(model, params, x), jax.jit(jax.grad(loss))(params)

  logits, grads = logits_and_grads(implementation)
  want_logits, want_grads = logits_and_grads(reference)
  np.testing.assert_allclose(logits, want_logits, rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               grads, want_grads)


@pytest.mark.parametrize('field, name, message', [
    ('attention_implementation', 'flash', r"'flash'.*valid: auto, cudnn, dot_product_attention"),
    ('layer_norm_implementation', 'fused',
     r"layer_norm_implementation 'fused'.*valid: auto, flax, matvec"),
    ('dense_implementation', 'fused', r"dense_implementation 'fused'.*valid: auto, flax, matrix"),
    ('gelu', 'erf', r"unknown gelu 'erf'; valid: tanh, exact"),
    ('remat_policy', 'everything',
     r"unknown remat_policy 'everything'; valid: nothing_saveable, dots_saveable, "
     r"dots_with_no_batch_dims_saveable"),
])
def test_unknown_model_choice_names_the_valid_ones(field, name, message):
  """Even with remat off, so that a misspelt policy fails before a long run."""
  model = tiny_model(**{field: name})
  with pytest.raises(ValueError, match=message):
    init(model, images())


def test_the_exact_gelu_is_the_erf_form_and_moves_the_logits_slightly(tiny_params):
  mlp = vit.MlpBlock(mlp_dim=64, dropout_rate=0.0, compute=vit.ComputeSettings(
      dtype=jnp.float32, param_dtype=jnp.float32, gelu='exact', layer_norm_epsilon=1e-6,
      attention_implementation='auto', token_padding='per_attention',
      layer_norm_implementation='auto', dense_implementation='flax'))
  x = jax.random.normal(jax.random.key(0), (2, 3, 32))
  params = mlp.init(jax.random.key(1), x, train=False)['params']
  dense = lambda name, y: y @ params[name]['kernel'] + params[name]['bias']
  hidden = dense('Dense_0', x)
  want = dense('Dense_1', 0.5 * hidden * (1 + jax.scipy.special.erf(hidden / np.sqrt(2))))
  np.testing.assert_allclose(mlp.apply({'params': params}, x, train=False), want,
                             rtol=1e-5, atol=1e-6)

  tanh = apply(tiny_model(), tiny_params, images())
  exact = apply(tiny_model(gelu='exact'), tiny_params, images())
  assert 0 < np.abs(exact - tanh).max() < 1e-2 * np.abs(tanh).max()


def test_initial_values_are_the_original_vits():
  """What a from-scratch run starts from, vision_transformer's initialisers:
  position embeddings normal(0.02), a zero class token and head,
  Xavier-uniform Dense kernels and normal(1e-6) MLP biases."""
  params = init(tiny_model(), images())
  table = params['Transformer']['posembed_input']['pos_embedding']
  assert table.shape == (1, 5, 32)
  assert 0.015 < np.std(table) < 0.025 and abs(np.mean(table)) < 0.005
  np.testing.assert_array_equal(params['cls'], 0.0)
  np.testing.assert_array_equal(params['head']['kernel'], 0.0)
  mlp = params['Transformer']['encoderblock_0']['MlpBlock_3']['Dense_0']
  bound = np.sqrt(6 / (32 + 64))  # Xavier-uniform of a 32 -> 64 layer
  assert 0.9 * bound < np.abs(mlp['kernel']).max() <= bound
  assert 0 < np.std(mlp['bias']) < 1e-5


def test_head_init():
  model = tiny_model(head_bias_init=-10.0)
  x = images()
  params = init(model, x)
  np.testing.assert_array_equal(params['head']['kernel'], 0.0)
  np.testing.assert_array_equal(params['head']['bias'], -10.0)
  np.testing.assert_array_equal(apply(model, params, x), -10.0)


@pytest.mark.parametrize('module', [
    vit.ComputeSettings, vit.AddPositionEmbs, vit.MlpBlock,
    vit.MultiHeadDotProductAttention, vit.Encoder1DBlock, vit.Encoder,
    vit.VisionTransformer,
])
def test_model_settings_are_refused_positionally(module):
  """Rates, sizes and kernel names of like types cannot be swapped by position."""
  with pytest.raises(TypeError, match='positional argument'):
    module(64, 0.1)


def test_every_layer_gets_the_models_settings():
  """Each non-default setting reaches every layer it concerns, and no other's value does.

  All values differ from their defaults and from each other, so a setting
  dropped on the way down or passed in another's place shows here.
  """
  settings = dict(dtype=jnp.bfloat16, param_dtype=jnp.float16, gelu='exact',
                  layer_norm_epsilon=1e-5,
                  attention_implementation='head_major', token_padding='once',
                  layer_norm_implementation='flax', dense_implementation='matrix')
  rates = dict(dropout_rate=0.125, attention_dropout_rate=0.25)
  model = tiny_model(remat=True, remat_policy='dots_saveable', representation_size=8,
                     embedding_implementation='matmul', **settings, **rates)
  layers = {}

  def record(call, args, kwargs, context):
    if context.method_name == '__call__':
      layers['/'.join(context.module.path)] = context.module
    return call(*args, **kwargs)

  with nn.intercept_methods(record):
    params = jax.eval_shape(lambda x: model.init(
        {'params': jax.random.key(0), 'dropout': jax.random.key(1)}, x, train=True),
        jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32))['params']

  assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.float16)}
  assert layers['Transformer'].remat and layers['Transformer'].remat_policy == 'dots_saveable'
  want = vit.ComputeSettings(**{k: jnp.dtype(v) if 'dtype' in k else v
                                for k, v in settings.items()})
  kinds = collections.Counter()
  for path, layer in layers.items():
    if hasattr(layer, 'compute'):
      assert layer.compute == want, path
      kinds['compute'] += 1
    if isinstance(layer, patch_embedding.PatchEmbedding):
      assert layer.implementation == 'matmul', path
      kinds['embedding'] += 1
    if isinstance(layer, (nn.Dense, nn.DenseGeneral, patch_embedding.PatchEmbedding,
                          nn.LayerNorm)):
      want_dtype = jnp.float32 if path == 'head' else jnp.bfloat16
      assert (layer.dtype, layer.param_dtype) == (want_dtype, jnp.float16), path
      kinds['dtypes'] += 1
    if isinstance(layer, (nn.Dense, nn.DenseGeneral)) and path.startswith('Transformer/'):
      assert layer.dot_general is dense.matrix_dot_general, path
      kinds['dense'] += 1
    if isinstance(layer, layer_norm.LayerNorm):
      assert layer.implementation == 'flax', path
      kinds['layer_norm'] += 1
    if isinstance(layer, dropout.Dropout):
      want_rate = rates['attention_dropout_rate' if path.endswith('/attention_dropout')
                        else 'dropout_rate']
      assert layer.rate == want_rate, path
      kinds['dropout'] += 1
  blocks = TINY['num_layers']
  # compute: Encoder, posembed and per block the block, its attention and its MLP;
  # dtypes: embedding, pre_logits, head, the final LayerNorm and 8 per block;
  # dropout: after posembed and 4 per block.
  assert kinds == {'compute': 2 + 3 * blocks, 'dtypes': 4 + 8 * blocks, 'dense': 6 * blocks,
                   'layer_norm': 1 + 2 * blocks, 'dropout': 1 + 4 * blocks, 'embedding': 1}


@pytest.mark.parametrize('variant', ['X/16', 'B16', 'B/0', 'B/', 'b/16', 'B/16/2'])
def test_unknown_variant(variant):
  with pytest.raises(ValueError, match=rf"{variant!r}.*valid: Ti, S, B, L, H"):
    models.get_model(variant, num_classes=10)


def test_unknown_override():
  with pytest.raises(ValueError, match=r"'hiden_size'.*valid:.*hidden_size"):
    models.get_model('B/16', num_classes=10, hiden_size=8)


def test_dtype_strings_are_converted():
  model = models.get_model('B/16', num_classes=10, dtype='bfloat16',
                           param_dtype=jnp.float32)
  assert model.dtype == jnp.bfloat16 and model.param_dtype == jnp.float32


def test_image_not_divisible_by_patch():
  model = tiny_model()  # patch 8
  with pytest.raises(ValueError, match=r'height 12 and width 16.*patch size 8'):
    init(model, images(12, 16))
