"""The launchers' one-CPU-device-per-core set-up, in fresh processes.

The count must be set before the CPU backend starts, and this test process
has already started its own with 8 emulated devices, so each case runs a
new Python.
"""
import os
import subprocess
import sys

import jax
import pytest

from vit_jax.runtime import cpu_devices
from repo_root import REPO



@pytest.mark.parametrize("batch_sizes, cores, expected", [
    ((256, 1000), 2, 2),
    ((256, 1000), 3, 2),  # 3 divides neither batch
    ((256, 1000), 7, 4),
    ((256, 1000), 8, 8),
    ((6,), 4, 3),
    ((7,), 2, 1),
    ((32,), 1, 1),
    ((32,), 0, 1),  # an affinity mask can't be empty, but never 0 devices
])
def test_the_count_is_the_most_devices_that_split_every_batch(
    batch_sizes, cores, expected):
  assert cpu_devices.count_for(batch_sizes, cores) == expected


def run_python(code, **environment):
  """Runs ``code`` in a new Python with no device count of the user's."""
  env = {name: value for name, value in os.environ.items()
         if name not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
  env.update(environment, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=120)


def devices_after_setup(batch_sizes, **environment):
  """(what use_one_device_per_core returned, jax.local_device_count())."""
  result = run_python(
      "import jax; from vit_jax.runtime import cpu_devices; "
      f"count = cpu_devices.use_one_device_per_core({batch_sizes!r}); "
      "print(count, jax.local_device_count())", **environment)
  assert result.returncode == 0, result.stderr[-2000:]
  returned, devices = result.stdout.split()
  return returned, int(devices)


def test_a_cpu_host_gets_one_device_per_core_that_the_batch_allows():
  cores = len(os.sched_getaffinity(0))
  expected = cpu_devices.count_for((12, 8), cores)
  assert devices_after_setup((12, 8)) == (str(expected), expected)


@pytest.mark.parametrize("environment", [
    {"JAX_NUM_CPU_DEVICES": "3"},
    {"XLA_FLAGS": "--xla_force_host_platform_device_count=3"},
], ids=["JAX_NUM_CPU_DEVICES", "XLA_FLAGS"])
def test_the_users_own_device_count_is_kept(environment):
  assert devices_after_setup((12, 8), **environment) == ("None", 3)


def test_setting_the_count_after_the_backend_started_is_refused():
  result = run_python("import jax; jax.devices(); from vit_jax.runtime import cpu_devices; "
                      "cpu_devices.use_one_device_per_core((8,))")
  assert result.returncode != 0
  assert "before backends are initialized" in result.stderr


def test_a_count_set_in_code_before_the_setup_is_kept():
  """jax_num_cpu_devices set by the user's own code is their choice too."""
  result = run_python(
      "import jax; jax.config.update('jax_num_cpu_devices', 3); "
      "from vit_jax.runtime import cpu_devices; "
      "print(cpu_devices.use_one_device_per_core((12, 8)), jax.local_device_count())")
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.split() == ["None", "3"]


def test_a_process_of_a_multi_process_run_keeps_its_device_count(monkeypatch):
  """Processes that share a host would each claim every core, so after
  jax.distributed.initialize nothing is set, with no count of the user's."""
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.delenv("JAX_NUM_CPU_DEVICES", raising=False)
  assert not cpu_devices.chosen_by_user()
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
  updates = []
  monkeypatch.setattr(jax.config, "update", lambda *args: updates.append(args))
  assert cpu_devices.use_one_device_per_core((12, 8)) is None
  assert updates == []
