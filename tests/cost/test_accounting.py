"""Tests for vit_jax.cost.accounting: FLOP counts, peaks, and the run Accountant."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.cost import accounting


def vit_config(**overrides):
  """A stand-in for VisionTransformer: accounting only reads attributes."""
  config = dict(
    num_classes=1000,
    patch_size=16,
    hidden_size=768,
    num_layers=12,
    mlp_dim=3072,
    num_heads=12,
    classifier="token",
    representation_size=None,
    dtype="float32",
  )
  config.update(overrides)
  return types.SimpleNamespace(**config)


def test_vit_b16_forward_flops_match_hand_count():
  # ViT-B/16 at 224: 14 x 14 = 196 patches + cls token = N = 197 tokens,
  # D = 768, M = 4D = 3072, L = 12, 1000 classes. Multiply-add = 2 FLOPs.
  patch_embedding = 2 * 196 * (16 * 16 * 3) * 768  # 231_211_008
  qkv = 3 * 2 * 197 * 768 * 768  # 697_171_968
  scores = 2 * 197 * 197 * 768  # 29_805_312
  weighted_values = 2 * 197 * 197 * 768  # 29_805_312
  out_projection = 2 * 197 * 768 * 768  # 232_390_656
  mlp = 2 * 2 * 197 * 768 * 3072  # 1_859_125_248
  block = qkv + scores + weighted_values + out_projection + mlp
  # With M = 4D: 6ND^2 + 2ND^2 + 16ND^2 = 24ND^2, and 2N^2D + 2N^2D = 4N^2D.
  assert block == 24 * 197 * 768**2 + 4 * 197**2 * 768 == 2_907_909_120
  head = 2 * 768 * 1000  # 1_536_000
  total = patch_embedding + 12 * block + head
  assert total == 35_127_656_448  # ~17.6 G multiply-adds, as usually quoted

  assert (
    accounting.analytic_flops_per_example(vit_config(), 224, train=False)
    == total
  )
  assert (
    accounting.analytic_flops_per_example(vit_config(), (224, 224), train=False)
    == total
  )


def test_training_step_is_three_forward_passes():
  model = vit_config()
  forward = accounting.analytic_flops_per_example(model, 224, train=False)
  assert (
    accounting.analytic_flops_per_example(model, 224, train=True) == 3 * forward
  )


def test_gap_classifier_drops_exactly_the_class_token():
  token = accounting.analytic_flops_per_example(
    vit_config(classifier="token"), 224, train=False
  )
  gap = accounting.analytic_flops_per_example(
    vit_config(classifier="gap"), 224, train=False
  )
  # Per block, the one extra token adds 8D^2 + 4DM of linear-layer work and
  # 4D (197^2 - 196^2) of attention; patch embedding and head are unchanged.
  d, m = 768, 3072
  per_block = 8 * d * d + 4 * d * m + 4 * d * (197**2 - 196**2)
  assert token - gap == 12 * per_block == 184_356_864


def test_map_head_adds_a_probe_attending_over_the_patches():
  gap = accounting.analytic_flops_per_example(
    vit_config(classifier="gap"), 224, train=False
  )
  map_head = accounting.analytic_flops_per_example(
    vit_config(classifier="map"), 224, train=False
  )
  # ViT-B/16's 196 patch tokens (no class token), D = 768, M = 3072: the
  # probe's query and output projection, every token's key and value, one
  # row of scores and weighted values, and one token's MLP.
  n, d, m = 196, 768, 3072
  assert map_head - gap == 4 * d * d + 4 * n * d * d + 4 * n * d + 4 * d * m


@pytest.mark.parametrize("option", [dict(parallel_block=True), dict(qk_norm=True),
                                    dict(use_bias=False)])
def test_22b_block_options_leave_the_matmul_count_alone(option):
  plain = accounting.analytic_flops_per_example(vit_config(), 224, train=False)
  assert accounting.analytic_flops_per_example(
    vit_config(**option), 224, train=False) == plain


@pytest.mark.parametrize("classifier, tokens", [("token", 197), ("map", 196)])
def test_registers_are_tokens_of_every_block_but_not_pooled(classifier, tokens):
  """G = 4 registers: N + G tokens in each block; the MAP probe attends over the patches."""
  count = lambda **o: accounting.analytic_flops_per_example(
    vit_config(classifier=classifier, **o), 224, train=False)
  block = lambda n, d=768, m=3072: 8 * n * d * d + 4 * n * n * d + 4 * n * d * m
  assert count(num_registers=4) - count() == 12 * (block(tokens + 4) - block(tokens))
  assert count(layer_scale_init=1e-5) == count()


def test_the_distillation_token_is_a_token_of_every_block_with_a_head_of_its_own():
  count = lambda **o: accounting.analytic_flops_per_example(vit_config(**o), 224, train=False)
  block = lambda n, d=768, m=3072: 8 * n * d * d + 4 * n * n * d + 4 * n * d * m
  assert count(distillation_token=True) - count() == 12 * (block(198) - block(197)) + (
    2 * 768 * 1000)


def test_analytic_count_of_a_distilled_deit_is_within_3_percent_of_xla():
  from vit_jax import models

  xla, analytic = xla_and_analytic_forward_flops(models.get_model(
    "Ti/16", num_classes=1000, distillation_token=True))
  assert analytic == pytest.approx(xla, rel=0.03)


def test_pre_logits_adds_its_dense_layer_and_narrows_the_head():
  plain = accounting.analytic_flops_per_example(vit_config(), 224, train=False)
  with_pre_logits = accounting.analytic_flops_per_example(
    vit_config(representation_size=512), 224, train=False
  )
  assert with_pre_logits - plain == 2 * 768 * 512 + 2 * (512 - 768) * 1000


def test_compiled_flops_of_a_matmul():
  m, k, n = 256, 128, 64
  compiled = (
    jax.jit(jnp.matmul).lower(jnp.ones((m, k)), jnp.ones((k, n))).compile()
  )
  assert accounting.compiled_flops(compiled) == pytest.approx(
    2 * m * n * k, rel=0.03
  )


@pytest.mark.parametrize(
  "analysis, expected",
  [
    ({"flops": 10.0}, 10.0),
    ([{"flops": 10.0}, {"flops": 5.0}], 15.0),
    ([{"bytes accessed": 1.0}], None),
    (None, None),
  ],
)
def test_compiled_flops_reads_dicts_and_lists(analysis, expected):
  compiled = types.SimpleNamespace(cost_analysis=lambda: analysis)
  assert accounting.compiled_flops(compiled) == expected


def test_compiled_flops_is_none_when_the_backend_cannot_analyse():
  def unsupported():
    raise NotImplementedError

  compiled = types.SimpleNamespace(cost_analysis=unsupported)
  assert accounting.compiled_flops(compiled) is None


def tiny_vit_forward(params, images, *, patch, heads):
  """A pure-jnp ViT ('token' classifier): the computation the formula counts."""

  def layer_norm(x):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(x.var(-1, keepdims=True) + 1e-6)

  x = jax.lax.conv_general_dilated(
    images,
    params["embedding"],
    (patch, patch),
    "VALID",
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )
  batch, _, _, width = x.shape
  x = x.reshape(batch, -1, width)
  cls = jnp.broadcast_to(params["cls"], (batch, 1, width))
  x = jnp.concatenate([cls, x], axis=1)
  for block in params["blocks"]:
    y = layer_norm(x)
    q, k, v = (
      jnp.einsum("bnd,dhk->bnhk", y, block[name])
      for name in ("query", "key", "value")
    )
    scores = jnp.einsum("bqhk,bnhk->bhqn", q, k) / jnp.sqrt(q.shape[-1])
    attended = jnp.einsum("bhqn,bnhk->bqhk", jax.nn.softmax(scores), v)
    x = x + jnp.einsum("bqhk,hkd->bqd", attended, block["out"])
    y = jax.nn.gelu(layer_norm(x) @ block["mlp_in"])
    x = x + y @ block["mlp_out"]
  return layer_norm(x)[:, 0] @ params["head"]


def test_analytic_count_is_within_5_percent_of_xla_for_a_tiny_vit():
  model = vit_config(
    num_classes=10,
    patch_size=8,
    hidden_size=128,
    num_layers=2,
    mlp_dim=512,
    num_heads=4,
  )
  image_size, batch = 64, 2
  d, heads = model.hidden_size, model.num_heads
  shapes = {
    "embedding": (8, 8, 3, d),
    "cls": (1, 1, d),
    "head": (d, 10),
    "blocks": [
      {
        "query": (d, heads, d // heads),
        "key": (d, heads, d // heads),
        "value": (d, heads, d // heads),
        "out": (heads, d // heads, d),
        "mlp_in": (d, model.mlp_dim),
        "mlp_out": (model.mlp_dim, d),
      }
    ]
    * model.num_layers,
  }
  params = jax.tree.map(
    lambda shape: jax.ShapeDtypeStruct(shape, jnp.float32),
    shapes,
    is_leaf=lambda leaf: isinstance(leaf, tuple),
  )
  images = jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.float32)
  forward = jax.jit(lambda p, x: tiny_vit_forward(p, x, patch=8, heads=heads))

  xla = accounting.compiled_flops(forward.lower(params, images).compile())
  analytic = batch * accounting.analytic_flops_per_example(
    model, image_size, train=False
  )
  assert analytic == pytest.approx(xla, rel=0.05)


def test_resnet_forward_flops_match_hand_count():
  # One stage of one unit, width 64, at 32 x 32, 10 classes.
  model = types.SimpleNamespace(block_sizes=(1,), width_factor=1, num_classes=10)
  root = 2 * 16 * 16 * (7 * 7 * 3) * 64  # 7x7/2 to 16 x 16, then pooled to 8 x 8
  conv_a = 2 * 8 * 8 * 64 * 64
  conv_b = 2 * 8 * 8 * (3 * 3 * 64) * 64
  conv_c = 2 * 8 * 8 * 64 * 256
  projection = 2 * 8 * 8 * 64 * 256  # 64 channels in, 256 out
  head = 2 * 256 * 10
  total = root + conv_a + conv_b + conv_c + projection + head
  assert total == 14_259_200
  assert accounting.analytic_flops_per_example(model, 32, train=False) == total
  assert accounting.analytic_flops_per_example(model, 32, train=True) == 3 * total


def test_a_strided_unit_counts_its_first_conv_at_the_input_size():
  one_stage = types.SimpleNamespace(block_sizes=(1,), width_factor=1, num_classes=None)
  two_stages = types.SimpleNamespace(block_sizes=(1, 1), width_factor=1, num_classes=None)
  # Stage 2's unit: 256 -> 128 at 8 x 8, then 3x3/2, 1x1 and the projection
  # at 4 x 4.
  unit = (
    2 * 8 * 8 * 256 * 128
    + 2 * 4 * 4 * (3 * 3 * 128) * 128
    + 2 * 4 * 4 * 128 * 512
    + 2 * 4 * 4 * 256 * 512
  )
  assert accounting.analytic_flops_per_example(
    two_stages, 32, train=False
  ) - accounting.analytic_flops_per_example(one_stage, 32, train=False) == unit


def test_hybrid_adds_its_stem_and_embeds_the_stems_channels():
  plain = accounting.analytic_flops_per_example(vit_config(), 224, train=False)
  hybrid = accounting.analytic_flops_per_example(
    vit_config(resnet_blocks=(3, 4, 9), resnet_width=1), 224, train=False
  )
  stem, feature_map = accounting.resnet_stem_flops(
    224, 224, block_sizes=(3, 4, 9), width_factor=1
  )
  assert feature_map == (14, 14, 1024)
  # The same 196 patches, each one 1024-channel cell instead of 16 x 16 x 3.
  embedding_change = 2 * 196 * 1024 * 768 - 2 * 196 * (16 * 16 * 3) * 768
  assert hybrid - plain == stem + embedding_change


def test_a_hybrid_stem_of_the_root_alone_counts_the_root():
  """resnet_blocks=() is the 7x7 root and max pool (stride 4), not no stem."""
  plain = accounting.analytic_flops_per_example(
    vit_config(patch_size=8, hidden_size=32, num_layers=1, mlp_dim=64, num_heads=2), 32,
    train=False)
  root_only = accounting.analytic_flops_per_example(
    vit_config(patch_size=8, hidden_size=32, num_layers=1, mlp_dim=64, num_heads=2,
               resnet_blocks=(), resnet_width=1), 32, train=False)
  root = 2 * 16 * 16 * (7 * 7 * 3) * 64  # 32 px / 2, 64 channels
  # The same 16 patches, each 2 x 2 cells of 64 channels instead of 8 x 8 x 3.
  embedding_change = 2 * 16 * (2 * 2 * 64) * 32 - 2 * 16 * (8 * 8 * 3) * 32
  assert root_only - plain == root + embedding_change


def xla_and_analytic_forward_flops(model, image_size=224, batch=2):
  params = jax.eval_shape(
    lambda: model.init(
      jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)), train=False
    )
  )["params"]
  images = jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.float32)
  forward = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False))
  xla = accounting.compiled_flops(forward.lower(params, images).compile())
  return xla, batch * accounting.analytic_flops_per_example(model, image_size, train=False)


@pytest.mark.parametrize("variant", ["R50x1", "R50x1+B/16"])
def test_analytic_count_is_within_5_percent_of_xla_for_resnets(variant):
  from vit_jax import models

  xla, analytic = xla_and_analytic_forward_flops(models.get_model(variant, num_classes=1000))
  assert analytic == pytest.approx(xla, rel=0.05)


@pytest.mark.parametrize("classifier", ["token", "map"])
def test_analytic_count_of_registers_and_layer_scale_is_within_3_percent_of_xla(classifier):
  """Ti/16 with DINOv2's 4 registers and layer scale: 201 (or 200) tokens a block."""
  from vit_jax import models

  xla, analytic = xla_and_analytic_forward_flops(models.get_model(
    "Ti/16", num_classes=1000, classifier=classifier, num_registers=4, layer_scale_init=1e-5))
  assert analytic == pytest.approx(xla, rel=0.03)


@pytest.mark.parametrize(
  "device_kind, label, bf16_peak, fp32_peak, full_fp32_peak",
  [
    ("TPU v2", "TPU_v2", 22.5e12, 22.5e12, 22.5e12),
    ("TPU v3", "TPU_v3", 61.5e12, 61.5e12, 61.5e12),
    ("TPU v4", "TPU_v4", 275e12, 275e12, 275e12),
    ("TPU v5 lite", "TPU_v5e", 197e12, 197e12, 197e12),
    ("TPU v5e", "TPU_v5e", 197e12, 197e12, 197e12),
    ("TPU v5", "TPU_v5p", 459e12, 459e12, 459e12),
    ("TPU v5p", "TPU_v5p", 459e12, 459e12, 459e12),
    ("TPU v6 lite", "TPU_v6e", 918e12, 918e12, 918e12),
    # GPUs run float32 matmuls as TF32 at JAX's default precision.
    ("NVIDIA A100-SXM4-80GB", "A100", 312e12, 156e12, 19.5e12),
    ("NVIDIA A100 80GB PCIe", "A100", 312e12, 156e12, 19.5e12),
    ("NVIDIA H100 80GB HBM3", "H100", 989e12, 494.7e12, 67e12),
    ("NVIDIA H100 PCIe", "H100_PCIe", 756e12, 378e12, 51e12),
    ("NVIDIA H100 NVL", "H100_NVL", 835e12, 417.5e12, 60e12),
    ("NVIDIA H200", "H200", 989e12, 494.7e12, 67e12),
    ("NVIDIA H200 NVL", "H200_NVL", 835e12, 417.5e12, 60e12),
    ("NVIDIA GH200 480GB", "GH200", 989e12, 494.7e12, 67e12),
  ],
)
def test_peak_table_for_known_device_kinds(
  device_kind, label, bf16_peak, fp32_peak, full_fp32_peak
):
  device = types.SimpleNamespace(device_kind=device_kind, platform="gpu")
  assert accounting.device_kind_label(device) == label
  assert accounting.peak_flops_per_device(device, "bfloat16") == bf16_peak
  assert accounting.peak_flops_per_device(device, jnp.float32) == fp32_peak
  with jax.default_matmul_precision("highest"):
    assert accounting.peak_flops_per_device(device, jnp.float32) == full_fp32_peak


def test_unknown_device_kinds_get_a_metric_safe_label():
  device = types.SimpleNamespace(device_kind="TPU v4 lite", platform="tpu")
  assert accounting.device_kind_label(device) == "TPU_v4_lite"
  device = types.SimpleNamespace(device_kind="NVIDIA L4", platform="gpu")
  assert accounting.device_kind_label(device) == "NVIDIA_L4"


def test_cpu_peak_is_measured_once_per_process():
  assert accounting.device_kind_label() == "cpu"
  first = accounting.peak_flops_per_device()
  measurements = accounting.measured_matmul_flops.cache_info().misses
  second = accounting.peak_flops_per_device(jax.devices()[0])
  assert first > 0
  assert second == first
  assert accounting.measured_matmul_flops.cache_info().misses == measurements


def make_accountant(**overrides):
  arguments = dict(
    flops_per_example=1e9,
    num_devices=8,
    device_kind="cpu",
    peak_flops_per_device=1e12,
    examples_per_epoch=500,
  )
  arguments.update(overrides)
  return accounting.Accountant(**arguments)


def test_accountant_is_all_zeros_before_any_update():
  fields = make_accountant().fields()
  for name in (
    "examples_seen",
    "epochs",
    "train_seconds",
    "img_per_sec",
    "img_per_sec_per_device",
    "core_days",
    "core_days_cpu",
    "mfu",
    "tpuv3_core_days",
  ):
    assert fields[name] == 0, name
  assert fields["flops_per_example"] == 1e9


def test_accountant_known_numbers():
  accountant = make_accountant()
  accountant.update(examples=600, seconds=4.0)
  accountant.update(examples=400, seconds=6.0)
  fields = accountant.fields()
  assert fields["examples_seen"] == 1000
  assert fields["epochs"] == 2.0
  assert fields["train_seconds"] == 10.0
  assert fields["img_per_sec"] == 100.0
  assert fields["img_per_sec_per_device"] == 12.5
  assert fields["core_days"] == pytest.approx(8 * 10 / 86400)
  assert fields["core_days_cpu"] == fields["core_days"]
  # 1e9 FLOPs * 100 img/s over 8 devices of 1e12 FLOP/s.
  assert fields["mfu"] == pytest.approx(0.0125)
  # 1e12 FLOPs at 61.5e12 * 0.0125 FLOP/s take 1.3008 s of TPU v3 time.
  assert fields["tpuv3_core_days"] == pytest.approx(
    1000 * 1e9 / (61.5e12 * 0.0125 * 86400)
  )
  assert fields["tpuv3_core_days"] == pytest.approx(1.3008130 / 86400)


def test_epochs_are_fractional():
  """750 examples of a 500-example epoch are 1.5 epochs, not 1: the metric
  that plots a run over epochs needs the fraction."""
  accountant = make_accountant()
  accountant.update(examples=750, seconds=1.0)
  assert accountant.fields()["epochs"] == 1.5


def test_the_benchmarks_mfu_divides_by_every_devices_peak_and_matches_the_runs():
  """1e9 FLOPs an image at 100 img/s on 8 devices of 1e12 FLOP/s: 1e11 of
  8e12 FLOP/s, 0.0125; a run on the same devices logs the same figure."""
  assert accounting.mfu(1e9, 100.0, num_devices=8, peak_flops_per_device=1e12) == (
    pytest.approx(0.0125))
  accountant = make_accountant()
  accountant.update(examples=1000, seconds=10.0)
  assert accountant.fields()["mfu"] == pytest.approx(
    accounting.mfu(1e9, 100.0, num_devices=8, peak_flops_per_device=1e12))


def test_on_tpu_v3_tpuv3_core_days_equal_core_days():
  accountant = make_accountant(
    device_kind="TPU_v3", peak_flops_per_device=61.5e12
  )
  accountant.update(examples=12345, seconds=678.9)
  fields = accountant.fields()
  assert fields["tpuv3_core_days"] == pytest.approx(fields["core_days"], rel=1e-12)
  assert fields["core_days_TPU_v3"] == fields["core_days"]


def test_resumed_accountant_continues_its_totals():
  uninterrupted = make_accountant()
  uninterrupted.update(examples=600, seconds=4.0)
  uninterrupted.update(examples=400, seconds=6.0)

  before = make_accountant()
  before.update(examples=600, seconds=4.0)
  resumed = make_accountant(**before.state_dict())
  resumed.update(examples=400, seconds=6.0)

  assert before.state_dict() == {"examples_seen": 600, "train_seconds": 4.0,
                                 "device_seconds": {"cpu": 32.0},
                                 "peak_flops_available": 3.2e13}
  assert resumed.fields() == uninterrupted.fields()
  # A checkpoint of before these totals were kept: its seconds on these devices.
  old = make_accountant(examples_seen=600, train_seconds=4.0)
  old.update(examples=400, seconds=6.0)
  assert old.fields() == pytest.approx(uninterrupted.fields(), rel=1e-15)


def test_a_run_resumed_on_other_devices_keeps_each_stretchs_cost():
  """1000 s on 8 TPU v3 cores, then 1000 s on 4 H100s: each stretch priced
  on its own devices, not the whole run on the last ones."""
  tpu = make_accountant(device_kind="TPU_v3", peak_flops_per_device=61.5e12)
  tpu.update(examples=8000, seconds=1000.0)
  gpu = make_accountant(num_devices=4, device_kind="H100", peak_flops_per_device=989e12,
                        **tpu.state_dict())
  assert gpu.fields()["tpuv3_core_days"] == pytest.approx(8000 / 86400)
  gpu.update(examples=8000, seconds=1000.0)
  fields = gpu.fields()
  assert fields["core_days"] == pytest.approx(12000 / 86400)
  assert fields["core_days_TPU_v3"] == pytest.approx(8000 / 86400)
  assert fields["core_days_H100"] == pytest.approx(4000 / 86400)
  assert fields["tpuv3_core_days"] == pytest.approx((8000 + 4000 * 989 / 61.5) / 86400)
  assert fields["img_per_sec"] == 8.0
  assert fields["img_per_sec_per_device"] == pytest.approx(16000 / 12000)
  # 1.6e13 FLOPs done of the 8 * 61.5e15 + 4 * 989e15 the devices offered.
  assert fields["mfu"] == pytest.approx(1.6e13 / (8 * 61.5e15 + 4 * 989e15))


def test_the_cpu_peak_is_measured_on_every_emulated_device_at_once():
  devices = jax.local_devices(backend="cpu")
  assert len(devices) == 8
  sharding = accounting.matmul_operands_sharding(devices)
  stack = jax.device_put(np.zeros((8, 2, 2), np.float32), sharding)
  assert {shard.device for shard in stack.addressable_shards} == set(devices)
  assert all(shard.data.shape == (1, 2, 2) for shard in stack.addressable_shards)
  assert accounting.peak_flops_per_device(devices[3]) == (
    accounting.measured_matmul_flops("cpu", "float32"))
