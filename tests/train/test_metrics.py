"""The metric writer: what a resumed run keeps of the log, and the ETA."""
import io
import json

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
