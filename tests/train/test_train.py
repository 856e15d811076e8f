"""End-to-end runs of `train_and_evaluate` on a tiny learnable dataset."""
import json
import os
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import NUM_TEST, tiny_config
from trees import assert_trees_close
from vit_jax import train
from vit_jax.train import checkpoints
from vit_jax.models import pretrained
from vit_jax.data import input_pipeline
from repo_root import REPO

pytestmark = pytest.mark.slow
ACCOUNTING_FIELDS = ("core_days", "tpuv3_core_days", "mfu", "examples_seen", "img_per_sec")


def params_of(workdir):
  return pretrained.read_params(workdir)


def test_a_tiny_run_learns_and_leaves_everything_in_its_workdir(fashion_data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  summary = train.train_and_evaluate(
      tiny_config(fashion_data_dir, total_steps=40, eval_every=40), workdir)
  assert summary["step"] == 40
  assert summary["eval"]["test"]["num_examples"] == NUM_TEST
  assert summary["eval"]["test"]["top1"] >= 0.9  # bars are easy; chance is 0.1
  for name in ("config.json", "metrics.jsonl", "summary.json"):
    assert os.path.exists(os.path.join(workdir, name)), name
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
  assert steps == [24, 28, 32, 36, 40]  # every 4 steps, the last 5 kept
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tensorboard")))
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  train_records = [r for r in records if r["split"] == "train"]
  assert [r["step"] for r in train_records] == list(range(4, 41, 4))
  for record in records:
    assert "step" in record and all(k in record for k in ACCOUNTING_FIELDS), record
  assert train_records[-1]["loss"] < train_records[0]["loss"]
  assert train_records[-1]["examples_seen"] == 40 * 32
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["total_steps"] == 40


def test_one_step_on_8_devices_equals_one_step_on_1_device(fashion_data_dir, tmp_path):
  assert jax.device_count() == 8
  config = tiny_config(fashion_data_dir, total_steps=1, **{"model.dropout_rate": 0.1, "lr.warmup_steps": 0})
  train.train_and_evaluate(config, str(tmp_path / "one"), devices=jax.devices()[:1])
  train.train_and_evaluate(config, str(tmp_path / "eight"))
  one, eight = params_of(str(tmp_path / "one")), params_of(str(tmp_path / "eight"))
  initial = jax.tree.map(np.zeros_like, one)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(initial)))
  assert_trees_close(one, eight, rtol=1e-5, atol=1e-6)


def test_gradient_accumulation_gives_the_full_batch_step(fashion_data_dir, tmp_path):
  config = tiny_config(fashion_data_dir, total_steps=1, **{"lr.warmup_steps": 0})
  train.train_and_evaluate(config, str(tmp_path / "full"))
  accumulated = tiny_config(fashion_data_dir, total_steps=1, accum_steps=2,
                            **{"lr.warmup_steps": 0})
  train.train_and_evaluate(accumulated, str(tmp_path / "accum"))
  assert_trees_close(params_of(str(tmp_path / "full")), params_of(str(tmp_path / "accum")),
                     rtol=1e-5, atol=1e-6)


class Preempted(Exception):
  pass


def test_a_stopped_run_resumes_from_its_checkpoint_and_matches(fashion_data_dir, tmp_path, monkeypatch):
  config = tiny_config(fashion_data_dir, total_steps=12, **{"model.dropout_rate": 0.1})
  train.train_and_evaluate(config, str(tmp_path / "straight"))

  real_batches = input_pipeline.train_batches

  def dying_batches(*args, **kwargs):
    for index, batch in enumerate(real_batches(*args, **kwargs)):
      if index == 7:  # the step-6 batch: checkpoints exist at steps 4 only
        raise Preempted()
      yield batch

  workdir = str(tmp_path / "stopped")
  monkeypatch.setattr(input_pipeline, "train_batches", dying_batches)
  with pytest.raises(Preempted):
    train.train_and_evaluate(config, workdir)
  monkeypatch.setattr(input_pipeline, "train_batches", real_batches)
  assert checkpoints.make_manager(workdir).latest_step() == 4
  summary = train.train_and_evaluate(config, workdir)
  assert summary["step"] == 12
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    steps = [json.loads(line)["step"] for line in f]
  assert steps[steps.index(4) + 1:][:1] == [8] and steps.count(8) == 1  # resumed at 4
  assert summary["examples_seen"] == 12 * 32
  assert_trees_close(params_of(workdir), params_of(str(tmp_path / "straight")), rtol=1e-6, atol=1e-7)


def test_fine_tuning_at_a_higher_resolution_resamples_the_position_embeddings(fashion_data_dir, tmp_path):
  pretrained = str(tmp_path / "pretrain")
  train.train_and_evaluate(tiny_config(fashion_data_dir, total_steps=24), pretrained)
  config = tiny_config(
      fashion_data_dir, init=pretrained, image_size=20, total_steps=16,
      **{"pp.train": "decode|resize(20)|value_range(-1,1)|onehot(10)",
         "pp.eval": "decode|resize(20)|value_range(-1,1)|onehot(10)"})
  summary = train.train_and_evaluate(config, str(tmp_path / "finetune"))
  params = params_of(str(tmp_path / "finetune"))
  assert params["Transformer"]["posembed_input"]["pos_embedding"].shape == (1, 1 + 5 * 5, 32)
  assert summary["eval"]["test"]["top1"] >= 0.9


def test_bad_batch_for_the_devices_fails_before_compiling(fashion_data_dir, tmp_path):
  with pytest.raises(ValueError, match=r"config.global_batch=36 must be divisible by "
                                       r"config.accum_steps=1 x 8 devices; e.g. 32 or 40$"):
    train.train_and_evaluate(tiny_config(fashion_data_dir, global_batch=36), str(tmp_path))


def test_main_fails_within_seconds_when_the_data_is_missing(tmp_path):
  start = time.monotonic()
  result = subprocess.run(
      [sys.executable, "-m", "vit_jax.main",
       f"--config=configs/pretrain.py:variant=Ti/16,data=imagenet21k,data_dir={tmp_path}",
       f"--workdir={tmp_path / 'run'}"],
      cwd=REPO, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, XLA_FLAGS=""))
  elapsed = time.monotonic() - start
  assert result.returncode != 0
  assert "dataset 'imagenet21k'" in result.stderr and str(tmp_path) in result.stderr
  assert "Nothing is downloaded" in result.stderr
  assert elapsed < 60, elapsed
  assert not os.path.exists(os.path.join(tmp_path, "downloads"))


def test_a_finished_run_extended_keeps_the_eval_of_its_old_last_step(fashion_data_dir, tmp_path):
  """Its last step, evaluated as the last, is evaluated again when extended."""
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(tiny_config(fashion_data_dir, total_steps=2, eval_every=12,
                                       checkpoint_every=4), workdir)
  train.train_and_evaluate(tiny_config(fashion_data_dir, total_steps=4, eval_every=12,
                                       checkpoint_every=4), workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [(r["step"], r["split"]) for r in records if r["split"] != "train"] == [
      (2, "test"), (4, "test")]
