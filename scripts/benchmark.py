r"""Times the compiled train step and inference on the devices at hand.

  python scripts/benchmark.py --config=configs/benchmark.py:variant=Ti/16 \
      --batch=32 --steps=10 [--compare-timm] [--profile=/tmp/profile]

The train step is `vit_jax.train.steps.make_train_step`, the function the
training loop runs, on synthetic batches already on the devices;
`vit_jax/cost/benchmarking.py` says how it is timed (`--warmup` steps, then
`--rounds` rounds of `--steps` steps) and how MFU is counted. XLA's own FLOP count is printed beside it.

`--compare-timm` also times timm's model of the same shape in the same
process: its VisionTransformer for a ViT (the same classifier: class token,
average or MAP; qk_norm, layer scale, registers and DeiT's distillation
token where set; no pre_logits, same classes; timm's own exact GELU, as its
users train it), its ResNetV2
as `resnetv2_50x1_bit` builds it for a BiT ResNet (`variant=R50x1`), and
its hybrid (`vit_base_r50_s16_224`'s backbone and HybridEmbed) for
`R50x1+B/16`; eager PyTorch as timm trains: AdamW, global-norm clipping,
autocast bf16 when the config's dtype is bfloat16, at the same batch; and
prints our images/s over timm's. It needs `pip install -e .[timm]`.

`--against=OVERRIDES` (e.g. `model.layer_norm_implementation=flax`, or
several, comma-separated) times the train step of the config with those
overrides against `--config`'s, both compiled in this process and their
rounds interleaved (`benchmarking.compare`): a shared host drifts by more
than many changes are worth, so this is how to tell a few percent. It prints
both steps' statistics, the median over rounds of the ratio of their round
times, and in how many rounds the override was faster; no inference, no timm.

After the timing, `--profile=DIR` traces `--steps` more train steps of
`--config` into DIR (`vit_jax/cost/profiling.py`) and adds `profile` to the
JSON: the Perfetto trace's path (open it in ui.perfetto.dev), the device's
busy time per step and the ten kernels of most time, each with its share of
the busy time; on a CPU host, XLA:CPU's ops stand in for kernels
(`profile.source` says which). Not with `--against`.

On a CPU host it starts one JAX device per core, as `vit_jax.main` does
(`vit_jax/runtime/cpu_devices.py`); `JAX_NUM_CPU_DEVICES=1` times a single device.

Prints one JSON object; `--out=FILE` also writes it there.
"""
import json
import os

if __name__ == "__main__":
  from vit_jax.runtime import host_malloc
  host_malloc.reexec_with_tunables()

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from configs import common  # noqa: E402
from vit_jax import models  # noqa: E402
from vit_jax.cost import accounting, benchmarking  # noqa: E402
from vit_jax.models import resnet_stem  # noqa: E402
from vit_jax.runtime import cli, cpu_devices  # noqa: E402
from vit_jax.train import config_checks  # noqa: E402

FLAGS = cli.command_flags(__name__)
_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/benchmark.py", "Config whose model and step are timed.",
    flag_values=FLAGS, lock_config=True)
_BATCH = flags.DEFINE_integer("batch", None, "Global batch (default: config.global_batch).",
                              lower_bound=1, flag_values=FLAGS)
_STEPS = flags.DEFINE_integer("steps", 10, "Steps per timed round.", lower_bound=1,
                              flag_values=FLAGS)
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Timed rounds; the median and spread "
                               "are over them.", lower_bound=1, flag_values=FLAGS)
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation.",
                               lower_bound=0, flag_values=FLAGS)
_INFERENCE = flags.DEFINE_bool("inference", True, "Also time the inference forward pass.",
                               flag_values=FLAGS)
_COMPARE_TIMM = flags.DEFINE_bool("compare-timm", False,
                                  "Also time timm's equivalent model.", flag_values=FLAGS)
_AGAINST = flags.DEFINE_string(
    "against", None, "Config overrides, 'key=value,...' (e.g. model.remat=True): "
    "time that variant's train step against --config's, rounds interleaved in "
    "this process.", flag_values=FLAGS)
_PROFILE = flags.DEFINE_string(
    "profile", None, "Directory: after timing, trace --steps train steps there and "
    "print the trace's top kernels.", flag_values=FLAGS)
_OUT = flags.DEFINE_string("out", None, "Also write the JSON here.", flag_values=FLAGS)


# ---------------------------------------------------------------------------
# timm, for comparison.
# ---------------------------------------------------------------------------
def timm_model(config, model):
  """timm's network of the same shape as ``model`` (a ViT, BiT or hybrid)."""
  from functools import partial

  from timm.layers import StdConv2d, StdConv2dSame
  from timm.models.resnetv2 import ResNetV2
  from timm.models.deit import VisionTransformerDistilled
  from timm.models.vision_transformer import VisionTransformer
  from timm.models.vision_transformer_hybrid import HybridEmbed

  num_classes = config.data.num_classes
  if not isinstance(model, models.VisionTransformer):  # a BiT ResNet
    return ResNetV2(layers=model.block_sizes, width_factor=model.width_factor,
                    stem_type="fixed", conv_layer=partial(StdConv2d, eps=1e-8),
                    num_classes=num_classes)
  if model.representation_size:
    raise app.UsageError("--compare-timm: timm's ViT has no pre_logits; use a "
                         "config with model.representation_size=None")
  if model.parallel_block or not model.use_bias:
    raise app.UsageError(
        "--compare-timm: timm's VisionTransformer has no twin of ViT-22B's "
        "model.parallel_block=True or model.use_bias=False; time such a model "
        "without --compare-timm")
  patch_size, embed_layer = model.patch_size, {}
  if model.resnet_blocks is not None:  # as timm's vit_base_r50_s16_224 builds its stem
    backbone = ResNetV2(layers=model.resnet_blocks, width_factor=model.resnet_width,
                        num_classes=0, global_pool="", preact=False, stem_type="same",
                        conv_layer=partial(StdConv2dSame, eps=1e-8))
    patch_size //= resnet_stem.stem_stride(model.resnet_blocks)
    embed_layer = dict(embed_layer=partial(HybridEmbed, backbone=backbone))
  # DeiT's twin: its distillation token and head, the heads' mean out.
  twin = VisionTransformerDistilled if model.distillation_token else VisionTransformer
  return twin(
      img_size=config.image_size, patch_size=patch_size,
      embed_dim=model.hidden_size, depth=model.num_layers,
      num_heads=model.num_heads, mlp_ratio=model.mlp_dim / model.hidden_size,
      num_classes=num_classes, class_token=model.classifier == "token",
      global_pool={"token": "token", "gap": "avg", "map": "map"}[model.classifier],
      qk_norm=model.qk_norm, init_values=model.layer_scale_init,
      reg_tokens=model.num_registers, pre_norm=model.pre_norm, **embed_layer)


def benchmark_timm(config, model, batch_size, *, peak, num_devices,
                   flops_per_example):
  """timm's eager train step for the same model, on one torch device."""
  try:
    import torch
  except ImportError as e:
    raise app.UsageError(f"--compare-timm needs torch and timm ({e}); install "
                         f"them with: pip install -e .[timm]") from None
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  if device.type == "cpu":
    torch.set_num_threads(os.cpu_count())
  net = timm_model(config, model).to(device)
  net.train()
  optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr.base,
                                betas=(config.optim.b1, config.optim.b2),
                                weight_decay=config.optim.weight_decay)
  amp = config.model.dtype == "bfloat16"
  if device.type == "cuda" and not amp:
    # float32 matmuls as JAX runs them on the card, and as the peak of MFU
    # assumes: TF32 unless jax_default_matmul_precision asks for full float32
    # (torch's default is full float32, which would flatter the speed-up).
    torch.set_float32_matmul_precision(
        "highest" if accounting.gpu_float32_is_full() else "high")
  size = config.image_size
  images = torch.randn(batch_size, 3, size, size, device=device)
  labels = torch.randint(0, config.data.num_classes, (batch_size,), device=device)
  loss_fn = torch.nn.CrossEntropyLoss()

  def run_step():
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
      loss = loss_fn(net(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), config.optim.grad_clip_norm)
    optimizer.step()

  def sync():
    if device.type == "cuda":
      torch.cuda.synchronize()

  stats = benchmarking.time_rounds(run_step, sync, steps=_STEPS.value,
                                   rounds=_ROUNDS.value, warmup=_WARMUP.value,
                                   batch=batch_size)
  # One torch device against the same per-device peak as ours.
  torch_devices = 1 if device.type == "cuda" else num_devices
  stats = benchmarking.with_mfu(stats, peak_per_device=peak,
                                num_devices=torch_devices,
                                flops_per_example=flops_per_example)
  stats.update(
      torch=torch.__version__, amp_bf16=amp, threads=torch.get_num_threads(),
      float32_matmul_precision=torch.get_float32_matmul_precision(),
      peak_device_memory_bytes=(torch.cuda.max_memory_allocated()
                                if device.type == "cuda" else None))
  return stats


def measure_with_timm(config, batch_size):
  """`benchmarking.measure`, and timm's step beside it with --compare-timm."""
  result, model = benchmarking.measure(
      config, batch_size, steps=_STEPS.value, rounds=_ROUNDS.value,
      warmup=_WARMUP.value, inference=_INFERENCE.value, profile_dir=_PROFILE.value)
  if _COMPARE_TIMM.value:
    result["timm"] = benchmark_timm(config, model, batch_size,
                                    peak=result["peak_flops_per_device"],
                                    num_devices=result["num_devices"],
                                    flops_per_example=result["train"]["flops_per_example"])
    result["speedup_vs_timm"] = (result["train"]["img_per_sec"]
                                 / result["timm"]["img_per_sec"])
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  try:  # before anything compiles, naming the field
    config_checks.check_fields(config)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  batch_size = _BATCH.value or config.global_batch
  if _COMPARE_TIMM.value:
    # Leave GPU memory to PyTorch: JAX would otherwise take 75% up front
    # (read when the backend starts, by the device count just below).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  accum_steps = max(config.accum_steps, 1)
  # The devices split each micro-batch, as in vit_jax.main.
  cpu_devices.use_one_device_per_core((batch_size // accum_steps,))
  # Checked here: jax's own error is a traceback from deep in the first step
  # (the batch's placement, or its reshape into micro-batches). The devices
  # of a model group share their examples, so only data x fsdp must divide.
  num_devices = jax.device_count()
  shards, _ = config_checks.batch_shards(config.mesh, num_devices)
  if batch_size % (multiple := accum_steps * shards):
    splitters = (f"the {num_devices} devices" if shards == num_devices
                 else f"the {shards} batch shards (data x fsdp)")
    accum = f" x config.accum_steps={accum_steps}" if accum_steps > 1 else ""
    raise app.UsageError(f"--batch={batch_size} is not divisible by {splitters}"
                         f"{accum}; pass a multiple of {multiple}")
  if _AGAINST.value is not None:
    if _COMPARE_TIMM.value or _PROFILE.value is not None:
      raise app.UsageError("--against compares two configs' train steps; "
                           "run --compare-timm and --profile on their own")
    try:
      other = common.with_overrides(config, _AGAINST.value)
      config_checks.check_fields(other)
    except ValueError as e:
      raise app.UsageError(f"--against: {e}") from None
    result = benchmarking.compare(config, other, batch_size, steps=_STEPS.value,
                                  rounds=_ROUNDS.value, warmup=_WARMUP.value)
    result["against_overrides"] = _AGAINST.value
  else:
    result = measure_with_timm(config, batch_size)
  text = json.dumps(result, indent=2)
  print(text)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  cli.run(main)
