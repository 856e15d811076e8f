"""The commands' error rule: a user's mistake is one line, a bug a traceback."""
import re
import subprocess
import sys

import numpy as np
import pytest

from vit_jax import evaluate
from vit_jax.data import preprocess
from vit_jax.runtime import cli
from vit_jax.train import workdir_files
from repo_root import REPO


def refused_run_of_main(tmp_path, *flags):
  """The one line `python -m vit_jax.main` ended with on the demo config."""
  process = subprocess.run(
      [sys.executable, "-m", "vit_jax.main", "--config=configs/demo.py",
       f"--workdir={tmp_path / 'run'}", *flags],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert process.returncode == 1, process.stderr
  assert "Traceback" not in process.stderr, process.stderr
  return process.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("flags, message", [
    (["--config.data.data_dir=/nonexistent"],
     "error: dataset 'fashion_mnist_local' (config.data.name) is not prepared in "
     "data_dir '/nonexistent' (config.data.data_dir)"),
    (["--config.ema_decay=2"], "error: config.ema_decay=2.0 must be in [0, 1)"),
    (["--config.init=/nonexistent/vit.npz"],
     "error: checkpoint file /nonexistent/vit.npz does not exist"),
    (["--config.optim.grad_clip_norm=-1"],
     "error: config.optim.grad_clip_norm=-1.0 must be >= 0 (0 turns clipping off"),
    (["--config.foo=1"],
     "error: --config.foo: config has no field 'foo'; valid: accum_steps, "),
    (["--config.optim.wieght_decay=0.1"],
     "error: --config.optim.wieght_decay: config.optim has no field 'wieght_decay' "
     "(did you mean config.optim.weight_decay?); valid: b1, b2, grad_clip_norm, "),
], ids=["missing_dataset", "bad_config_value", "missing_checkpoint",
        "negative_clip_norm", "unknown_field", "misspelt_nested_field"])
def test_main_ends_a_users_mistake_with_one_line_naming_it(
    fashion_data_dir, tmp_path, flags, message):
  line = refused_run_of_main(tmp_path, f"--config.data.data_dir={fashion_data_dir}",
                             *flags)
  assert line.startswith(message), line


def test_a_bad_flag_is_absls_one_line(tmp_path):
  process = subprocess.run(
      [sys.executable, "-m", "vit_jax.evaluate", f"--workdir={tmp_path}", "--nosuch=1"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert process.returncode == 1 and "Traceback" not in process.stderr, process.stderr
  assert "FATAL Flags parsing error: Unknown command line flag 'nosuch'" in process.stderr


def test_evaluate_in_process_names_a_missing_workdir_in_one_line(tmp_path):
  message = f"error: {tmp_path / 'nothing'} does not exist: is it a run's workdir"
  with pytest.raises(SystemExit, match="^" + re.escape(message)):
    cli.call(evaluate.main, evaluate.FLAGS,
             ["evaluate", f"--workdir={tmp_path / 'nothing'}"])


def test_a_bug_in_our_code_keeps_its_traceback(tmp_path, monkeypatch):
  def read_config(workdir):
    return {}["variant"]  # a KeyError: no user's mistake raises one

  monkeypatch.setattr(workdir_files, "read_config", read_config)
  with pytest.raises(KeyError, match="variant"):
    cli.call(evaluate.main, evaluate.FLAGS, ["evaluate", f"--workdir={tmp_path}"])


def test_a_value_error_from_a_library_is_a_bug_not_a_users_mistake():
  def main(argv):
    np.reshape(np.zeros(3), (2, 2))  # numpy raises the ValueError

  with pytest.raises(ValueError, match="cannot reshape"):
    cli.exit_on_user_error(main)(["program"])


def test_a_value_error_our_code_raises_is_a_users_mistake():
  def main(argv):
    preprocess.parse("resize(")

  with pytest.raises(SystemExit, match=r"^error: Malformed preprocessing op 'resize\('"):
    cli.exit_on_user_error(main)(["program"])


def test_a_flag_of_one_call_does_not_leak_into_the_next(tmp_path, monkeypatch):
  splits = []

  def read_config(workdir):
    splits.append(evaluate.FLAGS.split)
    raise KeyError("stops the command here")

  monkeypatch.setattr(workdir_files, "read_config", read_config)
  for flags in (["--split=test"], []):
    with pytest.raises(KeyError):
      cli.call(evaluate.main, evaluate.FLAGS, ["evaluate", f"--workdir={tmp_path}", *flags])
  assert splits == ["test", None]
