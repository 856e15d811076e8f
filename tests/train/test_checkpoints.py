"""vit_jax/train/checkpoints.py: what a damaged checkpoint's error says."""
import os

import numpy as np
import pytest

from vit_jax.train import checkpoints


def test_a_checkpoint_without_its_manifest_is_one_short_line_without_tensorstore_spec(
    tmp_path):
  """The error names the step directory and the missing array, not tensorstore's spec."""
  manager = checkpoints.make_manager(str(tmp_path))
  state = {"step": np.int32(3), "params": {"kernel": np.ones((2, 3), np.float32)}}
  checkpoints.save(manager, 3, state, {"examples_seen": 0})
  manager.wait_until_finished()
  step_dir = checkpoints.step_dir(manager, 3)
  os.remove(os.path.join(step_dir, "state", "manifest.ocdbt"))
  with pytest.raises(ValueError) as raised:
    checkpoints.saved_arrays(checkpoints.make_manager(str(tmp_path)), 3)
  message = str(raised.value)
  assert message.startswith(f"{step_dir} is not a readable checkpoint (truncated or "
                            f"corrupt?): "), message
  assert message.endswith("does not exist"), message
  assert "tensorstore_spec" not in message and "\n" not in message
