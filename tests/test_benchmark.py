"""scripts/benchmark.py: its JSON is self-consistent, and timm runs beside it."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from vit_jax import cpu_devices

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--config=configs/benchmark.py:variant=Ti/16,res=32", "--batch=8",
        "--steps=2", "--rounds=2", "--warmup=1"]


def run_benchmark(tmp_path, *flags):
  out = tmp_path / "bench.json"
  env = dict(os.environ, XLA_FLAGS="")  # a device per core, as a user would run it
  subprocess.run([sys.executable, "scripts/benchmark.py", *TINY, *flags,
                  f"--out={out}"], cwd=REPO, env=env, check=True, timeout=600,
                 capture_output=True)
  return json.loads(out.read_text())


def test_benchmark_json_is_consistent(tmp_path):
  result = run_benchmark(tmp_path)
  devices = cpu_devices.count_for((8,), len(os.sched_getaffinity(0)))
  assert (result["num_devices"], result["batch"], result["image_size"]) == (devices, 8, 32)
  # On CPU the peak is read before and after the timed rounds; the higher counts.
  assert len(result["peak_flops_reads"]) == 2
  assert result["peak_flops_per_device"] == max(result["peak_flops_reads"])
  for part in ("train", "inference"):
    stats = result[part]
    assert stats["img_per_sec"] == pytest.approx(8 / (stats["step_ms_median"] / 1e3))
    assert stats["step_ms_min"] <= stats["step_ms_median"] <= stats["step_ms_max"]
    assert stats["mfu"] == pytest.approx(
        stats["flops_per_example"] * stats["img_per_sec"]
        / (devices * result["peak_flops_per_device"]))
    assert 0 < stats["mfu"] < 1
  train = result["train"]
  assert train["flops_per_example"] == pytest.approx(3 * result["inference"]["flops_per_example"])
  # XLA also counts the optimizer's update, which every device runs on its
  # replica: large per example at batch 8 and 32 px (5 tokens), where it
  # adds ~14% per device. tests/test_cost_estimate.py checks the model at 224 px.
  assert train["xla_flops_per_example"] == pytest.approx(
      train["flops_per_example"], rel=0.15 * devices + 0.1)
  assert train["compile_s"] > 0 and train["compiled_memory_bytes"] > 0
  assert result["max_rss_bytes"] > 0


@pytest.mark.skipif(importlib.util.find_spec("timm") is None,
                    reason="timm is an optional extra: pip install -e .[timm]")
def test_compare_timm_reports_the_ratio(tmp_path):
  result = run_benchmark(tmp_path, "--compare-timm", "--noinference")
  assert "inference" not in result
  assert result["speedup_vs_timm"] == pytest.approx(
      result["train"]["img_per_sec"] / result["timm"]["img_per_sec"])
  assert result["timm"]["mfu"] > 0 and result["timm"]["amp_bf16"] is False
