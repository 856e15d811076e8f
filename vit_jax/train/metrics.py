"""Where a run's numbers go: the console, ``metrics.jsonl`` and TensorBoard.

Only process 0 writes, so a multi-host run logs once. Each record is one
JSON line ``{"step": ..., "split": "train" | <eval split>, ...}``; the same
scalars go to TensorBoard under ``<split>/<name>``. A person at a terminal
also gets a progress bar; a log file gets plain lines.
"""
import json
import os
import sys
import time

import jax
import tensorflow as tf

from vit_jax.models import variants
from vit_jax.train import workdir_files


def _format(value):
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


class MetricWriter:
  """Writes scalars of a run to the console, JSON lines and TensorBoard."""

  def __init__(self, workdir, *, total_steps, start_step=0, stream=None):
    """``start_step``: the step the run starts (or resumes) from; see `_rewind`."""
    self.total_steps = total_steps
    self.active = jax.process_index() == 0
    self.stream = stream or sys.stdout
    self.interactive = self.stream.isatty()
    self._start = None
    self._start_step = None
    if self.active:
      os.makedirs(workdir, exist_ok=True)
      path = os.path.join(workdir, "metrics.jsonl")
      _rewind(path, start_step)
      self._jsonl = open(path, "a")
      tensorboard = os.path.join(workdir, "tensorboard")
      _mark_restart(tensorboard, start_step)
      self._tb = tf.summary.create_file_writer(tensorboard)

  def write(self, step, scalars, *, split="train"):
    """Records ``scalars`` (name -> number) of ``split`` at ``step``."""
    if not self.active:
      return
    record = {"step": int(step), "split": split}
    record.update({k: _to_python(v) for k, v in scalars.items()})
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    with self._tb.as_default(step=int(step)):
      for name, value in record.items():
        if name not in ("step", "split") and isinstance(value, (int, float)):
          tf.summary.scalar(f"{split}/{name}", value)
    self._tb.flush()
    self._console(step, split, record)

  def _console(self, step, split, record):
    if self._start_step is None:  # the ETA counts from the first record
      self._start, self._start_step = time.monotonic(), step
    shown = ("loss", "top1", "prec@1", "lr", "img_per_sec", "mfu")
    fields = " ".join(f"{k}={_format(record[k])}" for k in shown if k in record)
    line = f"[{split}] step {step}/{self.total_steps} {fields}{self._eta(step)}"
    if self.interactive and split == "train":
      line = f"{self._bar(step)} {line}"
    print(line, file=self.stream, flush=True)

  def _eta(self, step):
    done = step - self._start_step
    if done <= 0 or step >= self.total_steps:
      return ""
    seconds = (time.monotonic() - self._start) / done * (self.total_steps - step)
    return f" eta {int(seconds // 60)}m{int(seconds % 60):02d}s"

  def _bar(self, step, width=24):
    filled = int(width * min(step / max(self.total_steps, 1), 1.0))
    return "[" + "#" * filled + "." * (width - filled) + "]"

  def close(self):
    if self.active:
      self._jsonl.close()
      self._tb.close()


def _rewind(path, start_step):
  """Drops the records of ``path`` that a run resumed at ``start_step`` writes again.

  A run stopped after its last checkpoint (killed, preempted, failed) logged
  steps that the resumed run repeats, and the eval of the checkpoint's own
  step may be missing or cut short; so the train records after
  ``start_step`` and the eval records from it on go, and the resumed run
  evaluates ``start_step`` again when it is an eval step or the step a
  finished run, now extended, ended at. The file is
  replaced whole, so a crash here leaves the old one.
  """
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  kept = [line for line in lines if _kept(line, start_step)]
  if len(kept) == len(lines):
    return
  workdir_files.write_whole(path, "".join(kept))


def _mark_restart(directory, start_step):
  """Makes TensorBoard drop the events a run resumed at ``start_step`` (or
  started again from 0) logs again.

  TensorBoard purges the events it has read of the steps from a
  SessionLog.START's on, where that START follows another (a restart). Two
  of them go into an event file named after the newest one in
  ``directory``, so it is read after the run before and before the resumed
  run's own file (named after a later second). Their step is the one after
  ``start_step``, whose train record is not logged again; so an eval of
  ``start_step`` made again (see `_rewind`) shows twice, the same value.
  Nothing is written where no run logged before.
  """
  existing = sorted(tf.io.gfile.glob(os.path.join(directory, "events.out.tfevents.*")))
  if not existing:
    return
  step = start_step + 1 if start_step else 0
  with tf.io.TFRecordWriter(f"{existing[-1]}.restart{start_step}") as events:
    now = time.time()
    events.write(tf.compat.v1.Event(wall_time=now, file_version="brain.Event:2")
                 .SerializeToString())
    start = tf.compat.v1.SessionLog(status=tf.compat.v1.SessionLog.START)
    for _ in range(2):  # the first START TensorBoard reads counts as no restart
      events.write(tf.compat.v1.Event(wall_time=now, step=step, session_log=start)
                   .SerializeToString())


def _kept(line, start_step):
  try:
    record = json.loads(line)
  except json.JSONDecodeError:  # the torn last line of a killed run
    return False
  if record["split"] == "train":
    return record["step"] <= start_step
  return record["step"] < start_step


def _to_python(value):
  """Numbers from numpy/jax scalars, so they serialise as JSON."""
  if hasattr(value, "item"):
    return value.item()
  return value


SUMMARY_COLUMNS = ("run", "model", "data", "res", "steps", "examples",
                   "core-days", "TPUv3-core-days", "accuracy")
# What `summary_table` reads of each run's summary.json (`train.py` writes them).
SUMMARY_FIELDS = ("variant", "dataset", "image_size", "step", "examples_seen",
                  "core_days", "tpuv3_core_days", "eval")


def summary_table(summaries):
  """Runs as rows of a table like the ViT paper's Table 2.

  ``summaries`` maps a run's name to its `summary.json` contents.
  """
  rows = [SUMMARY_COLUMNS]
  for name, summary in summaries.items():
    accuracy = ", ".join(
        f"{split} {metric} {100 * value:.2f}%"
        for split, split_metrics in summary["eval"].items()
        for metric, value in split_metrics.items() if metric in ("top1", "prec@1"))
    rows.append((name, variants.display_name(summary["variant"]), summary["dataset"],
                 str(summary["image_size"]), str(summary["step"]),
                 f"{summary['examples_seen']:,.0f}", f"{summary['core_days']:.3g}",
                 f"{summary['tpuv3_core_days']:.3g}", accuracy))
  widths = [max(len(row[i]) for row in rows) for i in range(len(SUMMARY_COLUMNS))]
  return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                   for row in rows)
