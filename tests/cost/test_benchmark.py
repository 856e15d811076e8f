"""scripts/benchmark.py: its JSON is self-consistent, and timm runs beside it."""
import importlib.util
import json
import os
import subprocess
import sys

import jax
import pytest

from vit_jax.runtime import cpu_devices
from repo_root import REPO
from torch_libraries import library

# Two blocks, not Ti's twelve: what the JSON says of a step does not depend on
# its depth, and each run compiles in a third of the time.
TINY = ["--config=configs/benchmark.py:variant=Ti/16,res=32",
        "--config.model.num_layers=2", "--batch=8", "--steps=2", "--rounds=2",
        "--warmup=1"]


def run_benchmark(tmp_path, *flags, check=True, **environment):
  """The printed JSON; with ``check=False``, the finished process instead."""
  out = tmp_path / "bench.json"
  # A device per core, as a user would run it, unless ``environment`` says.
  env = dict(os.environ, XLA_FLAGS="", **environment)
  process = subprocess.run([sys.executable, "scripts/benchmark.py", *TINY, *flags,
                            f"--out={out}"], cwd=REPO, env=env, check=check,
                           timeout=600, capture_output=True, text=True)
  return json.loads(out.read_text()) if check else process


def test_benchmark_json_is_consistent(tmp_path):
  result = run_benchmark(tmp_path)
  devices = cpu_devices.count_for((8,), len(os.sched_getaffinity(0)))
  assert (result["num_devices"], result["batch"], result["image_size"]) == (devices, 8, 32)
  # What a figure is stated beside: the host's CPU, and jax's version.
  assert result["host_cpu"] == cpu_devices.host_cpu_name() != "unknown"
  assert result["jax"] == jax.__version__
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
  # adds ~14% per device. tests/cost/test_cost_estimate.py checks the model at 224 px.
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


def test_against_times_the_overridden_config_interleaved(tmp_path):
  # A larger image is a visible override: more FLOPs per example.
  result = run_benchmark(tmp_path, "--against=image_size=48,model.remat=True",
                         "--rounds=3")
  train, against = result["train"], result["against"]
  assert result["against_overrides"] == "image_size=48,model.remat=True"
  assert "inference" not in result and "timm" not in result
  assert against["flops_per_example"] > 1.5 * train["flops_per_example"]  # 2x tokens
  devices = result["num_devices"]
  for stats in (train, against):
    assert stats["step_ms_min"] <= stats["step_ms_median"] <= stats["step_ms_max"]
    assert stats["peak_flops_per_device"] == max(stats["peak_flops_reads"])
    assert stats["mfu"] == pytest.approx(
        stats["flops_per_example"] * stats["img_per_sec"]
        / (devices * stats["peak_flops_per_device"]))
  # The median of per-round ratios lies within the extremes of the rounds.
  assert (against["step_ms_min"] / train["step_ms_max"]
          <= result["against_over_train_step_time"]
          <= against["step_ms_max"] / train["step_ms_min"])
  assert result["rounds"] == 3 and 0 <= result["rounds_against_faster"] <= 3


def test_against_a_key_the_config_lacks_names_it(tmp_path):
  process = run_benchmark(tmp_path, "--against=model.layernorm=flax", check=False)
  assert process.returncode != 0
  assert "--against: override 'model.layernorm': no 'layernorm' there" in process.stderr
  assert "layer_norm_implementation" in process.stderr


@pytest.mark.parametrize("flags, message", [
    (["--batch=6"], "--batch=6 is not divisible by the 4 devices; pass a multiple of 4"),
    # Each device's share is cut into micro-batches: jax's reshape traceback.
    (["--config.accum_steps=3"], "--batch=8 is not divisible by the 4 devices x "
     "config.accum_steps=3; pass a multiple of 12"),
    (["--batch=6", "--config.mesh.model=2", "--config.accum_steps=2"],
     "--batch=6 is not divisible by the 2 "
     "batch shards (data x fsdp) x config.accum_steps=2; pass a multiple of 4"),
    (["--rounds=0"], "flag --rounds=0: 0 is not a positive integer"),
    (["--steps=0"], "flag --steps=0: 0 is not a positive integer"),
])
def test_a_batch_or_count_that_cannot_be_timed_is_named_in_one_line(tmp_path, flags,
                                                                     message):
  process = run_benchmark(tmp_path, *flags, check=False, JAX_NUM_CPU_DEVICES="4")
  assert process.returncode != 0 and "Traceback" not in process.stderr, process.stderr
  assert any(line.endswith(message) for line in process.stderr.splitlines()), \
      process.stderr


def test_benchmark_input_times_the_step_on_one_device_per_core_as_benchmark_does(tmp_path):
  # The step's timing is stubbed (it takes tens of seconds on CPU); the device
  # count is the script's own, set before the devices start.
  code = (
      "from scripts import benchmark_input; from vit_jax.cost import benchmarking; "
      "from vit_jax.runtime import cli; "
      "benchmarking.measure = lambda *a, **k: ({'train': {'img_per_sec': 1.0}}, None); "
      "cli.call(benchmark_input.main, benchmark_input.FLAGS, ['benchmark_input', "
      f"'--data_dir={tmp_path}', '--num_images=8', '--batch=4', '--seconds=0.1', "
      "'--pp=decode|resize(8)|value_range(-1,1)', '--model_batch=2'])")
  env = dict(os.environ, XLA_FLAGS="")  # a device per core, as a user would run it
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True,
                       timeout=300, capture_output=True, text=True).stdout
  step = next(line for line in map(json.loads, out.splitlines()) if "train_step" in line)
  assert step["devices"] == cpu_devices.count_for((2,), len(os.sched_getaffinity(0)))


def test_benchmark_input_refuses_an_unknown_variant_before_timing_anything(tmp_path):
  # It used to write the shards and time every pipeline first.
  from scripts import benchmark_input
  from vit_jax.runtime import cli

  with pytest.raises(SystemExit) as exit_info:
    cli.call(benchmark_input.main, benchmark_input.FLAGS,
             ["benchmark_input", "--variant=Q/16", f"--data_dir={tmp_path / 'data'}",
              "--num_images=8", "--seconds=0.1"])
  assert str(exit_info.value) == (
      "error: --variant=Q/16: unknown ViT variant 'Q/16'; valid: Ti, S, B, L, H, g, G, e, "
      "22B followed by /PATCH, e.g. 'B/16' (ResNets: 'R50x1', hybrids: 'R50x1+B/16')")
  assert not (tmp_path / "data").exists()


def test_compile_time_ends_with_the_failing_layouts_own_error(tmp_path):
  # A layout's process that failed was a CalledProcessError, its stderr lost.
  process = subprocess.run(
      [sys.executable, "scripts/compile_time.py",
       "--config=configs/benchmark.py:variant=Ti/16,res=32", "--config.mesh.data=16"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert process.returncode == 1
  assert process.stderr.splitlines() == [
      "error: the unrolled step (--config.model.scan=False) did not compile: config.mesh "
      "data=16 x fsdp=1 x model=1 does not cover the 1 devices; choose sizes whose "
      "product is 1, at most one of them -1 (it takes the rest); or, on this CPU host, "
      "emulate 16 devices with JAX_NUM_CPU_DEVICES=16"]


@pytest.mark.parametrize("flags, message", [
    (["--fsdp=0"], "FATAL Flags parsing error: flag --fsdp=0: 0 is not a positive integer"),
    (["--devices=0"], "FATAL Flags parsing error: flag --devices=0: 0 is not a positive "
     "integer"),
    (["--devices=8", "--fsdp=3"], "error: --fsdp=3 does not divide --devices=8 (the mesh "
     "is data x fsdp over them); valid: 1, 2, 4, 8"),
], ids=["fsdp_0", "devices_0", "fsdp_not_dividing"])
def test_scan_fsdp_memory_names_a_mesh_it_cannot_make(flags, message):
  # They used to be a ZeroDivisionError, a backend error and a traceback.
  from scripts import scan_fsdp_memory
  from vit_jax.runtime import cli

  with pytest.raises(SystemExit) as exit_info:
    cli.call(scan_fsdp_memory.main, scan_fsdp_memory.FLAGS, ["scan_fsdp_memory", *flags])
  assert str(exit_info.value).splitlines()[0] == message


def benchmark_config(**overrides):
  from configs import benchmark as benchmark_configs

  config = benchmark_configs.get_config("variant=Ti/16,res=128")
  with config.unlocked():
    config.update(overrides.pop("top", {}))
    config.model.update(overrides)
  return config


def test_xla_flops_per_example_count_every_micro_batch_of_an_accumulated_step():
  """XLA counts the accumulation loop's body once; the benchmark counts every pass.

  For two blocks at 128 px (65 tokens) XLA's count per example sits ~8% above
  the analytic one (the optimizer, replicated on each of the 8 devices, and
  the elementwise work); one micro-batch's count would be about half of it.
  """
  from vit_jax.cost import benchmarking

  config = benchmark_config(num_layers=2, top=dict(accum_steps=2))
  result, _ = benchmarking.measure(config, 16, steps=1, rounds=1, warmup=0,
                                   inference=False)
  train = result["train"]
  assert train["xla_flops_per_example"] == pytest.approx(train["flops_per_example"],
                                                         rel=0.15)


def test_a_scanned_or_rematerialised_step_reports_no_xla_flops_per_example():
  """XLA counts a scan's body once (test_cost_estimate shows it): one block's
  FLOPs, which would mean nothing; and a rematerialised step's forward passes
  redone, which MFU leaves out. An unrolled step's count is per example."""
  from vit_jax.cost import accounting

  for options, per_example in (({"scan": True}, None), ({"remat": True}, None), ({}, 5e8)):
    assert accounting.compiled_flops_per_example(
        1e9, benchmark_config(**options), num_devices=8, global_batch=16) == per_example


@pytest.mark.parametrize("overrides", [
    {}, {"classifier": "gap"}, {"classifier": "map"}, {"qk_norm": True},
    {"layer_scale_init": 1e-5, "num_registers": 4, "pre_norm": True},
    {"distillation_token": True}],
    ids=["token", "gap", "map", "qk_norm", "layer_scale_registers", "distilled"])
def test_the_timm_twin_has_as_many_parameters_as_our_vit(overrides):
  """The same network: its classifier (timm's 'map' pooling for ours), qk
  LayerNorms, layer scale, registers and DeiT's distillation token, so the
  same count of parameters."""
  library("timm")  # imported as the benchmark's twin imports it, triton kept out
  from absl import app
  from configs import benchmark as benchmark_config
  from scripts import benchmark
  from vit_jax import models
  from vit_jax.models import build

  config = benchmark_config.get_config("variant=Ti/16,res=32")
  model = models.get_model("Ti/16", num_classes=config.data.num_classes, **overrides)
  ours = sum(leaf.size for leaf in jax.tree.leaves(build.abstract_params(model, 32)))
  theirs = sum(p.numel() for p in benchmark.timm_model(config, model).parameters())
  # timm gives its registers position rows too, which ours have none of, and
  # with pre_norm its patch embedding no bias.
  assert theirs == ours + (model.num_registers - model.pre_norm) * model.hidden_size
  for refused in ({"parallel_block": True}, {"use_bias": False}):
    with pytest.raises(app.UsageError, match="no twin of ViT-22B's"):
      benchmark.timm_model(config, models.get_model(
          "Ti/16", num_classes=config.data.num_classes, **refused))
