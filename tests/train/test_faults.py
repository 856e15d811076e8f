"""Runs that survive: crashes, preemption, bad numbers, bad files, bad configs, disks.

Crashes and preemptions happen to real `python -m vit_jax.main` processes,
through real signals (`tests/fault_injection.py` picks the moment); the rest
is injected in-process. Each test states what a user is promised: nothing
but the steps since the last committed checkpoint is lost, and the resumed
run ends with exactly the parameters of an uninterrupted one.
"""
import errno
import json
import os
import shutil
import subprocess
import sys
from unittest import mock

import jax
import numpy as np
import pytest
from orbax.checkpoint._src.path import async_path

from conftest import tiny_config
from vit_jax import train
from vit_jax.train import checkpoints, steps
from vit_jax.models import pretrained
from vit_jax.data import input_pipeline
from vit_jax.evaluators import classification
from vit_jax.train import preemption
from repo_root import REPO

pytestmark = pytest.mark.slow
# 12 steps, a checkpoint every 4, a training log line every 2 (where the
# subprocess faults fire), dropout on: the data order, the dropout keys and
# the optimizer state all have to resume exactly.
RUN = dict(total_steps=12, log_every=2, checkpoint_every=4, eval_every=12,
           **{"model.dropout_rate": 0.1})


def config_flags(config, data_dir):
  """The command-line flags that turn the demo config into ``config``."""
  from configs import demo

  def leaves(node, prefix=""):
    for key, value in node.items():
      if hasattr(value, "items"):
        yield from leaves(value, f"{prefix}{key}.")
      else:
        yield f"{prefix}{key}", value

  base = dict(leaves(demo.get_config(f"stage=pretrain,data_dir={data_dir}")))
  return [f"--config=configs/demo.py:stage=pretrain,data_dir={data_dir}"] + [
      f"--config.{name}={value}" for name, value in leaves(config)
      if base.get(name) != value]


def run_main(config, data_dir, workdir, fault=None):
  """Runs the job in a fresh process (with ``fault`` injected); (rc, stderr)."""
  command = ([sys.executable, "tests/fault_injection.py", fault] if fault
             else [sys.executable, "-m", "vit_jax.main"])
  result = subprocess.run(
      command + config_flags(config, data_dir) + [f"--workdir={workdir}"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=REPO))
  return result.returncode, result.stderr


def params_of(workdir):
  return pretrained.read_params(workdir)


def assert_same_params(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(x, y)  # bit for bit


def committed_steps(workdir):
  return checkpoints.make_manager(workdir, read_only=True).all_steps()


def train_steps_logged(workdir):
  """The steps of the train records in ``metrics.jsonl``, in file order."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r["step"] for r in map(json.loads, f) if r["split"] == "train"]


@pytest.fixture(scope="module")
def uninterrupted(fashion_data_dir, tmp_path_factory):
  """The parameters of the run that nothing interrupts."""
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  train.train_and_evaluate(tiny_config(fashion_data_dir, **RUN), workdir)
  return params_of(workdir)


# ---------------------------------------------------------------------------
# 1. kill -9 at three moments, one of them inside an asynchronous save.
# ---------------------------------------------------------------------------
def test_kill_9_three_times_then_rerun_ends_with_the_uninterrupted_params(
    fashion_data_dir, tmp_path, uninterrupted):
  config = tiny_config(fashion_data_dir, **RUN)
  workdir = str(tmp_path / "run")
  for fault in ("sigkill:6", "sigkill_save:8", "sigkill:10"):
    resume_from = max(committed_steps(workdir), default=0)
    rc, stderr = run_main(config, fashion_data_dir, workdir, fault)
    assert rc == -9, stderr[-2000:]
    # It resumed from the last committed checkpoint, and the steps the killed
    # run had logged after it were dropped, not logged twice.
    logged = train_steps_logged(workdir)
    assert logged == sorted(set(logged)) and resume_from + 2 in logged, logged
    if fault == "sigkill_save:8":
      # Killed with the files of step 8 written but not committed: the
      # half-written step lies beside the committed ones and is never picked.
      assert 8 not in committed_steps(workdir)
      leftovers = os.listdir(os.path.join(workdir, "checkpoints"))
      assert any(name.startswith("8.orbax-checkpoint-tmp") for name in leftovers)
  rc, stderr = run_main(config, fashion_data_dir, workdir)
  assert rc == 0, stderr[-2000:]
  assert 12 in committed_steps(workdir)
  assert_same_params(params_of(workdir), uninterrupted)


# ---------------------------------------------------------------------------
# 2. SIGTERM: a checkpoint of the step it stopped at, then an exact resume.
# ---------------------------------------------------------------------------
def test_sigterm_saves_the_current_step_and_the_rerun_matches(
    fashion_data_dir, tmp_path, uninterrupted):
  config = tiny_config(fashion_data_dir, **RUN)
  workdir = str(tmp_path / "run")
  rc, stderr = run_main(config, fashion_data_dir, workdir, "sigterm:6")
  assert rc == preemption.EXIT_CODE, stderr[-2000:]
  # The signal lands while step 6 is logged; the loop acts at the next step.
  assert "preempted: stopped at step 7" in stderr
  assert "Traceback" not in stderr
  assert max(committed_steps(workdir)) == 7
  rc, stderr = run_main(config, fashion_data_dir, workdir)
  assert rc == 0, stderr[-2000:]
  assert train_steps_logged(workdir) == [2, 4, 6, 7, 8, 10, 12]
  assert_same_params(params_of(workdir), uninterrupted)


def preempt_at(monkeypatch, at_step):
  """The run is asked to stop at ``at_step``, as SIGTERM would ask."""
  monkeypatch.setattr(preemption.StopRequest, "reached",
                      lambda self, step: step == at_step)


def test_a_run_preempted_at_an_eval_step_evaluates_it_once_on_resume(
    fashion_data_dir, tmp_path, monkeypatch):
  """The preempted run saves and stops without the eval; the resumed one
  makes it up before its first step, and the log holds each step once."""
  config = tiny_config(fashion_data_dir, **dict(RUN, eval_every=4))
  workdir = str(tmp_path / "run")
  preempt_at(monkeypatch, 4)
  with pytest.raises(preemption.Preempted, match="stopped at step 4 "):
    train.train_and_evaluate(config, workdir)
  monkeypatch.undo()
  train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [(r["split"], r["step"]) for r in map(json.loads, f)]
  assert [step for split, step in records if split == "test"] == [4, 8, 12]
  assert train_steps_logged(workdir) == [2, 4, 6, 8, 10, 12]
  # Re-running the finished run evaluates again, replacing its last eval.
  train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    assert [(r["split"], r["step"]) for r in map(json.loads, f)] == records


# ---------------------------------------------------------------------------
# 3. A NaN at step k: stop naming k, or skip it and count it.
# ---------------------------------------------------------------------------
def poison(monkeypatch, at_step):
  """Makes the batch of step ``at_step`` (counted from 1) carry a NaN pixel."""
  real = input_pipeline.train_batches

  def poisoned(*args, start_step=0, **kwargs):
    for step, batch in enumerate(real(*args, start_step=start_step, **kwargs),
                                 start=start_step + 1):
      if step == at_step:
        batch = dict(batch, image=np.array(batch["image"]))
        batch["image"][0, 0, 0, 0] = np.nan
      yield batch

  monkeypatch.setattr(input_pipeline, "train_batches", poisoned)


def test_a_nan_at_step_6_stops_naming_it_and_the_workdir_resumes_from_step_4(
    fashion_data_dir, tmp_path, monkeypatch, uninterrupted):
  config = tiny_config(fashion_data_dir, **dict(RUN, log_every=4))
  workdir = str(tmp_path / "run")
  poison(monkeypatch, at_step=6)
  with pytest.raises(FloatingPointError, match=r"non-finite loss or gradient "
                     r"norm at step 6: .* last good checkpoint is step 4 ") as e:
    train.train_and_evaluate(config, workdir)
  assert "\n" not in str(e.value)
  assert committed_steps(workdir) == [4]  # the state after step 6 never saved
  monkeypatch.undo()
  summary = train.train_and_evaluate(config, workdir)
  assert summary["step"] == 12
  assert train_steps_logged(workdir) == [4, 8, 12]  # resumed at 4
  assert_same_params(params_of(workdir), uninterrupted)


def test_a_nan_before_the_first_checkpoint_says_a_rerun_starts_from_step_0(
    fashion_data_dir, tmp_path, monkeypatch):
  poison(monkeypatch, at_step=2)
  with pytest.raises(FloatingPointError, match=r"at step 2: .*no checkpoint was "
                     r"saved before it, so a rerun starts from step 0 "):
    train.train_and_evaluate(tiny_config(fashion_data_dir, **RUN), str(tmp_path / "run"))


def test_data_that_fails_a_check_after_a_checkpoint_step_leaves_that_step_saved(
    fashion_data_dir, tmp_path, monkeypatch):
  """The batch after step 4 fails a data check (as a strict source's
  miscounted shard does): the run stops, with step 4 committed."""
  real = input_pipeline.train_batches

  def failing(*args, start_step=0, **kwargs):
    for step, batch in enumerate(real(*args, start_step=start_step, **kwargs),
                                 start=start_step + 1):
      if step == 5:
        raise ValueError("shard 3 holds fewer records than its count says")
      yield batch

  monkeypatch.setattr(input_pipeline, "train_batches", failing)
  workdir = str(tmp_path / "run")
  with pytest.raises(ValueError, match="shard 3 holds fewer records"):
    train.train_and_evaluate(tiny_config(fashion_data_dir, **RUN), workdir)
  assert committed_steps(workdir) == [4]


def test_skip_mode_leaves_the_nan_step_out_and_counts_it(
    fashion_data_dir, tmp_path, monkeypatch):
  config = tiny_config(fashion_data_dir, on_nonfinite="skip",
                       **dict(RUN, log_every=4))
  workdir = str(tmp_path / "run")
  poison(monkeypatch, at_step=6)
  train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    skipped = {r["step"]: r["skipped_steps"] for r in map(json.loads, f)
               if r["split"] == "train"}
  assert skipped == {4: 0, 8: 1, 12: 1}
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(params_of(workdir)))


# ---------------------------------------------------------------------------
# 4. Bad configs fail before the train step is built, naming the field; bad files,
#    naming the file.
# ---------------------------------------------------------------------------
def failure_of(config, workdir):
  """The one-line error ``train_and_evaluate`` stops with, which must come
  before it builds the train step (and spends the compile's seconds)."""
  def build_train_step(*args, **kwargs):
    raise AssertionError("the run built its train step before it failed")

  with mock.patch.object(steps.TrainingParts, "jit_train_step", build_train_step), \
       pytest.raises(ValueError) as e:
    train.train_and_evaluate(config, workdir)
  message = str(e.value)
  assert "\n" not in message, message
  return message


def test_bad_configs_fail_before_the_train_step_naming_the_field(fashion_data_dir, tmp_path):
  cases = {"global_batch": dict(global_batch=36),
           "accum_steps": dict(global_batch=32, accum_steps=8),
           "image_size": dict(image_size=18),
           "on_nonfinite": dict(on_nonfinite="ignore"),
           "eval_every": dict(eval_every=0),  # was a ZeroDivisionError at step 1
           "log_every": dict(log_every=-2),
           "keep_checkpoints": dict(keep_checkpoints=0),  # orbax: keep none
           "ema_decay": dict(ema_decay=1.0)}  # would evaluate the initial params
  for field, overrides in cases.items():
    message = failure_of(tiny_config(fashion_data_dir, **overrides), str(tmp_path / field))
    assert f"config.{field}=" in message, message


def test_main_fails_before_training_on_a_resolution_the_patch_does_not_divide(
    fashion_data_dir, tmp_path):
  config = tiny_config(fashion_data_dir, image_size=18)
  rc, stderr = run_main(config, fashion_data_dir, str(tmp_path / "run"))
  assert rc != 0
  assert "config.image_size=18 is not divisible by the patch size 4" in stderr
  assert "compiled in" not in stderr and not os.path.exists(tmp_path / "run"), stderr


@pytest.fixture(scope="module")
def runs_of_two_widths(fashion_data_dir, tmp_path_factory):
  """Workdirs of one-step runs at widths 32 and 48."""
  workdirs = {}
  for width in (32, 48):
    workdirs[width] = str(tmp_path_factory.mktemp(f"width{width}"))
    train.train_and_evaluate(tiny_config(
        fashion_data_dir, total_steps=1,
        **{"model.hidden_size": width, "lr.warmup_steps": 0}),
        workdirs[width])
  return workdirs


def copy_run(source, destination):
  shutil.copytree(source, destination)
  return destination


def test_fine_tuning_from_another_width_fails_naming_the_parameter(
    fashion_data_dir, tmp_path, runs_of_two_widths):
  config = tiny_config(fashion_data_dir, init=runs_of_two_widths[48])
  message = failure_of(config, str(tmp_path / "finetune"))
  assert message.startswith(runs_of_two_widths[48]), message
  assert "has shape" in message, message


def test_resuming_a_workdir_of_another_width_names_its_checkpoint_and_the_parameter(
    fashion_data_dir, tmp_path, runs_of_two_widths):
  workdir = copy_run(runs_of_two_widths[48], str(tmp_path / "run"))
  message = failure_of(tiny_config(fashion_data_dir, total_steps=8), workdir)
  assert message.startswith(
      f"{os.path.join(workdir, 'checkpoints', '1')}: parameter "
      f"Transformer/encoder_norm/bias has shape (48,) in the checkpoint but "
      f"(32,) in the model"), message
  assert f"resume it with the model and optimizer of {workdir}/config.json" in message


@pytest.mark.parametrize("field, value, array", [
    ("ema_decay", 0.9, "ema_params/Transformer/encoder_norm/bias"),
    ("optim.grad_clip_norm", 0.0, "opt_state/0/count"),  # Adam moves up the chain
    ("optim.weight_decay", 0.0, "opt_state/2/count")])  # so does the schedule
def test_resuming_with_a_part_of_the_state_switched_on_or_off_names_the_array(
    fashion_data_dir, tmp_path, runs_of_two_widths, field, value, array):
  """An average or an optimizer stage more or less: not a corrupt checkpoint."""
  workdir = copy_run(runs_of_two_widths[32], str(tmp_path / "run"))
  config = tiny_config(fashion_data_dir, total_steps=8, **{field: value})
  message = failure_of(config, workdir)
  assert message.startswith(
      f"{os.path.join(workdir, 'checkpoints', '1')}: array {array} of the model "
      f"is missing in the checkpoint"), message
  assert f"resume it with the model and optimizer of {workdir}/config.json" in message


def test_a_checkpoint_of_another_model_names_its_directory(
    fashion_data_dir, tmp_path, runs_of_two_widths):
  workdir = copy_run(runs_of_two_widths[32], str(tmp_path / "run"))
  step_dir = os.path.join(workdir, "checkpoints", "1")
  shutil.rmtree(step_dir)
  copy_run(os.path.join(runs_of_two_widths[48], "checkpoints", "1"), step_dir)
  message = failure_of(tiny_config(fashion_data_dir, total_steps=8), workdir)
  assert message.startswith(f"{step_dir}: parameter "), message
  assert "has shape" in message


def test_a_run_that_fails_before_its_loop_closes_what_it_opened(
    fashion_data_dir, tmp_path, monkeypatch):
  """orbax's threads, the input's and the metric files stop with the run, also
  when it fails while setting up (here: its first evaluation, at the start
  of a resumed run)."""
  closed = []
  make_manager = checkpoints.make_manager

  def spied_manager(*args, **kwargs):
    manager = make_manager(*args, **kwargs)
    close = manager.close
    manager.close = lambda: closed.append("manager") or close()
    return manager

  prefetch = input_pipeline.prefetch_to_devices

  def spied_prefetch(*args, **kwargs):
    batches = prefetch(*args, **kwargs)

    def spied():
      try:
        yield from batches
      finally:
        closed.append("batches")
    return spied()

  workdir = str(tmp_path / "run")
  config = tiny_config(fashion_data_dir, **dict(RUN, total_steps=4))
  train.train_and_evaluate(config, workdir)
  monkeypatch.setattr(checkpoints, "make_manager", spied_manager)
  monkeypatch.setattr(input_pipeline, "prefetch_to_devices", spied_prefetch)

  def failing_eval(*args, **kwargs):
    raise RuntimeError("the eval failed")

  monkeypatch.setattr(classification, "evaluate", failing_eval)
  with pytest.raises(RuntimeError, match="the eval failed"):  # re-evaluates step 4
    train.train_and_evaluate(tiny_config(fashion_data_dir, **RUN), workdir)
  assert closed == ["batches", "manager"]


def test_a_truncated_checkpoint_names_its_directory(
    fashion_data_dir, tmp_path, runs_of_two_widths):
  workdir = copy_run(runs_of_two_widths[32], str(tmp_path / "run"))
  step_dir = os.path.join(workdir, "checkpoints", "1")
  for root, _, files in os.walk(os.path.join(step_dir, "state")):
    for name in files:
      path = os.path.join(root, name)
      os.truncate(path, os.path.getsize(path) // 2)
  message = failure_of(tiny_config(fashion_data_dir, total_steps=8), workdir)
  assert message.startswith(f"{step_dir} is not a readable checkpoint"), message


# ---------------------------------------------------------------------------
# Disk: a checkpoint that cannot be written.
# ---------------------------------------------------------------------------
def read_only_from_step(monkeypatch, workdir, step):
  """Checkpoint directories of ``step`` and later cannot be created.

  Orbax's own mkdir raises what a read-only file system does; a chmod would
  not do, since root (as in many CI containers) may write anyway.
  """
  mkdir = async_path.mkdir

  async def read_only_mkdir(path, *args, **kwargs):
    name = os.path.basename(str(path)).split(".")[0]
    if str(path).startswith(workdir) and name.isdigit() and int(name) >= step:
      raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
    return await mkdir(path, *args, **kwargs)

  monkeypatch.setattr(async_path, "mkdir", read_only_mkdir)


def test_a_failed_checkpoint_write_stops_cleanly_keeping_the_previous_one(
    fashion_data_dir, tmp_path, monkeypatch):
  workdir = str(tmp_path / "run")
  read_only_from_step(monkeypatch, workdir, 8)
  with pytest.raises(checkpoints.SaveError, match=r"Read-only file system.* "
                     r"last committed checkpoint is step 4 ") as e:
    train.train_and_evaluate(tiny_config(fashion_data_dir, **RUN), workdir)
  assert "\n" not in str(e.value)
  assert committed_steps(workdir) == [4]


def test_with_continue_a_failed_checkpoint_write_is_reported_and_training_goes_on(
    fashion_data_dir, tmp_path, monkeypatch, caplog):
  workdir = str(tmp_path / "run")
  read_only_from_step(monkeypatch, workdir, 8)
  summary = train.train_and_evaluate(
      tiny_config(fashion_data_dir, on_save_error="continue", **RUN), workdir)
  assert summary["step"] == 12 and committed_steps(workdir) == [4]
  reports = [r.getMessage() for r in caplog.records
             if r.getMessage().startswith("could not write a checkpoint")]
  assert len(reports) == 2  # steps 8 and 12, each resumable from step 4
  assert all("last committed checkpoint is step 4; training goes on" in r
             for r in reports)


def failing_commit(monkeypatch, workdir, step):
  """The checkpoint of ``step`` fails as its asynchronous commit renames it
  into place (a disk full by then): the failure surfaces at the next wait."""
  rename = async_path.rename
  tmp_dir = os.path.join(workdir, "checkpoints", f"{step}.orbax-checkpoint-tmp")

  async def failing_rename(path, *args, **kwargs):
    if str(path) == tmp_dir:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return await rename(path, *args, **kwargs)

  monkeypatch.setattr(async_path, "rename", failing_rename)


def test_a_save_that_failed_with_continue_does_not_keep_a_preempted_run_from_saving(
    fashion_data_dir, tmp_path, monkeypatch, caplog):
  workdir = str(tmp_path / "run")
  failing_commit(monkeypatch, workdir, 4)
  preempt_at(monkeypatch, 6)
  with pytest.raises(preemption.Preempted, match="stopped at step 6 "):
    train.train_and_evaluate(
        tiny_config(fashion_data_dir, on_save_error="continue", **RUN), workdir)
  assert committed_steps(workdir) == [6]
  assert [r.getMessage() for r in caplog.records if "could not write" in r.getMessage()] == [
      f"could not write a checkpoint in {workdir}/checkpoints: [Errno 28] No space left on "
      f"device: '{workdir}/checkpoints/4.orbax-checkpoint-tmp'; no checkpoint is committed "
      f"yet; training goes on (config.on_save_error='continue')"]


@pytest.mark.parametrize("stop", ["nan", "eval"])
def test_the_error_that_stops_a_run_is_reported_not_a_failed_save_in_flight(
    fashion_data_dir, tmp_path, monkeypatch, caplog, stop):
  """A NaN at step 6, or an eval failing at step 4, while the save of step 4
  fails: that error is raised, and the failed save logged before it."""
  workdir = str(tmp_path / "run")
  failing_commit(monkeypatch, workdir, 4)
  if stop == "nan":
    poison(monkeypatch, at_step=6)
    expected = FloatingPointError, r"at step 6: .*no checkpoint was saved before it"
  else:
    def failing_eval(*args, **kwargs):
      raise RuntimeError("the eval failed")
    monkeypatch.setattr(classification, "evaluate", failing_eval)
    expected = RuntimeError, "the eval failed"
  with pytest.raises(expected[0], match=expected[1]):
    train.train_and_evaluate(tiny_config(fashion_data_dir, **dict(RUN, eval_every=4)),
                             workdir)
  assert committed_steps(workdir) == []
  assert [r.getMessage().split("; ")[-1] for r in caplog.records
          if "could not write" in r.getMessage()] == ["the error that stops the run follows"]


def test_a_preempted_run_whose_save_fails_says_so_even_with_continue(
    fashion_data_dir, tmp_path, monkeypatch):
  """'continue' trains on past a failed save; a preempted run cannot, and
  must not claim a checkpoint it does not have."""
  workdir = str(tmp_path / "run")
  read_only_from_step(monkeypatch, workdir, 6)
  preempt_at(monkeypatch, 6)
  with pytest.raises(checkpoints.SaveError, match=r"Read-only file system.* "
                     r"last committed checkpoint is step 4 "):
    train.train_and_evaluate(
        tiny_config(fashion_data_dir, on_save_error="continue", **RUN), workdir)
  assert committed_steps(workdir) == [4]
