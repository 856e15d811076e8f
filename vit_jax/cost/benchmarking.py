"""Timing the compiled train step and inference, for the benchmark scripts.

The train step is `vit_jax.train.steps.jit_train_step`, the function the
training loop runs, jitted over a data-parallel mesh of every device with the
state donated, on synthetic batches that already sit on the devices: what is
timed is the step alone, with no input pipeline. After ``warmup`` steps,
``rounds`` rounds of ``steps`` steps each are run back to back and
synchronised only at the end of a round, so the host never stalls the device
inside a round; the step time is a round's time / steps, reported as the
median and the spread over rounds. MFU (`accounting.mfu`) counts the model's
FLOPs (`accounting.analytic_flops_per_example`) against the devices' peak
(`accounting.peak_flops_per_device`; on CPU the higher of two matmul
measurements, before and after the timed rounds). `compare` times two
configs' train steps in one process with their rounds interleaved, for
changes smaller than the host's drift.
"""
import resource
import statistics
import time

import jax

from vit_jax.cost import accounting, profiling
from vit_jax.runtime import cpu_devices
from vit_jax.train import sharding
from vit_jax.train import steps as train_steps  # `steps` counts steps below


def time_rounds(run_step, sync, *, steps, rounds, warmup, batch):
  """Step-time statistics of ``run_step``; ``sync`` waits for the device."""
  for _ in range(warmup):
    run_step()
  sync()
  faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  step_seconds = [_round_seconds(run_step, sync, steps) for _ in range(rounds)]
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
  stats = _step_stats(step_seconds, batch)
  stats["page_faults_per_step"] = faults / (steps * rounds)
  return stats


def _round_seconds(run_step, sync, steps):
  """Seconds per step over ``steps`` steps run back to back."""
  start = time.perf_counter()
  for _ in range(steps):
    run_step()
  sync()
  return (time.perf_counter() - start) / steps


def _step_stats(step_seconds, batch):
  median = statistics.median(step_seconds)
  return {
      "img_per_sec": batch / median,
      "step_ms_median": 1e3 * median,
      "step_ms_min": 1e3 * min(step_seconds),
      "step_ms_max": 1e3 * max(step_seconds),
  }


def with_mfu(stats, *, flops_per_example, num_devices, peak_per_device):
  """``stats`` with its MFU and per-device throughput added."""
  stats["mfu"] = accounting.mfu(flops_per_example, stats["img_per_sec"],
                                num_devices=num_devices,
                                peak_flops_per_device=peak_per_device)
  stats["img_per_sec_per_device"] = stats["img_per_sec"] / num_devices
  return stats


class TrainStep:
  """``config``'s train step, compiled for its mesh, with its state and batch.

  The state is donated to each step and replaced by the step's output, so
  ``run`` can be called any number of times.
  """

  def __init__(self, config, batch_size):
    self.mesh = mesh = sharding.make_mesh(config.mesh)
    parts = train_steps.training_parts(config, total_steps=config.total_steps)
    self.model = parts.model
    size = config.image_size
    self.state_shardings = sharding.state_shardings(
        mesh, parts.abstract_state(), config.mesh)
    self.state = parts.init_state(self.state_shardings)
    self.batch_sharding = sharding.batch_sharding(mesh)
    image_key, label_key = jax.random.split(jax.random.key(1))
    self.batch = jax.device_put({
        "image": jax.random.normal(image_key, (batch_size, size, size, 3)),
        "labels": jax.nn.one_hot(jax.random.randint(
            label_key, (batch_size,), 0, config.data.num_classes),
            config.data.num_classes)}, self.batch_sharding)
    train_step = parts.jit_train_step(mesh, self.state_shardings)
    start = time.perf_counter()
    self.compiled = train_step.lower(self.state, self.batch).compile()
    self.compile_s = time.perf_counter() - start
    self.metrics = None

  def run(self):
    self.state, self.metrics = self.compiled(self.state, self.batch)

  def sync(self):
    jax.block_until_ready((self.state, self.metrics))


def measure(config, batch_size, *, steps, rounds, warmup, inference=True,
            profile_dir=None):
  """Times the train step (and inference) of ``config`` at ``batch_size``.

  With ``profile_dir``, then traces ``steps`` more train steps there, after
  all timing so the profiler slows none of it, and adds the trace's top
  kernels (`profiling.top_kernels`) as ``profile``. Returns (the result dict
  that `scripts/benchmark.py` prints, the model).
  """
  step = TrainStep(config, batch_size)
  mesh, model, size = step.mesh, step.model, config.image_size
  devices = mesh.devices.flat
  peak_reads = [accounting.peak_flops_per_device(devices[0], config.model.dtype)]
  xla_flops = accounting.compiled_flops(step.compiled)
  common = dict(steps=steps, rounds=rounds, warmup=warmup, batch=batch_size)
  train = time_rounds(step.run, step.sync, **common)
  train.update(
      flops_per_example=accounting.analytic_flops_per_example(model, size, train=True),
      xla_flops_per_example=accounting.compiled_flops_per_example(
          xla_flops, config, num_devices=mesh.size, global_batch=batch_size),
      compile_s=step.compile_s,
      compiled_memory_bytes=_compiled_bytes(step.compiled),
      peak_device_memory_bytes=_peak_device_bytes(devices[0]))
  result = {**_what_ran(config, mesh, batch_size), "train": train}
  if inference:
    params = step.state["params"]
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False),
                      in_shardings=(step.state_shardings["params"], step.batch_sharding))
    start = time.perf_counter()
    compiled_forward = forward.lower(params, step.batch["image"]).compile()
    forward_compile_s = time.perf_counter() - start
    out = {}

    def run_forward():
      out["logits"] = compiled_forward(params, step.batch["image"])

    result["inference"] = time_rounds(
        run_forward, lambda: jax.block_until_ready(out["logits"]), **common)
    result["inference"].update(
        flops_per_example=accounting.analytic_flops_per_example(model, size, train=False),
        compile_s=forward_compile_s)

  peak = _peak(devices[0], config.model.dtype, peak_reads)
  result.update(peak_flops_per_device=peak, peak_flops_reads=peak_reads)
  for part in ("train", "inference"):
    if part in result:
      with_mfu(result[part], flops_per_example=result[part]["flops_per_example"],
               num_devices=mesh.size, peak_per_device=peak)
  result["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  if profile_dir is not None:
    trace = profiling.profile_train_step(step, steps=steps, logdir=profile_dir)
    result["profile"] = {"trace": trace, **profiling.top_kernels(trace, steps=steps)}
  return result, model


def compare(config, other, batch_size, *, steps, rounds, warmup):
  """Times the train steps of ``config`` and ``other`` in one process.

  A shared host's speed drifts between processes and between moments by
  more than many changes are worth (docs/benchmarks.md), so two
  separate runs cannot tell a 5% change. Here both steps are compiled side
  by side and their rounds interleaved, the order alternating (A B, B A,
  ...), so a drift slows both alike. Returns the result dict that
  `scripts/benchmark.py --against` prints: each step's statistics and MFU
  (against the peak at its own dtype), the median over rounds of other's
  round time / config's, and in how many rounds other was faster.
  """
  configs = {"train": config, "against": other}
  timed = {name: TrainStep(c, batch_size) for name, c in configs.items()}
  mesh = timed["train"].mesh
  devices = mesh.devices.flat
  # An override may change the compute dtype, and with it the peak.
  peak_reads = {c.model.dtype: [accounting.peak_flops_per_device(devices[0], c.model.dtype)]
                for c in configs.values()}
  for step in timed.values():
    for _ in range(warmup):
      step.run()
    step.sync()
  seconds = {name: [] for name in timed}
  for i in range(rounds):
    for name in (("train", "against") if i % 2 == 0 else ("against", "train")):
      seconds[name].append(_round_seconds(timed[name].run, timed[name].sync, steps))
  peaks = {dtype: _peak(devices[0], dtype, reads) for dtype, reads in peak_reads.items()}
  result = _what_ran(config, mesh, batch_size)
  for name, step in timed.items():
    dtype = configs[name].model.dtype
    stats = _step_stats(seconds[name], batch_size)
    stats.update(
        flops_per_example=accounting.analytic_flops_per_example(
            step.model, configs[name].image_size, train=True),
        compile_s=step.compile_s, peak_flops_per_device=peaks[dtype],
        peak_flops_reads=peak_reads[dtype])
    result[name] = with_mfu(stats, flops_per_example=stats["flops_per_example"],
                            num_devices=mesh.size, peak_per_device=peaks[dtype])
  ratios = [b / a for a, b in zip(seconds["train"], seconds["against"])]
  result.update(against_over_train_step_time=statistics.median(ratios),
                rounds_against_faster=sum(r < 1 for r in ratios), rounds=rounds)
  return result


def _what_ran(config, mesh, batch_size):
  """The head of a result: devices, host, jax, model, resolution, batch and dtype."""
  device = mesh.devices.flat[0]
  return {"device": device.device_kind, "platform": device.platform,
          "host_cpu": cpu_devices.host_cpu_name(), "jax": jax.__version__,
          "num_devices": mesh.size, "variant": config.variant,
          "image_size": config.image_size, "batch": batch_size,
          "dtype": config.model.dtype}


def _peak(device, dtype, reads):
  """The devices' peak FLOP/s, from ``reads`` and, on CPU, one more read now.

  A shared host's speed drifts between moments; a peak read in a slow one
  would inflate MFU, so the CPU peak is read again after the timed rounds
  and the higher read counts. ``reads`` gets the new read appended.
  """
  if device.platform == "cpu":
    accounting.measured_matmul_flops.cache_clear()
    reads.append(accounting.peak_flops_per_device(device, dtype))
  return max(reads)


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
