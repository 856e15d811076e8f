"""Tests for BiT ResNet-v2 (vit_jax.models.bit) and the hybrids' ResNet stem.

Full-size models are only traced (jax.eval_shape); numerics use ResNets cut to
one or two stages. The comparisons with timm run where torch and timm are
installed and are skipped elsewhere.
"""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from torch_libraries import library
from vit_jax import models
from vit_jax.models import bit, npz, resnet_stem, std_conv


def abstract_params(model, size=224):
  spec = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), spec)['params']


def flat_shapes(params):
  return {'/'.join(k): tuple(v.shape) for k, v in traverse_util.flatten_dict(params).items()}


def count(params):
  return sum(math.prod(shape) for shape in flat_shapes(params).values())


def random_params(abstract, seed=0):
  """Every parameter random, the zero-initialised head and GroupNorm scales too.

  Kernels are drawn already standardised (zero mean, unit variance per output
  channel): the families' standardisations differ from timm's only in their
  epsilon, which then changes nothing visible.
  """
  rng = np.random.default_rng(seed)
  flat = {}
  for name, shape in flat_shapes(abstract).items():
    if len(shape) == 4 and not name.startswith(('embedding', 'resnet/head')):
      kernel = rng.standard_normal(shape)
      value = (kernel - kernel.mean((0, 1, 2))) / kernel.std((0, 1, 2))
    elif len(shape) == 1:
      base = 1.0 if name.endswith(('gamma', 'scale')) else 0.0
      value = base + 0.2 * rng.standard_normal(shape)
    else:
      value = 0.05 * rng.standard_normal(shape)
    flat[name] = value.astype(np.float32)
  return npz.unflatten(flat)


def images(size=32, batch=2, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch, size, size, 3))


@functools.partial(jax.jit, static_argnames='model')
def apply(model, params, x):
  return model.apply({'params': params}, x, train=False)


def tiny_bit(**overrides):
  """Two one-unit stages: every kind of BiT unit (projection, stride) in small."""
  return bit.get_model('R26x1', num_classes=10, **{'block_sizes': (1, 1), **overrides})


# --- Checkpoint layout -------------------------------------------------------


def bit_checkpoint_names(block_sizes):
  """The names a BiT .npz holds, as big_transfer's and timm's loaders read them."""
  names = {'resnet/root_block/standardized_conv2d/kernel', 'resnet/group_norm/gamma',
           'resnet/group_norm/beta', 'resnet/head/conv2d/kernel', 'resnet/head/conv2d/bias'}
  for stage, num_units in enumerate(block_sizes, 1):
    for unit in range(1, num_units + 1):
      prefix = f'resnet/block{stage}/unit{unit:02d}/'
      for part in 'abc':
        names |= {f'{prefix}{part}/standardized_conv2d/kernel',
                  f'{prefix}{part}/group_norm/gamma', f'{prefix}{part}/group_norm/beta'}
      if unit == 1:
        names.add(f'{prefix}a/proj/standardized_conv2d/kernel')
  return names


def hybrid_stem_checkpoint_names(block_sizes):
  """The stem's names in a hybrid ViT .npz, as timm's ViT loader reads them."""
  names = {'conv_root/kernel', 'gn_root/scale', 'gn_root/bias'}
  for stage, num_units in enumerate(block_sizes, 1):
    for unit in range(1, num_units + 1):
      prefix = f'block{stage}/unit{unit}/'
      for i in (1, 2, 3):
        names |= {f'{prefix}conv{i}/kernel', f'{prefix}gn{i}/scale', f'{prefix}gn{i}/bias'}
      if unit == 1:
        names |= {f'{prefix}conv_proj/kernel', f'{prefix}gn_proj/scale',
                  f'{prefix}gn_proj/bias'}
  return names


def test_bit_r50x1_names_and_shapes_are_the_published_checkpoints():
  shapes = flat_shapes(abstract_params(bit.get_model('R50x1', num_classes=21843)))
  assert set(shapes) == bit_checkpoint_names((3, 4, 6, 3))
  assert shapes['resnet/root_block/standardized_conv2d/kernel'] == (7, 7, 3, 64)
  assert shapes['resnet/block2/unit01/a/proj/standardized_conv2d/kernel'] == (1, 1, 256, 512)
  assert shapes['resnet/block2/unit01/b/standardized_conv2d/kernel'] == (3, 3, 128, 128)
  assert shapes['resnet/block4/unit03/c/group_norm/gamma'] == (512,)
  assert shapes['resnet/group_norm/beta'] == (2048,)
  assert shapes['resnet/head/conv2d/kernel'] == (1, 1, 2048, 21843)
  assert shapes['resnet/head/conv2d/bias'] == (21843,)


def test_hybrid_r50_b16_names_are_the_published_checkpoints():
  hybrid = flat_shapes(abstract_params(models.get_model('R50x1+B/16', num_classes=1000)))
  plain = flat_shapes(abstract_params(models.get_model('B/16', num_classes=1000)))
  assert set(hybrid) == hybrid_stem_checkpoint_names((3, 4, 9)) | set(plain)
  assert hybrid['conv_root/kernel'] == (7, 7, 3, 64)
  assert hybrid['block3/unit9/conv3/kernel'] == (1, 1, 256, 1024)
  # Patches are single cells of the stem's 1024-channel, stride-16 map.
  assert hybrid['embedding/kernel'] == (1, 1, 1024, 768)
  assert hybrid['Transformer/posembed_input/pos_embedding'] == (1, 197, 768)


# --- Parameter counts --------------------------------------------------------

# Counted with timm 1.0.31's resnetv2_*_bit at 1000 classes; timm registers no
# R26, so R26x1 is its ResNetV2(layers=(2, 2, 2, 2), width_factor=1,
# stem_type='fixed', conv_layer=StdConv2d) at 1000 classes.
@pytest.mark.parametrize('variant,param_count', [
    ('R26x1', 15_987_496),
    ('R50x1', 25_549_352),
    ('R50x3', 217_319_080),
    ('R101x1', 44_541_480),
    ('R101x3', 387_934_888),
    ('R152x2', 236_335_208),
    ('R152x4', 936_533_224),
])
def test_bit_parameter_count_equals_timms(variant, param_count):
  model = bit.get_model(variant, num_classes=1000)
  assert count(abstract_params(model, size=64)) == param_count


# Counted with timm 1.0.31 at 1000 classes: vit_base_r50_s16_224 and _384,
# vit_large_r50_s32_224, vit_small_r26_s32_224. Their heads are one Linear on
# the cls token, with no pre_logits, as ours without representation_size.
@pytest.mark.parametrize('variant,size,param_count', [
    ('R50x1+B/16', 224, 98_659_112),
    ('R50x1+B/16', 384, 98_950_952),
    ('R50x1+L/32', 224, 328_994_856),
    ('R26x1+S/32', 224, 36_431_912),
])
def test_hybrid_parameter_count_equals_timms(variant, size, param_count):
  model = models.get_model(variant, num_classes=1000)
  assert count(abstract_params(model, size=size)) == param_count


# --- get_model ---------------------------------------------------------------


def test_get_model_parses_depth_and_width():
  model = bit.get_model('R152x4', num_classes=5, dtype='bfloat16')
  assert (model.block_sizes, model.width_factor) == ((3, 8, 36, 3), 4)
  assert model.dtype == jnp.bfloat16
  assert bit.VARIANT_RE.match('R50x1') and not bit.VARIANT_RE.match('R50x1+B/16')


@pytest.mark.parametrize('variant', ['R34x1', 'R50x5', 'R50', 'B/16'])
def test_unknown_variant_names_it_and_the_valid_ones(variant):
  with pytest.raises(ValueError, match=rf"unknown BiT variant '{variant}'.*26, 50, 101, 152"):
    bit.get_model(variant, num_classes=10)


def test_unknown_override_names_it_and_the_valid_fields():
  with pytest.raises(ValueError, match=r"'patch_size'.*valid: num_classes, block_sizes"):
    bit.get_model('R50x1', num_classes=10, patch_size=16)


# --- Numerics ----------------------------------------------------------------


def test_bit_standardisation_gives_zero_mean_unit_variance_per_output_channel():
  kernel = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (3, 3, 16, 8))
  for standardize in std_conv.STANDARDIZATIONS.values():
    w = standardize(kernel)
    np.testing.assert_allclose(w.mean((0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(w.var((0, 1, 2)), 1, rtol=1e-4)


def test_std_conv_convolves_with_the_standardised_kernel():
  conv = std_conv.StdConv(features=8, kernel_size=3, padding='SAME', standardization='bit')
  x = images(size=8)
  params = jax.jit(conv.init)(jax.random.key(0), x)['params']
  expected = jax.lax.conv_general_dilated(
      x, std_conv.standardize_bit(params['kernel']), (1, 1), 'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(jax.jit(conv.apply)({'params': params}, x), expected, atol=1e-5)


def test_group_norm_normalises_each_group_of_channels_not_each_channel():
  # Groups of two channels, offset by +5 and -5 around the group's mean, and
  # each group at its own scale.
  offsets = jnp.tile(jnp.array([5.0, -5.0]), 32)
  group_scales = jnp.repeat(2.0 ** jnp.arange(32), 2)
  noise = jax.random.normal(jax.random.key(0), (2, 6, 6, 64))
  x = group_scales * (offsets + noise)
  y = bit.GroupNorm().apply({'params': {'gamma': jnp.ones(64), 'beta': jnp.zeros(64)}}, x)
  grouped = y.reshape(2, 6, 6, 32, 2)
  np.testing.assert_allclose(grouped.mean((1, 2, 4)), 0, atol=1e-4)
  np.testing.assert_allclose(grouped.var((1, 2, 4)), 1, rtol=1e-3)
  # A channel alone stays off centre: at about +-5 / sqrt(26) = +-0.98.
  np.testing.assert_allclose(np.abs(y.mean((1, 2))), 0.98, atol=0.05)


def test_bit_sows_the_pooled_features_the_head_reads():
  model = tiny_bit()
  logits, state = jax.eval_shape(
      lambda p, x: model.apply({'params': p}, x, train=False, mutable=['intermediates']),
      abstract_params(model, size=32), images())
  features, = state['intermediates']['features']
  assert features.shape == (2, 512) and features.dtype == jnp.float32
  assert logits.shape == (2, 10)


def test_remat_changes_no_gradient():
  model, x = tiny_bit(block_sizes=(1,)), images()
  params = random_params(abstract_params(model, size=32))

  def loss(p, m):
    return jnp.sum(m.apply({'params': p}, x, train=True) ** 2)

  plain = jax.jit(jax.grad(functools.partial(loss, m=model)))(params)
  remat = jax.jit(jax.grad(functools.partial(loss, m=tiny_bit(block_sizes=(1,), remat=True))))(
      params)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6),
               remat, plain)


def test_bfloat16_compute_gives_float32_logits_close_to_float32():
  params = random_params(abstract_params(tiny_bit(), size=32))
  full = apply(tiny_bit(), params, images())
  half = apply(tiny_bit(dtype='bfloat16'), params, images())
  assert half.dtype == jnp.float32
  np.testing.assert_allclose(half, full, rtol=0.1, atol=0.1 * np.abs(full).max())
  assert not np.array_equal(half, full)  # bfloat16 really was used


def test_group_norm_epsilon_is_bits_1e_5():
  """Groups of variance ~1e-5, where the epsilon is half the denominator:
  flax's default of 1e-6 would scale every output by ~1.35."""
  x = 3e-3 * jax.random.normal(jax.random.key(0), (2, 4, 4, 64))
  y = bit.GroupNorm().apply({'params': {'gamma': jnp.ones(64), 'beta': jnp.zeros(64)}}, x)
  grouped = np.asarray(x, np.float64).reshape(2, 4, 4, 32, 2)
  expected = ((grouped - grouped.mean((1, 2, 4), keepdims=True))
              / np.sqrt(grouped.var((1, 2, 4), keepdims=True) + 1e-5))
  np.testing.assert_allclose(y, expected.reshape(x.shape), rtol=1e-4, atol=1e-5)


# --- Against BiT written out in numpy -----------------------------------------


def numpy_std_conv(x, kernel, strides=1):
  """BiT's weight-standardised convolution of NHWC ``x`` by an HWIO ``kernel``,
  zero-padded by (k - 1) / 2 on every side, summed one kernel tap at a time."""
  kernel = ((kernel - kernel.mean((0, 1, 2)))
            / np.sqrt(kernel.var((0, 1, 2)) + 1e-10))
  k = kernel.shape[0]
  pad = (k - 1) // 2
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  out_h, out_w = (x.shape[1] - k) // strides + 1, (x.shape[2] - k) // strides + 1
  return sum(x[:, i:i + strides * (out_h - 1) + 1:strides,
               j:j + strides * (out_w - 1) + 1:strides] @ kernel[i, j]
             for i in range(k) for j in range(k))


def numpy_group_norm_relu(x, params):
  """GroupNorm (32 groups, epsilon 1e-5) with gamma and beta, then ReLU."""
  grouped = x.reshape(*x.shape[:3], 32, -1)
  grouped = ((grouped - grouped.mean((1, 2, 4), keepdims=True))
             / np.sqrt(grouped.var((1, 2, 4), keepdims=True) + 1e-5))
  return np.maximum(grouped.reshape(x.shape) * params['gamma'] + params['beta'], 0)


def numpy_bit(params, x):
  """big_transfer's ResNet-v2 forward pass in float64.

  Root: 7x7/2 conv, zero padding of 1, 3x3/2 max pool. A unit
  pre-activates its input (GroupNorm, ReLU); the first unit of a stage
  projects that activated input for the shortcut, the others add their
  input itself; 1x1, 3x3 (the first unit's with the stage's stride), 1x1
  convs, each after GroupNorm and ReLU. Then GroupNorm, ReLU, the spatial
  mean and the 1x1 head.
  """
  conv_of = lambda part: part['standardized_conv2d']['kernel']
  resnet = params['resnet']
  x = numpy_std_conv(x, conv_of(resnet['root_block']), 2)
  x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = (x.shape[1] - 3) // 2 + 1
  x = np.max([x[:, i:i + 2 * out - 1:2, j:j + 2 * out - 1:2]
              for i in range(3) for j in range(3)], axis=0)
  for stage in range(1, 5):
    for name, unit in sorted(resnet.get(f'block{stage}', {}).items()):
      strides = 2 if stage > 1 and name == 'unit01' else 1
      activated = numpy_group_norm_relu(x, unit['a']['group_norm'])
      shortcut = (numpy_std_conv(activated, conv_of(unit['a']['proj']), strides)
                  if 'proj' in unit['a'] else x)
      y = numpy_std_conv(activated, conv_of(unit['a']))
      y = numpy_std_conv(numpy_group_norm_relu(y, unit['b']['group_norm']), conv_of(unit['b']),
                         strides)
      y = numpy_std_conv(numpy_group_norm_relu(y, unit['c']['group_norm']), conv_of(unit['c']))
      x = y + shortcut
  pooled = numpy_group_norm_relu(x, resnet['group_norm']).mean((1, 2))
  head = resnet['head']['conv2d']
  return pooled @ head['kernel'][0, 0] + head['bias']


def test_tiny_bit_logits_equal_bit_written_out_in_numpy():
  """Where timm is not installed nothing else checks BiT's function: the
  stride in part b's 3x3 conv, symmetric (k - 1) / 2 padding, the root's max
  pool over zero padding, a projection of the activated input, the identity
  shortcut of a second unit, and GroupNorm + ReLU before the mean. Every
  kernel has mean 0.3 and std 0.05 per output channel, which the
  standardisation has to undo."""
  model = tiny_bit(block_sizes=(2, 1))
  flat = npz.flatten(random_params(abstract_params(model, size=32)))
  params = npz.unflatten({name: 0.3 + 0.05 * value
                          if value.ndim == 4 and not name.startswith('resnet/head') else value
                          for name, value in flat.items()})
  x = images()
  expected = numpy_bit(jax.tree.map(lambda a: np.asarray(a, np.float64), params),
                       np.asarray(x, np.float64))
  logits = apply(model, params, x)
  assert np.abs(expected).max() > 0.5  # the head reads something
  assert np.abs(logits - expected).max() <= 2e-5 * np.abs(expected).max()


# --- The hybrids' stem -------------------------------------------------------


class Stem(nn.Module):
  """The stem bound to a module of its own, as VisionTransformer binds it."""
  block_sizes: tuple

  @nn.compact
  def __call__(self, x):
    return resnet_stem.resnet_stem(x, block_sizes=self.block_sizes, width_factor=1,
                                   dtype=jnp.float32, param_dtype=jnp.float32)


def test_stem_parameters_land_at_the_top_of_the_callers_tree():
  stem = Stem(block_sizes=(1, 1))
  out, variables = jax.eval_shape(stem.init_with_output, jax.random.key(0), images(size=32))
  assert set(flat_shapes(variables['params'])) == hybrid_stem_checkpoint_names((1, 1))
  assert out.shape == (2, 4, 4, 512)  # stride 8, 4 x 128 channels


@pytest.mark.parametrize('block_sizes,stride', [
    ((3, 4, 9), 16), ((3, 4, 6, 3), 32), ((2, 2, 2, 2), 32), ((), 4)])
def test_stem_stride(block_sizes, stride):
  assert resnet_stem.stem_stride(block_sizes) == stride


def test_a_fresh_stem_unit_is_its_shortcut():
  # gn3 starts with zero scale, so a unit starts as relu(shortcut).
  unit = resnet_stem.ResidualUnit(features=32)
  x = images(size=8) @ jax.random.normal(jax.random.key(1), (3, 128))
  y, _ = jax.jit(unit.init_with_output)(jax.random.key(0), x)
  np.testing.assert_array_equal(y, nn.relu(x))


def test_hybrid_reads_the_stems_map_as_its_patch_grid():
  model = models.get_model('R26x1+Ti/16', num_classes=10, num_layers=1)
  assert model.resnet_blocks == (2, 2, 4)
  params = random_params(abstract_params(model, size=32))
  assert params['Transformer']['posembed_input']['pos_embedding'].shape == (1, 5, 192)
  assert apply(model, params, images(size=32)).shape == (2, 10)


# --- npz ---------------------------------------------------------------------


@pytest.mark.parametrize('variant', ['R50x1', 'R50x1+B/16'])
def test_npz_round_trip_is_bit_equal(variant, tmp_path):
  params = random_params(abstract_params(models.get_model(variant, num_classes=10)))
  npz.save_npz(params, tmp_path / 'params.npz')
  loaded = npz.load_npz(tmp_path / 'params.npz')
  assert flat_shapes(loaded) == flat_shapes(params)
  jax.tree.map(np.testing.assert_array_equal, loaded, params)


# --- Against timm (where torch and timm are installed) -----------------------


def timm_forward(model, x):
  """A timm model's logits for NHWC ``x`` (torch is NCHW)."""
  torch = library('torch')
  with torch.no_grad():
    return model(torch.from_numpy(np.array(x)).permute(0, 3, 1, 2)).numpy()


def test_bit_r50x1_logits_equal_timms(tmp_path):
  timm = library('timm')
  from timm.models import resnetv2
  model, x = bit.get_model('R50x1', num_classes=1000), images(size=64)
  params = random_params(abstract_params(model, size=64))
  npz.save_npz(params, tmp_path / 'bit.npz')
  reference = timm.create_model('resnetv2_50x1_bit', num_classes=1000).eval()
  resnetv2._load_weights(reference, str(tmp_path / 'bit.npz'))
  expected = timm_forward(reference, x)
  logits = apply(model, params, x)
  assert np.abs(logits - expected).max() <= 1e-4 * np.abs(expected).max()


def test_hybrid_r50_b16_logits_equal_timms(tmp_path):
  timm = library('timm')
  torch = library('torch')
  from timm.models import vision_transformer
  model = models.get_model('R50x1+B/16', num_classes=1000, num_layers=1)
  x = images(size=64)
  params = random_params(abstract_params(model, size=64))
  npz.save_npz(params, tmp_path / 'hybrid.npz')
  reference = timm.create_model('vit_base_r50_s16_224', num_classes=1000, img_size=64,
                                depth=1).eval()
  vision_transformer._load_weights(reference, str(tmp_path / 'hybrid.npz'))
  # Where timm's port computes otherwise: flax's GroupNorm epsilon and its
  # tanh-approximated GELU (the original model's), for timm's 1e-5 and erf.
  for module in reference.modules():
    if isinstance(module, torch.nn.GroupNorm):
      module.eps = 1e-6
  for block in reference.blocks:
    block.mlp.act = torch.nn.GELU(approximate='tanh')
  expected = timm_forward(reference, x)
  logits = apply(model, params, x)
  assert np.abs(logits - expected).max() <= 1e-4 * np.abs(expected).max()
