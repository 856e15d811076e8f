"""vit_jax/train/checkpoints.py: what a damaged checkpoint's or a failed write's error says."""
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from repo_root import REPO
from vit_jax.train import checkpoints


def test_a_checkpoint_without_its_manifest_is_one_short_line_without_tensorstore_spec(
    tmp_path):
  """The error names the step directory and the missing array, not tensorstore's spec."""
  manager = checkpoints.make_manager(str(tmp_path))
  state = {"step": np.int32(3), "params": {"kernel": np.ones((2, 3), np.float32)}}
  checkpoints.save(manager, 3, state, {"examples_seen": 0})
  manager.wait_until_finished()
  manager.close()  # its threads, which a collected manager leaves to another test
  step_dir = checkpoints.step_dir(manager, 3)
  os.remove(os.path.join(step_dir, "state", "manifest.ocdbt"))
  with pytest.raises(ValueError) as raised, checkpoints.make_manager(str(tmp_path)) as again:
    checkpoints.saved_arrays(again, 3)
  message = str(raised.value)
  assert message.startswith(f"{step_dir} is not a readable checkpoint (truncated or "
                            f"corrupt?): "), message
  assert message.endswith("does not exist"), message
  assert "tensorstore_spec" not in message and "\n" not in message


@pytest.mark.parametrize("with_ema", [True, False])
def test_the_parameters_are_read_to_host_memory_alone(tmp_path, with_ema):
  """The EMA where kept, else the parameters, as numpy; the optimizer state,
  4 MiB here, is not read (the host allocates less than a MiB)."""
  params = {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}
  state = {"step": np.int32(3), "params": params,
           "opt_state": [{"mu": {"kernel": np.zeros((1024, 1024), np.float32)}}]}
  if with_ema:
    state["ema_params"] = {"kernel": params["kernel"] + 0.5}
  with checkpoints.make_manager(str(tmp_path)) as manager:
    checkpoints.save(manager, 3, state, {"examples_seen": 0})
    manager.wait_until_finished()
    tracemalloc.start()
    try:
      read = checkpoints.restore_params_on_host(manager, 3)
      _, peak = tracemalloc.get_traced_memory()
    finally:
      tracemalloc.stop()
  assert peak < 2**20, peak
  expected = state["ema_params" if with_ema else "params"]
  assert type(read["kernel"]) is np.ndarray
  np.testing.assert_array_equal(read["kernel"], expected["kernel"])


# A process whose files may not grow past 100 kB (RLIMIT_FSIZE) saves step 1,
# small, then step 2, of a 1 MB array: tensorstore's write of it fails as on
# a full disk, a ValueError, not an OSError.
_FILE_SIZE_LIMITED_SAVE = """
import logging, resource, signal, sys
import numpy as np
from vit_jax.train import checkpoints
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, not the process
manager = checkpoints.make_manager(sys.argv[1])
state = {"step": np.int32(1), "params": {"kernel": np.ones((2, 3), np.float32)}}
checkpoints.save(manager, 1, state, {})
checkpoints.wait(manager)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))
state["params"]["kernel"] = np.arange(250_000, dtype=np.float32).reshape(500, 500)
try:
  checkpoints.save(manager, 2, state, {}, on_error=sys.argv[2])
  checkpoints.wait(manager, on_error=sys.argv[2])
except checkpoints.SaveError as e:
  print("SaveError:", e)
print("committed", manager.all_steps())
"""


@pytest.mark.parametrize("on_error", ["stop", "continue"])
def test_a_write_that_fails_in_tensorstore_is_reported_as_a_failed_save(tmp_path, on_error):
  process = subprocess.run(
      [sys.executable, "-c", _FILE_SIZE_LIMITED_SAVE, str(tmp_path), on_error],
      cwd=REPO, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, PYTHONPATH=REPO))
  assert process.returncode == 0, process.stderr
  message = (f"could not write a checkpoint in {tmp_path}/checkpoints: OUT_OF_RANGE: File "
             f"too large [os_error_code='27']; the last committed checkpoint is step 1")
  if on_error == "stop":
    assert process.stdout.splitlines() == [
        f"SaveError: {message} (config.on_save_error='stop'; 'continue' trains on "
        f"without it)", "committed [1]"]
  else:
    assert process.stdout.splitlines() == ["committed [1]"]
    assert f"{message}; training goes on (config.on_save_error='continue')" in process.stderr
