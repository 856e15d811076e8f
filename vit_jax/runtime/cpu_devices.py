"""One JAX device per CPU core, for single-process runs on CPU hosts.

One XLA:CPU program leaves a host's cores idle for part of every step: it
splits matmuls and large elementwise ops over the cores, but not every op
(flax's LayerNorm forward takes as long on two cores as on one, where a
softmax speeds up), and each split op ends in a join that waits for the
slowest part. So the launchers (`vit_jax.main`, `vit_jax.evaluate`,
`scripts/benchmark.py`) split a CPU host into one JAX device per core, as a
TPU host has one per TensorCore, and the data-parallel mesh gives each
device its share of the batch: the devices' programs run side by side and
fill each other's idle time. docs/benchmarks.md has the measurements.

The count is the largest number, up to the cores this process may use, that
divides every batch the run splits over its devices, so a config that runs
on one device still runs. The user's own choice wins: JAX_NUM_CPU_DEVICES,
--xla_force_host_platform_device_count in XLA_FLAGS, or jax_num_cpu_devices
set in code. Multi-process runs keep theirs too: processes that share a host
would each claim every core. On accelerator hosts the CPU devices hold no
work and the count changes nothing.
"""
import os

import jax

_FLAG = "--xla_force_host_platform_device_count"


def chosen_by_user() -> bool:
  """Whether the number of CPU devices was already set by the user."""
  return ("JAX_NUM_CPU_DEVICES" in os.environ
          or _FLAG in os.environ.get("XLA_FLAGS", "")
          or jax.config.jax_num_cpu_devices != -1)


def count_for(batch_sizes, cores: int) -> int:
  """The largest device count up to ``cores`` that divides every batch size."""
  return max(n for n in range(1, max(cores, 1) + 1)
             if all(size % n == 0 for size in batch_sizes))


def use_one_device_per_core(batch_sizes) -> int | None:
  """Makes the CPU backend start with one device per core; returns the count.

  Call it before anything touches the devices (jax refuses the setting
  once the CPU backend has started). Returns None, changing nothing, when
  the user chose a count or this process is one of a multi-process run.
  """
  if chosen_by_user() or jax.distributed.is_initialized():
    return None
  count = count_for(batch_sizes, len(os.sched_getaffinity(0)))
  jax.config.update("jax_num_cpu_devices", count)
  return count


def host_cpu_name() -> str:
  """The host CPU's model name, as /proc/cpuinfo gives it: measured figures
  name the CPU they were measured on, as the same cores differ between hosts."""
  try:
    with open("/proc/cpuinfo") as f:
      return next((line.split(":", 1)[1].strip() for line in f
                   if line.startswith("model name")), "unknown")
  except OSError:  # not Linux
    return "unknown"
