"""Timing the compiled train step and inference, for the benchmark scripts.

The train step is `vit_jax.steps.make_train_step`, the function `train.py`
runs, jitted over a data-parallel mesh of every device with the state
donated, on synthetic batches that already sit on the devices: what is timed
is the step alone, with no input pipeline. After ``warmup`` steps,
``rounds`` rounds of ``steps`` steps each are run back to back and
synchronised only at the end of a round, so the host never stalls the device
inside a round; the step time is a round's time / steps, reported as the
median and the spread over rounds. MFU counts the model's FLOPs
(`accounting.analytic_flops_per_example`) against the devices' peak
(`accounting.peak_flops_per_device`; on CPU the higher of two matmul
measurements, before and after the timed rounds).
"""
import resource
import statistics
import time

import jax
import jax.numpy as jnp

from vit_jax import accounting, losses, models, optim, sharding
from vit_jax import steps as train_steps  # `steps` counts steps below


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


def measure(config, batch_size, *, steps, rounds, warmup, inference=True):
  """Times the train step (and inference) of ``config`` at ``batch_size``.

  Returns (the result dict that `scripts/benchmark.py` prints, the model).
  """
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
      train_steps.make_train_step(model, tx, losses.get_loss(config.loss),
                                  schedule, config, mesh),
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

  peak_reads = [accounting.peak_flops_per_device(devices[0], config.model.dtype)]
  flops = accounting.analytic_flops_per_example(model, size, train=True)
  xla_flops = accounting.compiled_flops(compiled)
  common = dict(steps=steps, rounds=rounds, warmup=warmup, batch=batch_size)
  train = time_rounds(run_train_step, sync, **common)
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
      "batch": batch_size, "dtype": config.model.dtype, "train": train,
  }
  if inference:
    params = holder["state"]["params"]
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False),
                      in_shardings=(state_shardings["params"], batch_sharding))
    start = time.perf_counter()
    compiled_forward = forward.lower(params, batch["image"]).compile()
    forward_compile_s = time.perf_counter() - start
    out = {}

    def run_forward():
      out["logits"] = compiled_forward(params, batch["image"])

    result["inference"] = time_rounds(
        run_forward, lambda: jax.block_until_ready(out["logits"]), **common)
    result["inference"].update(
        flops_per_example=accounting.analytic_flops_per_example(model, size, train=False),
        compile_s=forward_compile_s)

  if devices[0].platform == "cpu":
    # A shared host's speed drifts between moments; a peak read in a slow
    # one would inflate MFU, so the CPU peak is read again and the higher
    # read counts.
    accounting.measured_matmul_flops.cache_clear()
    peak_reads.append(accounting.peak_flops_per_device(devices[0], config.model.dtype))
  peak = max(peak_reads)
  result.update(peak_flops_per_device=peak, peak_flops_reads=peak_reads)
  for part in ("train", "inference"):
    if part in result:
      with_mfu(result[part], flops_per_example=result[part]["flops_per_example"],
               num_devices=mesh.size, peak_per_device=peak)
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
