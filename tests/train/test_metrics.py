"""The metric writer: what a resumed run keeps of the log, and the ETA."""
import io
import json
import time

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
