"""Compute accounting: FLOPs, throughput, MFU and TPUv3-core-days.

The ViT paper reports pre-training cost in TPUv3-core-days. A run on other
hardware is converted to that unit by asking how long TPU v3 cores would have
needed for the same FLOPs at the run's own model FLOPs utilisation (MFU), so
the figure compares hardware, not the efficiency of this code.

FLOPs are counted two ways, a multiply-add as 2 FLOPs: analytically, the
matmuls and convolutions the model (ViT, BiT ResNet or hybrid) needs per
image, and by XLA's cost analysis of the compiled step (`compiled_flops`),
which also counts the optimizer and elementwise work, and on GPU leaves out
the matmuls XLA hands to cuBLAS. MFU, a run's and the benchmark's alike,
counts the model's FLOPs, the analytic count (as PaLM defines MFU: no
optimizer, no recomputation); the benchmark prints XLA's count beside it.
"""

import functools
import logging
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.data import config_fields

TPU_V3_CORE_PEAK = 61.5e12
"""FLOP/s of one TPU v3 core (bfloat16): 123 TFLOP/s a chip, 2 cores a chip."""

SECONDS_PER_DAY = 86400.0

IMAGE_CHANNELS = 3
"""RGB: the first convolution (patch embedding, or a ResNet's root) reads three channels."""

TRAIN_FLOPS_MULTIPLIER = 3
"""Training-step FLOPs / forward-pass FLOPs.

For every matmul the backward pass computes one matmul of the same size for
the gradient w.r.t. its input and one for the gradient w.r.t. its weights, so
backward ~ 2x forward and a step ~ 3x. (The image needs no gradient, so the
patch embedding's input gradient is counted though never computed; the usual
convention accepts this small overcount.)
"""

_log = logging.getLogger(__name__)


def analytic_flops_per_example(model, image_size, *, train: bool) -> float:
  """FLOPs to push one image through the model (x3 for a training step).

  The family is read off the model's attributes: ``block_sizes`` is a BiT
  ResNet-v2 (`resnet_flops`); anything else is a ViT (`vit_flops`), a hybrid
  where its ``resnet_blocks`` are set. A multiply-add is 2 FLOPs, and only
  the matmuls and convolutions are counted.

  ViT. Np = (H // P) * (W // P) patches of P x P; N = Np + 1 tokens with
  the 'token' classifier (the cls token), else N = Np, one more with DeiT's
  ``distillation_token``, and G more with G register tokens
  (``num_registers``); D = hidden_size;
  M = mlp_dim; L = num_layers; C = 3 channels; R = representation_size;
  K = num_classes.

    patch embedding (stride-P conv)       2 * Np * (P*P*C) * D
    per block, L times:
      Q, K, V projections                 3 * 2 * N * D * D
      scores Q K^T (all heads)            2 * N * N * D
      attention-weighted values A V       2 * N * N * D
      output projection                   2 * N * D * D
      MLP, two dense layers               2 * 2 * N * D * M
      block total                         8ND^2 + 4N^2 D + 4NDM
                                          (24ND^2 + 4N^2 D when M = 4D)
    MAP head ('map' classifier), a probe
    token attending over the Np patches:
      Q of the probe, output projection   2 * 2 * D * D
      K, V projections of the Np patches  2 * 2 * Np * D * D
      scores and weighted values, 1 query 2 * 2 * Np * D
      MLP on the probe                    2 * 2 * D * M
    pre_logits on the pooled vector, if R 2 * D * R
    head on the pooled vector, if K       2 * (R or D) * K
                                          (twice: head_dist on the distillation token)

  The number of heads does not enter: heads split D, so their scores add up
  to N^2 D. Biases, LayerNorm, softmax, GELU, tanh, residual adds and pooling
  are elementwise, O(N D + N^2) per block against O(N D^2) for the matmuls,
  and are left out (they are about 1-3% of XLA's count for ViT-B). So the
  22B-style options change nothing here: a parallel block (``parallel_block``)
  runs the same matmuls with one LayerNorm fewer, ``qk_norm`` adds two
  LayerNorms and ``use_bias=False`` drops biases; nor does layer scale
  (``layer_scale_init``), two products a block.

  ResNet: BiT's ResNet-v2, and the hybrid's stem (same convolutions, other
  norms). Every convolution costs 2 * Ho * Wo * (kh*kw*Cin) * Cout, where
  an output side is the input side over the stride, rounded up (BiT's fixed
  padding and the stem's 'SAME' agree on it). F = 64 * width_factor; of the
  S = len(block_sizes) stages, stage s = 0, 1, ... has Fs = F * 2^s
  bottleneck channels and 4 Fs out, and its first unit strides by 2 (stage 0
  by 1) and projects the shortcut.

    root conv 7x7/2 (max pool 3x3/2 after it)  2 * (H/2)(W/2) * (7*7*C) * F
    per unit, h x w its output, Cin its input channels, stride t:
      1x1 conv to Fs, at the input's size      2 * (t h)(t w) * Cin * Fs
      3x3 conv, stride t                       2 * h w * (3*3*Fs) * Fs
      1x1 conv to 4 Fs                         2 * h w * Fs * 4 Fs
      shortcut 1x1 conv, stride t (first unit) 2 * h w * Cin * 4 Fs
    BiT head on the pooled vector, if K        2 * 4 F 2^(S-1) * K

  GroupNorm, weight standardisation, ReLU, max pool, residual adds and the
  mean are left out. XLA counts those, but not the taps of a padded
  convolution that fall on the padding (a 3x3 conv on stage 4's 7 x 7 map
  has 18% of them there), and on balance sits 2% below this count for R50x1
  at 224.

  Hybrid (ViT with ``resnet_blocks``): the stem's convolutions (as ResNet,
  without its head), then the ViT on the stem's feature map of Cf channels
  and stride T = 4 * 2^(S-1): its patches are P' = P / T cells of that map,
  so Np is the same as the plain ViT's and only the embedding changes,

    patch embedding (stride-P' conv)      2 * Np * (P'*P'*Cf) * D

  Args:
    model: anything with the attributes of VisionTransformer (patch_size,
      hidden_size, num_layers, mlp_dim, classifier, num_classes,
      representation_size; resnet_blocks and resnet_width for a hybrid) or of
      bit.ResNetV2 (block_sizes, width_factor, num_classes), read with
      getattr.
    image_size: the input's side as an int, or (height, width).
    train: count a training step (forward + backward) instead of a forward
      pass.

  Returns:
    FLOPs per image.
  """
  image_height, image_width = config_fields.height_width(image_size)
  if getattr(model, "block_sizes", None) is not None:
    forward = resnet_flops(model, image_height, image_width)
  else:
    forward = vit_flops(model, image_height, image_width)
  return float(forward * (TRAIN_FLOPS_MULTIPLIER if train else 1))


def _ceil_div(size, stride):
  return -(-size // stride)


def resnet_stem_flops(image_height, image_width, *, block_sizes, width_factor):
  """The convolutions of a ResNet's root and stages, and the feature map they leave.

  Returns (forward FLOPs per image, (height, width, channels) of the output).
  """
  root_width = 64 * width_factor
  height, width = _ceil_div(image_height, 2), _ceil_div(image_width, 2)
  flops = 2 * height * width * (7 * 7 * IMAGE_CHANNELS) * root_width
  height, width = _ceil_div(height, 2), _ceil_div(width, 2)  # max pool
  channels = root_width
  for stage, num_units in enumerate(block_sizes):
    bottleneck = root_width * 2**stage
    out = 4 * bottleneck
    for unit in range(num_units):
      stride = 2 if stage > 0 and unit == 0 else 1
      flops += 2 * height * width * channels * bottleneck  # 1x1, at the input's size
      in_channels = channels
      height, width = _ceil_div(height, stride), _ceil_div(width, stride)
      flops += 2 * height * width * (3 * 3 * bottleneck) * bottleneck
      flops += 2 * height * width * bottleneck * out
      if unit == 0 and (stride != 1 or in_channels != out):
        flops += 2 * height * width * in_channels * out  # shortcut projection
      channels = out
  return flops, (height, width, channels)


def resnet_flops(model, image_height, image_width):
  """Forward FLOPs per image of a BiT ResNet-v2: its convolutions and head."""
  flops, (_, _, channels) = resnet_stem_flops(
    image_height,
    image_width,
    block_sizes=getattr(model, "block_sizes"),
    width_factor=getattr(model, "width_factor"),
  )
  num_classes = getattr(model, "num_classes", None)
  return flops + (2 * channels * num_classes if num_classes else 0)


def vit_flops(model, image_height, image_width):
  """Forward FLOPs per image of a ViT, with its hybrid stem if it has one."""
  patch_height, patch_width = config_fields.height_width(getattr(model, "patch_size"))
  hidden = getattr(model, "hidden_size")
  mlp_dim = getattr(model, "mlp_dim")
  num_layers = getattr(model, "num_layers")
  num_classes = getattr(model, "num_classes", None)
  representation_size = getattr(model, "representation_size", None)
  has_class_token = getattr(model, "classifier", "token") == "token"
  num_registers = getattr(model, "num_registers", 0) or 0
  distilled = bool(getattr(model, "distillation_token", False))
  resnet_blocks = getattr(model, "resnet_blocks", None)

  num_patches = (image_height // patch_height) * (image_width // patch_width)
  num_tokens = num_patches + (1 if has_class_token else 0) + distilled + num_registers

  stem = 0
  embedding_channels = IMAGE_CHANNELS
  if resnet_blocks is not None:  # () is the root alone
    stem, (map_height, map_width, embedding_channels) = resnet_stem_flops(
      image_height,
      image_width,
      block_sizes=resnet_blocks,
      width_factor=getattr(model, "resnet_width", 1),
    )
    # The patch is P image pixels a side, so P / T cells of the stem's map.
    patch_height //= image_height // map_height
    patch_width //= image_width // map_width
  patch_embedding = 2 * num_patches * (patch_height * patch_width * embedding_channels) * hidden

  qkv_projections = 3 * 2 * num_tokens * hidden * hidden
  attention_scores = 2 * num_tokens * num_tokens * hidden
  attention_values = 2 * num_tokens * num_tokens * hidden
  output_projection = 2 * num_tokens * hidden * hidden
  mlp = 2 * 2 * num_tokens * hidden * mlp_dim
  per_block = (
    qkv_projections
    + attention_scores
    + attention_values
    + output_projection
    + mlp
  )

  map_head = 0
  if getattr(model, "classifier", "token") == "map":
    # One probe token attends over the Np patch tokens, then one token's MLP.
    map_head = (
      2 * hidden * hidden  # query of the probe
      + 2 * 2 * num_patches * hidden * hidden  # keys and values of every patch
      + 2 * 2 * num_patches * hidden  # scores and weighted values, one query
      + 2 * hidden * hidden  # output projection
      + 2 * 2 * hidden * mlp_dim  # MLP
    )

  head_input = hidden
  pre_logits = 0
  if representation_size:
    pre_logits = 2 * hidden * representation_size
    head_input = representation_size
  head = (1 + distilled) * 2 * head_input * num_classes if num_classes else 0

  return stem + patch_embedding + num_layers * per_block + map_head + pre_logits + head


def compiled_flops(compiled) -> float | None:
  """FLOPs XLA counts for a compiled executable, or None if it can't say.

  `compiled.cost_analysis()` returns a dict in current jax and a list of
  dicts (one per HLO module) in older versions; their 'flops' are summed.
  XLA also counts elementwise ops, so this sits a little above the analytic
  count. For an SPMD-partitioned program XLA analyses the per-device program,
  so the figure is one device's share, not the global total.
  """
  try:
    analysis = compiled.cost_analysis()
  except (NotImplementedError, RuntimeError):
    return None
  if not analysis:
    return None
  per_module = [analysis] if isinstance(analysis, dict) else analysis
  counts = [
    module["flops"]
    for module in per_module
    if module and module.get("flops", -1) >= 0
  ]
  return float(sum(counts)) if counts else None


def compiled_flops_per_example(step_flops, config, *, num_devices,
                               global_batch) -> float | None:
  """XLA's FLOPs per example of ``config``'s compiled train step, or None.

  ``step_flops`` is one device's count (`compiled_flops`) of a step over
  ``global_batch`` examples. XLA counts a loop's body once: with gradient
  accumulation that is one micro-batch of ``global_batch / accum_steps``
  examples; with scan over layers, one block, so the count tells nothing.
  With rematerialisation it also counts the forward passes redone for the
  backward one, which MFU leaves out (it counts the model's FLOPs, not the
  hardware's): the analytic count stands then too.
  """
  if not step_flops or config.model.get("scan") or config.model.get("remat"):
    return None
  return step_flops * num_devices * config.accum_steps / global_batch


_DEVICE_KIND_LABELS = (
  # (regex on the lower-cased device_kind, label). Anchored so that, e.g.,
  # 'TPU v4 lite' (v4i, another peak) is not taken for a v4.
  (r"^tpu v2\b", "TPU_v2"),
  (r"^tpu v3\b", "TPU_v3"),
  (r"^tpu v4$", "TPU_v4"),
  (r"^tpu v5 ?(lite|e)\b", "TPU_v5e"),
  (r"^tpu v5p?$", "TPU_v5p"),
  (r"^tpu v6 ?(lite|e)\b", "TPU_v6e"),
  (r"\ba100\b", "A100"),
  (r"\bh100\b.*\bpcie\b", "H100_PCIe"),
  (r"\bh100\b.*\bnvl\b", "H100_NVL"),
  (r"\bh200\b.*\bnvl\b", "H200_NVL"),
  (r"\bh100\b", "H100"),
  (r"\bgh200\b", "GH200"),
  (r"\bh200\b", "H200"),
)


def device_kind_label(device=None) -> str:
  """Short hardware label for metric names: 'TPU_v3', 'H100', 'cpu', ...

  JAX's device_kind strings vary ('TPU v5 lite', 'NVIDIA H100 80GB HBM3'),
  so known kinds map to fixed labels; any other kind is sanitised to
  [A-Za-z0-9_] so that it still makes a valid metric name.
  """
  device = jax.devices()[0] if device is None else device
  kind = str(getattr(device, "device_kind", "")).strip()
  if getattr(device, "platform", None) == "cpu" or kind.lower() == "cpu":
    return "cpu"
  for pattern, label in _DEVICE_KIND_LABELS:
    if re.search(pattern, kind.lower()):
      return label
  return re.sub(r"[^0-9A-Za-z]+", "_", kind).strip("_") or "unknown"


_TPU_PEAK_FLOPS = {
  # Per JAX device. v2 and v3 expose each of a chip's two cores as a device;
  # v4 and v5p fuse a chip's two cores (megacore) into one device; v5e and
  # v6e have one core a chip.
  "TPU_v2": 22.5e12,
  "TPU_v3": TPU_V3_CORE_PEAK,
  "TPU_v4": 275e12,
  "TPU_v5e": 197e12,
  "TPU_v5p": 459e12,
  "TPU_v6e": 918e12,
}

_GPU_PEAK_FLOPS = {
  # label: dense (bfloat16/float16, TF32 tensor-core, float32 without tensor
  # cores) peaks from NVIDIA's data sheets (their tensor-core figures with
  # sparsity halved). A100 PCIe has the SXM part's peaks; H200 and GH200 have
  # H100 SXM's compute, the H200 NVL the H100 NVL's.
  "A100": (312e12, 156e12, 19.5e12),
  "H100": (989e12, 494.7e12, 67e12),
  "H100_PCIe": (756e12, 378e12, 51e12),
  "H100_NVL": (835e12, 417.5e12, 60e12),
  "GH200": (989e12, 494.7e12, 67e12),
  "H200": (989e12, 494.7e12, 67e12),
  "H200_NVL": (835e12, 417.5e12, 60e12),
}

# jax_default_matmul_precision values that keep float32 matmuls off TF32.
_FULL_FLOAT32_PRECISIONS = ("highest", "float32", "F32_F32_F32")


def gpu_float32_is_full() -> bool:
  """Whether JAX multiplies float32 on a GPU in full float32, not TF32 (its
  default), as `jax_default_matmul_precision` says."""
  return jax.config.jax_default_matmul_precision in _FULL_FLOAT32_PRECISIONS


def peak_flops_per_device(device=None, dtype="float32") -> float:
  """Peak FLOP/s of one JAX device: the denominator of MFU.

  TPUs: the MXU's bfloat16 peak whatever the dtype, since at default
  precision TPUs run float32 matmuls through the same bfloat16 MXU passes.

  A100/H100/H200 (SXM, PCIe, NVL, GH200): the dense tensor-core peak for
  bfloat16/float16. For float32 the TF32 tensor-core peak, since at JAX's
  default precision these GPUs run float32 matmuls as TF32; the plain
  float32 peak only where `jax_default_matmul_precision` asks for full
  float32 ('highest', 'float32').

  CPU: the rate of large jitted float32 matmuls (XLA:CPU's fast path), one
  per local CPU device, all running at once, timed once per process: the
  host's CPU devices share its cores, so each one's peak is its share of
  what they do together.

  Any accelerator not in the tables: a measured matmul, with a logged warning.

  Args:
    device: a jax Device (default jax.devices()[0]); for the tables anything
      with device_kind (and optionally platform) will do.
    dtype: the compute dtype of the model's matmuls.
  """
  device = jax.devices()[0] if device is None else device
  dtype_name = jnp.dtype(dtype).name
  if dtype_name not in ("float32", "bfloat16", "float16"):
    raise ValueError(f"No peak FLOP/s for dtype {dtype_name!r}.")
  label = device_kind_label(device)
  if label in _TPU_PEAK_FLOPS:
    return _TPU_PEAK_FLOPS[label]
  if label in _GPU_PEAK_FLOPS:
    half_precision_peak, tf32_peak, float32_peak = _GPU_PEAK_FLOPS[label]
    if dtype_name != "float32":
      return half_precision_peak
    full = gpu_float32_is_full()
    return float32_peak if full else tf32_peak
  if label == "cpu":
    return measured_matmul_flops("cpu", "float32")
  _log.warning(
    "No peak FLOP/s known for device kind %r; MFU will be "
    "relative to a measured matmul rate instead.",
    label,
  )
  return measured_matmul_flops(device.platform, dtype_name)


@functools.cache
def measured_matmul_flops(platform: str, dtype_name: str) -> float:
  """FLOP/s of one device while every local device multiplies; cached.

  Each local device of `platform` multiplies its own pair of square
  matrices, all at once in one jitted call, and a device's rate is
  2 * side^3 / seconds per call. All of them at once, because emulated CPU
  devices share the host's cores, and how XLA:CPU spreads a lone device's
  matmul over them depends on flags (with --xla_cpu_multi_thread_eigen=false
  a device uses one core; by default it takes them all): only a concurrent
  run measures what each device can do while all of them work, which is
  what a data-parallel step asks of them.

  The first calls run slow (page faults, clocks and thread pools ramping
  up), and a peak read too low inflates every MFU computed against it. So
  half a second of untimed calls comes first, then the fastest call of the
  next second counts, since noise only ever slows a call down. The side,
  1024 on CPU and 8192 on accelerators, is large enough to saturate a
  device; a larger one on CPU reads no higher a peak (docs/benchmarks.md)
  and takes seconds a call on a host of many emulated devices.
  """
  devices = jax.local_devices(backend=platform)
  side = 1024 if platform == "cpu" else 8192
  operands_sharding = matmul_operands_sharding(devices)

  @functools.partial(jax.jit, out_shardings=operands_sharding)
  def random_operand(key):
    return jax.random.normal(key, (len(devices), side, side), dtype_name)

  left_key, right_key = jax.random.split(jax.random.key(0))
  left, right = random_operand(left_key), random_operand(right_key)
  matmul = jax.jit(jnp.matmul, out_shardings=operands_sharding)

  def fastest_call_seconds(budget_seconds, min_calls=3):
    deadline = time.perf_counter() + budget_seconds
    fastest, calls = float("inf"), 0
    while calls < min_calls or time.perf_counter() < deadline:
      start = time.perf_counter()
      matmul(left, right).block_until_ready()
      fastest = min(fastest, time.perf_counter() - start)
      calls += 1
    return fastest

  fastest_call_seconds(0.5)  # compiles, then warms up
  best_seconds = fastest_call_seconds(1.0)
  return 2 * side**3 / best_seconds


def matmul_operands_sharding(devices):
  """Splits a stack of matrices one per device, for `measured_matmul_flops`."""
  mesh = jax.sharding.Mesh(np.array(devices), ("device",))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("device"))


def mfu(flops_per_example, img_per_sec, *, num_devices, peak_flops_per_device):
  """Model FLOPs utilisation: the share of the devices' peak that the model's FLOPs use.

  The benchmark's formula; a run's logged `mfu` (`Accountant`) is the same
  on unchanged devices, with the same analytic ``flops_per_example``, so
  the two figures compare.
  """
  return flops_per_example * img_per_sec / (num_devices * peak_flops_per_device)


class Accountant:
  """Running totals of a training run's examples, time and compute cost.

  The caller times only training steps (not evaluation or compilation) and
  reports them through `update`; every rate is cumulative over the run. A
  resumed run passes its checkpointed `state_dict()` back to the constructor,
  and may run on other devices than the stretches before it (a checkpoint
  resumes onto any mesh): so the totals keep each stretch's device time and
  peak FLOPs, not only its seconds.

  With F = flops_per_example, and sums over the run's stretches of dt
  training seconds on n devices of a peak of `peak` FLOP/s each:
    img_per_sec     = examples_seen / train_seconds
    core_days       = sum(n * dt) / 86400  (also per device kind)
    mfu             = examples_seen * F / sum(n * peak * dt)
    tpuv3_core_days = examples_seen * F / (TPU_V3_CORE_PEAK * mfu * 86400)
                    = sum(n * peak * dt) / (TPU_V3_CORE_PEAK * 86400)
  On unchanged devices mfu is `mfu`'s F * img_per_sec / (n * peak), the
  benchmark's formula. tpuv3_core_days is the time TPU v3 cores would need
  for the run's FLOPs at the run's own MFU. F cancels, leaving device time
  scaled by the ratio of peaks, so on TPU v3 (peak = TPU_V3_CORE_PEAK) it
  equals core_days exactly; the second form is the one computed, which is
  also defined before any time has passed.
  """

  def __init__(
    self,
    *,
    flops_per_example: float,
    num_devices: int,
    device_kind: str,
    peak_flops_per_device: float,
    examples_per_epoch: int | None = None,
    examples_seen: int = 0,
    train_seconds: float = 0.0,
    device_seconds: dict[str, float] | None = None,
    peak_flops_available: float | None = None,
  ):
    """device_kind is a metric-safe label, e.g. from device_kind_label.

    The totals are a `state_dict()`'s. One saved before device_seconds and
    peak_flops_available were kept spent its training seconds on these devices.
    """
    self.flops_per_example = float(flops_per_example)
    self.num_devices = num_devices
    self.device_kind = device_kind
    self.peak_flops_per_device = float(peak_flops_per_device)
    self.examples_per_epoch = examples_per_epoch
    self.examples_seen = int(examples_seen)
    self.train_seconds = float(train_seconds)
    self.device_seconds = ({device_kind: num_devices * self.train_seconds}
                           if device_seconds is None else dict(device_seconds))
    self.peak_flops_available = (
      num_devices * self.peak_flops_per_device * self.train_seconds
      if peak_flops_available is None else float(peak_flops_available))

  def update(self, *, examples: int, seconds: float) -> None:
    """Adds `examples` trained in `seconds` of training wall time."""
    self.examples_seen += int(examples)
    self.train_seconds += float(seconds)
    self.device_seconds[self.device_kind] = (
      self.device_seconds.get(self.device_kind, 0.0) + self.num_devices * float(seconds))
    self.peak_flops_available += (
      self.num_devices * self.peak_flops_per_device * float(seconds))

  def fields(self) -> dict[str, float]:
    """The metrics of the class docstring; all zero before any update."""
    fields = {
      "examples_seen": float(self.examples_seen),
      "train_seconds": self.train_seconds,
      "img_per_sec": _ratio(self.examples_seen, self.train_seconds),
      "img_per_sec_per_device": _ratio(self.examples_seen,
                                       sum(self.device_seconds.values())),
      **cost_fields(self.state_dict()),
      "mfu": _ratio(self.examples_seen * self.flops_per_example,
                    self.peak_flops_available),
      "flops_per_example": self.flops_per_example,
    }
    if self.examples_per_epoch:
      fields["epochs"] = self.examples_seen / self.examples_per_epoch
    return fields

  def state_dict(self) -> dict[str, float]:
    """The totals a checkpoint keeps so that a resumed run continues them."""
    return {
      "examples_seen": self.examples_seen,
      "train_seconds": self.train_seconds,
      "device_seconds": dict(self.device_seconds),
      "peak_flops_available": self.peak_flops_available,
    }


def cost_fields(progress) -> dict[str, float]:
  """core_days (also per device kind) and tpuv3_core_days of a run's
  `Accountant.state_dict()`, as its metrics give them; a checkpoint's
  progress prices the training up to that step."""
  device_seconds = progress["device_seconds"]
  return {
    "core_days": sum(device_seconds.values()) / SECONDS_PER_DAY,
    **{f"core_days_{kind}": seconds / SECONDS_PER_DAY
       for kind, seconds in device_seconds.items()},
    "tpuv3_core_days": (
      progress["peak_flops_available"] / (TPU_V3_CORE_PEAK * SECONDS_PER_DAY)),
  }


def _ratio(numerator, denominator):
  """numerator / denominator, 0 before any training time."""
  return numerator / denominator if denominator > 0 else 0.0
