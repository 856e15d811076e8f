r"""Times the compiled train step and inference on the devices at hand.

  python scripts/benchmark.py --config=configs/benchmark.py:variant=Ti/16 \
      --batch=32 --steps=10 [--compare-timm]

The train step is `vit_jax.steps.make_train_step`, the function `train.py`
runs, jitted over a data-parallel mesh of every device with the state
donated, on synthetic batches that already sit on the devices: what is timed
is the step alone, with no input pipeline. After `--warmup` steps, `--rounds`
rounds of `--steps` steps each are run back to back and synchronised only at
the end of a round, so the host never stalls the device inside a round; the
step time is a round's time / steps, reported as the median and the spread
over rounds. MFU counts the model's FLOPs (`accounting.analytic_flops_per_
example`) against the devices' peak (`accounting.peak_flops_per_device`; on
CPU a matmul measured at start-up). XLA's own FLOP count is printed beside it.

`--compare-timm` also times timm's VisionTransformer of the same shape (class
token, no pre_logits, same classes) in the same process, eager PyTorch as
timm trains: AdamW, global-norm clipping, autocast bf16 when the config's
dtype is bfloat16, at the same batch; and prints our images/s over timm's.
It needs `pip install -e .[timm]`.

Prints one JSON object; `--out=FILE` also writes it there.
"""
import json
import os
import resource
import statistics
import sys
import time

if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from vit_jax import host_malloc
  host_malloc.reexec_with_tunables()

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", "configs/benchmark.py", "Config whose model and step are timed.",
    lock_config=True)
flags.DEFINE_integer("batch", None, "Global batch (default: config.global_batch).")
flags.DEFINE_integer("steps", 10, "Steps per timed round.")
flags.DEFINE_integer("rounds", 5, "Timed rounds; the median and spread are over them.")
flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation.")
flags.DEFINE_bool("inference", True, "Also time the inference forward pass.")
flags.DEFINE_bool("compare-timm", False, "Also time timm's equivalent model.")
flags.DEFINE_string("out", None, "Also write the JSON here.")


# ---------------------------------------------------------------------------
# Timing.
# ---------------------------------------------------------------------------
def time_rounds(run_step, sync, *, steps, rounds, warmup, batch):
  """Step-time statistics of ``run_step``; ``sync`` waits for the device."""
  for _ in range(warmup):
    run_step()
  sync()
  faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  step_seconds = []
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(steps):
      run_step()
    sync()
    step_seconds.append((time.perf_counter() - start) / steps)
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
  median = statistics.median(step_seconds)
  return {
      "img_per_sec": batch / median,
      "step_ms_median": 1e3 * median,
      "step_ms_min": 1e3 * min(step_seconds),
      "step_ms_max": 1e3 * max(step_seconds),
      "page_faults_per_step": faults / (steps * rounds),
  }


def with_mfu(stats, *, flops_per_example, num_devices, peak_per_device):
  stats["mfu"] = (flops_per_example * stats["img_per_sec"]
                  / (num_devices * peak_per_device))
  stats["img_per_sec_per_device"] = stats["img_per_sec"] / num_devices
  return stats


# ---------------------------------------------------------------------------
# vit_jax.
# ---------------------------------------------------------------------------
def benchmark_jax(config, batch_size):
  import jax
  import jax.numpy as jnp

  from vit_jax import accounting, losses, models, optim, sharding, steps

  mesh = sharding.make_mesh(config.mesh)
  devices = mesh.devices.flat
  model = models.get_model(config.variant, num_classes=config.data.num_classes,
                           **config.model)
  schedule = optim.make_schedule(config.lr, config.total_steps)
  tx = optim.make_optimizer(config.optim, schedule)
  size = config.image_size
  images_shape = (batch_size, size, size, 3)

  def init_state():
    params = model.init(jax.random.key(config.seed), jnp.zeros((1, size, size, 3)),
                        train=False)["params"]
    return {"step": jnp.zeros((), jnp.int32), "params": params,
            "opt_state": tx.init(params)}

  abstract_state = jax.eval_shape(init_state)
  state_shardings = sharding.state_shardings(mesh, abstract_state, config.mesh)
  state = jax.jit(init_state, out_shardings=state_shardings)()
  batch_sharding = sharding.batch_sharding(mesh)
  image_key, label_key = jax.random.split(jax.random.key(1))
  batch = jax.device_put({
      "image": jax.random.normal(image_key, images_shape),
      "labels": jax.nn.one_hot(jax.random.randint(
          label_key, (batch_size,), 0, config.data.num_classes),
          config.data.num_classes)}, batch_sharding)

  train_step = jax.jit(
      steps.make_train_step(model, tx, losses.get_loss(config.loss), schedule,
                            config, mesh),
      in_shardings=(state_shardings, batch_sharding),
      out_shardings=(state_shardings, sharding.replicated(mesh)),
      donate_argnums=0)
  start = time.perf_counter()
  compiled = train_step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start

  holder = {"state": state}
  last = {}

  def run_train_step():
    holder["state"], last["metrics"] = compiled(holder["state"], batch)

  def sync():
    jax.block_until_ready((holder["state"], last.get("metrics")))

  peak = accounting.peak_flops_per_device(devices[0], config.model.dtype)
  flops = accounting.analytic_flops_per_example(model, size, train=True)
  xla_flops = accounting.compiled_flops(compiled)
  common = dict(steps=FLAGS.steps, rounds=FLAGS.rounds, warmup=FLAGS.warmup,
                batch=batch_size)
  train = with_mfu(time_rounds(run_train_step, sync, **common),
                   flops_per_example=flops, num_devices=mesh.size,
                   peak_per_device=peak)
  train.update(
      flops_per_example=flops,
      xla_flops_per_example=(xla_flops * mesh.size / batch_size
                             if xla_flops else None),
      compile_s=compile_s,
      compiled_memory_bytes=_compiled_bytes(compiled),
      peak_device_memory_bytes=_peak_device_bytes(devices[0]))

  result = {
      "device": devices[0].device_kind, "platform": devices[0].platform,
      "num_devices": mesh.size, "variant": config.variant, "image_size": size,
      "batch": batch_size, "dtype": config.model.dtype,
      "peak_flops_per_device": peak, "train": train,
  }
  if FLAGS.inference:
    params = holder["state"]["params"]
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False),
                      in_shardings=(state_shardings["params"], batch_sharding))
    start = time.perf_counter()
    compiled_forward = forward.lower(params, batch["image"]).compile()
    forward_compile_s = time.perf_counter() - start
    out = {}

    def run_forward():
      out["logits"] = compiled_forward(params, batch["image"])

    inference_flops = accounting.analytic_flops_per_example(model, size, train=False)
    result["inference"] = with_mfu(
        time_rounds(run_forward, lambda: jax.block_until_ready(out["logits"]),
                    **common),
        flops_per_example=inference_flops, num_devices=mesh.size,
        peak_per_device=peak)
    result["inference"].update(flops_per_example=inference_flops,
                               compile_s=forward_compile_s)
  result["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  return result, model


def _compiled_bytes(compiled):
  """Device bytes XLA plans for the step: arguments, outputs and scratch."""
  try:
    analysis = compiled.memory_analysis()
  except (NotImplementedError, RuntimeError):
    return None
  if analysis is None:
    return None
  return int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
             - analysis.alias_size_in_bytes + analysis.temp_size_in_bytes)


def _peak_device_bytes(device):
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


# ---------------------------------------------------------------------------
# timm, for comparison.
# ---------------------------------------------------------------------------
def benchmark_timm(config, model, batch_size, *, peak, num_devices):
  """timm's eager train step for the same ViT, on one torch device."""
  try:
    import torch
    from timm.models.vision_transformer import VisionTransformer
  except ImportError as e:
    raise SystemExit(f"--compare-timm needs torch and timm ({e}); install "
                     f"them with: pip install -e .[timm]") from None
  if model.representation_size:
    raise SystemExit("--compare-timm: timm's ViT has no pre_logits; use a "
                     "config with model.representation_size=None")
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  if device.type == "cpu":
    torch.set_num_threads(os.cpu_count())
  net = VisionTransformer(
      img_size=config.image_size, patch_size=model.patch_size,
      embed_dim=model.hidden_size, depth=model.num_layers,
      num_heads=model.num_heads, mlp_ratio=model.mlp_dim / model.hidden_size,
      num_classes=config.data.num_classes,
      class_token=model.classifier == "token",
      global_pool="token" if model.classifier == "token" else "avg").to(device)
  net.train()
  optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr.base,
                                betas=(config.optim.b1, config.optim.b2),
                                weight_decay=config.optim.weight_decay)
  amp = config.model.dtype == "bfloat16"
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

  stats = time_rounds(run_step, sync, steps=FLAGS.steps, rounds=FLAGS.rounds,
                      warmup=FLAGS.warmup, batch=batch_size)
  # One torch device against the same per-device peak as ours.
  torch_devices = 1 if device.type == "cuda" else num_devices
  stats = with_mfu(stats, peak_per_device=peak, num_devices=torch_devices,
                   flops_per_example=_flops(model, size))
  stats.update(
      torch=torch.__version__, amp_bf16=amp, threads=torch.get_num_threads(),
      peak_device_memory_bytes=(torch.cuda.max_memory_allocated()
                                if device.type == "cuda" else None))
  return stats


def _flops(model, size):
  from vit_jax import accounting
  return accounting.analytic_flops_per_example(model, size, train=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = FLAGS.config
  batch_size = FLAGS.batch or config.global_batch
  if FLAGS["compare-timm"].value:
    # Leave GPU memory to PyTorch: JAX would otherwise take 75% up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  result, model = benchmark_jax(config, batch_size)
  if FLAGS["compare-timm"].value:
    result["timm"] = benchmark_timm(config, model, batch_size,
                                    peak=result["peak_flops_per_device"],
                                    num_devices=result["num_devices"])
    result["speedup_vs_timm"] = (result["train"]["img_per_sec"]
                                 / result["timm"]["img_per_sec"])
  text = json.dumps(result, indent=2)
  print(text)
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  app.run(main)
