"""vit_jax/train/checkpoints.py: what a damaged checkpoint's or a failed write's error says."""
import os
import subprocess
import sys

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
