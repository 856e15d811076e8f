"""The metric writer: what a resumed run keeps of the log, and the ETA."""
import io
import json
import time

import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing import plugin_event_accumulator as event_accumulator

from vit_jax.train import metrics


def records_of(path):
  with open(path) as f:
    return [(r["split"], r["step"]) for r in map(json.loads, f)]


def test_a_resumed_run_drops_what_it_writes_again_and_a_torn_last_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  lines = [json.dumps({"step": step, "split": split, "loss": 1.0})
           for step, split in ((2, "train"), (4, "train"), (4, "test"),
                               (6, "train"), (8, "train"), (8, "test"))]
  path.write_text("\n".join(lines) + "\n" + '{"step": 10, "spl')  # killed mid-write
  writer = metrics.MetricWriter(str(tmp_path), total_steps=12, start_step=4,
                                stream=io.StringIO())
  # Train records up to the checkpoint stay; its eval is made again.
  assert records_of(path) == [("train", 2), ("train", 4)]
  writer.write(4, {"top1": 0.5}, split="test")
  writer.write(6, {"loss": 0.5})
  writer.close()
  assert records_of(path) == [("train", 2), ("train", 4), ("test", 4), ("train", 6)]
  metrics.MetricWriter(str(tmp_path), total_steps=12, stream=io.StringIO()).close()
  assert path.read_text() == ""  # a run that starts again from step 0


def tensorboard_losses(workdir):
  """(step, train/loss) as TensorBoard's server reads them (it purges orphaned data)."""
  events = event_accumulator.EventAccumulator(
      str(workdir / "tensorboard"), purge_orphaned_data=True,
      size_guidance={event_accumulator.TENSORS: 0})
  events.Reload()
  return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events.Tensors("train/loss")]


def test_tensorboard_drops_what_a_resumed_run_writes_again(tmp_path):
  """A run killed at step 7 after its checkpoint at 4, resumed twice: each
  step shows once, with the resumed run's value."""
  def run(start_step, steps, loss):
    writer = metrics.MetricWriter(str(tmp_path), total_steps=12, start_step=start_step,
                                  stream=io.StringIO())
    for step in steps:
      writer.write(step, {"loss": loss})
    writer.close()
    time.sleep(1.1)  # a later run's event file is named after a later second

  run(0, [2, 4, 6], loss=3.0)
  assert tensorboard_losses(tmp_path) == [(2, 3.0), (4, 3.0), (6, 3.0)]
  run(4, [6, 8, 10], loss=2.0)
  assert tensorboard_losses(tmp_path) == [(2, 3.0), (4, 3.0), (6, 2.0), (8, 2.0), (10, 2.0)]
  run(8, [10, 12], loss=1.0)
  assert tensorboard_losses(tmp_path) == [(2, 3.0), (4, 3.0), (6, 2.0), (8, 2.0), (10, 1.0),
                                          (12, 1.0)]
  run(0, [2], loss=0.5)  # started again: it stopped before its first checkpoint
  assert tensorboard_losses(tmp_path) == [(2, 0.5)]


def test_the_eta_counts_from_the_first_record(tmp_path, monkeypatch):
  """One second a step: at step 400 of 1000, 600 s are left, however long
  the run took to compile before its first record."""
  now = [0.0]
  monkeypatch.setattr(metrics.time, "monotonic", lambda: now[0])
  stream = io.StringIO()
  writer = metrics.MetricWriter(str(tmp_path), total_steps=1000, start_step=200,
                                stream=stream)
  now[0] = 1000.0  # compiled and ran to the first log step
  writer.write(200, {"loss": 1.0})
  now[0] = 1200.0
  writer.write(400, {"loss": 1.0})
  writer.close()
  assert stream.getvalue().splitlines()[-1].endswith(" eta 10m00s")


def test_device_and_integer_scalars_are_logged_as_plain_numbers_everywhere(tmp_path):
  """The loop hands over jax and numpy scalars (the step's metrics) and
  Python ints (`examples_seen`): the JSON line holds them as numbers, and
  TensorBoard gets the integer counters too, not only the floats."""
  writer = metrics.MetricWriter(str(tmp_path), total_steps=12, stream=io.StringIO())
  writer.write(3, {"loss": np.float32(0.5), "skipped_steps": jnp.asarray(2, jnp.int32),
                   "examples_seen": 96})
  writer.close()
  with open(tmp_path / "metrics.jsonl") as f:
    assert [json.loads(line) for line in f] == [
        {"step": 3, "split": "train", "loss": 0.5, "skipped_steps": 2, "examples_seen": 96}]
  events = event_accumulator.EventAccumulator(
      str(tmp_path / "tensorboard"), size_guidance={event_accumulator.TENSORS: 0})
  events.Reload()
  logged = {tag: [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]
            for tag in events.Tags()["tensors"]}
  assert logged == {"train/loss": [(3, 0.5)], "train/skipped_steps": [(3, 2.0)],
                    "train/examples_seen": [(3, 96.0)]}


def test_the_summary_table_shows_each_runs_accuracy_in_percent_of_every_split():
  """The table `main` and `scripts/summarize.py` print, like the ViT paper's
  Table 2: top-1 or, for multi-label data, precision@1, in percent, for
  each eval split; other eval metrics (the loss) are not accuracies."""
  summary = dict(variant="B/16", dataset="imagenet2012", image_size=384, step=20_000,
                 examples_seen=10_240_000, core_days=1.2345, tpuv3_core_days=0.56789,
                 eval={"test": {"top1": 0.8512, "loss": 0.61}, "real": {"prec@1": 0.9}})
  bit = dict(summary, variant="R50x1", dataset="jft", image_size=224, step=500,
             examples_seen=256_000, core_days=0.02, tpuv3_core_days=0.01,
             eval={"val": {"prec@1": 0.4567}})
  table = metrics.summary_table({"ft": summary, "upstream": bit})
  assert table.splitlines() == [
      "run       model      data          res  steps  examples    core-days  "
      "TPUv3-core-days  accuracy",
      "ft        ViT-B/16   imagenet2012  384  20000  10,240,000  1.23       "
      "0.568            test top1 85.12%, real prec@1 90.00%",
      "upstream  BiT-R50x1  jft           224  500    256,000     0.02       "
      "0.01             val prec@1 45.67%"]
