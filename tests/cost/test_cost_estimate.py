"""The cost estimator: XLA's FLOPs against the analytic count, no allocation."""
import os
import subprocess
import sys

import pytest

from vit_jax import models
from vit_jax.cost import accounting, estimate
from repo_root import REPO



@pytest.mark.parametrize("variant", ["Ti/16", "S/16", "B/16", "L/16", "H/14",
                                     "R50x1", "R50x1+B/16"])
def test_xla_flops_agree_with_the_analytic_count_within_5_percent(variant):
  model = models.get_model(variant, num_classes=1000)
  for train in (False, True):
    xla = estimate.xla_flops_per_example(model, 224, train=train)
    analytic = accounting.analytic_flops_per_example(model, 224, train=train)
    assert abs(xla / analytic - 1) < 0.05, (variant, train, xla, analytic)


# Runs a command as this wrapper's only child and prints the child's peak
# RSS last: RUSAGE_CHILDREN of the test process itself would be the peak of
# every subprocess any earlier test in this worker ran.
_PEAK_RSS_OF_CHILD = (
    "import resource, subprocess, sys\n"
    "print(subprocess.run(sys.argv[1:], check=True, capture_output=True,"
    " text=True).stdout.strip())\n"
    "print('peak_rss', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)")


def test_estimate_of_h14_on_imagenet21k_needs_no_model_memory():
  """ViT-H/14's f32 parameters alone are 2.6 GB; the estimator stays far below."""
  out = subprocess.run(
      [sys.executable, "-c", _PEAK_RSS_OF_CHILD, sys.executable, "scripts/estimate_cost.py",
       "--config=configs/pretrain.py:variant=H/14,data=imagenet21k",
       "--train_examples=13_900_000", "--assumed_mfu=0.5"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=True).stdout
  fields = dict(line.split(None, 1) for line in out.strip().splitlines())
  assert int(fields.pop("peak_rss")) < 1.5e9, out
  assert fields["parameters"] == "660,385,363"  # with pre_logits, 21,843 classes
  steps = 90 * 13_900_000 // 4096
  assert fields["total_steps"] == f"{steps:,}"
  flops = float(fields["train_flops_per_example"])
  expected_days = flops * 4096 * steps / (61.5e12 * 0.5 * 86400)
  assert float(fields["tpuv3_core_days"]) == pytest.approx(expected_days, rel=1e-3)


def test_epochs_without_a_prepared_dataset_take_its_published_size():
  from configs import pretrain

  config = pretrain.get_config("variant=L/16,data=jft,data_dir=/nonexistent")
  steps, epoch_size = estimate.planned_steps(config)
  examples = 303_000_000 * 99 // 100  # JFT-300M's train[:99%]
  assert steps == 7 * examples // 4096
  assert epoch_size == (f"{examples:,} examples in train[:99%], from "
                        f"config.data.published_sizes: 'jft' is not prepared in "
                        f"data_dir '/nonexistent'")
  assert estimate.planned_steps(config, train_examples=4096 * 10) == (
      70, "40,960 examples in train[:99%], from --train_examples")


def test_a_split_without_a_known_size_is_a_clear_error():
  from configs import pretrain

  config = pretrain.get_config("variant=Ti/16,data=imagenet21k,data_dir=/nonexistent")
  config.data.train_split = "full[:98%]"
  with pytest.raises(ValueError, match=r"config.total_epochs=90.0 .*--train_examples=N"):
    estimate.planned_steps(config)


def test_the_issues_jft_estimate_runs_before_the_data_exists():
  out = subprocess.run(
      [sys.executable, "scripts/estimate_cost.py",
       "--config=configs/pretrain.py:variant=L/16,data=jft", "--assumed_mfu=0.5"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=True).stdout
  fields = dict(line.split(None, 1) for line in out.strip().splitlines())
  steps = 7 * (303_000_000 * 99 // 100) // 4096
  assert fields["total_steps"] == f"{steps:,}" and fields["epochs"] == "7"
  assert fields["epoch_size"].startswith("299,970,000 examples in train[:99%], from "
                                         "config.data.published_sizes")
  flops = float(fields["train_flops_per_example"])
  assert float(fields["tpuv3_core_days"]) == pytest.approx(
      flops * 4096 * steps / (61.5e12 * 0.5 * 86400), rel=1e-3)


def test_an_impossible_mfu_is_refused():
  from configs import benchmark

  with pytest.raises(ValueError, match="MFU"):
    estimate.estimate(benchmark.get_config(), total_steps=10, mfu=1.5)


def test_main_dry_run_prints_the_estimate_and_runs_nothing(tmp_path):
  workdir = tmp_path / "run"
  out = subprocess.run(
      [sys.executable, "-m", "vit_jax.main", "--dry_run", f"--workdir={workdir}",
       "--config=configs/finetune.py:variant=B/16,data=cifar10,res=384,steps=1000"],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=True).stdout
  fields = dict(line.split(None, 1) for line in out.strip().splitlines())
  assert fields["variant"] == "B/16" and fields["image_size"] == "384"
  assert fields["examples"] == f"{512 * 1000:,}"
  assert float(fields["tpuv3_core_days"]) == pytest.approx(
      float(fields["total_train_flops"]) / (61.5e12 * 0.4 * 86400), rel=1e-3)
  assert not workdir.exists()


def stderr_of_a_refused_run(*args):
  """What a command that must refuse its input printed: no traceback, rc != 0."""
  process = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True,
                           text=True, timeout=300)
  assert process.returncode != 0 and "Traceback" not in process.stderr, process.stderr
  return process.stderr


def test_main_dry_run_of_an_epoch_config_without_a_dataset_names_its_own_flag(tmp_path):
  command = ["-m", "vit_jax.main", "--dry_run", f"--workdir={tmp_path / 'run'}",
             "--config=configs/pretrain.py:variant=Ti/16,data=imagenet21k,"
             "data_dir=/nonexistent", "--config.data.train_split=full"]
  last_line = stderr_of_a_refused_run(*command).strip().splitlines()[-1]
  assert last_line.startswith("error: config.total_epochs=90.0 needs the number of "
                              "training examples: pass --train_examples=N, ")
  out = subprocess.run([sys.executable, *command, "--train_examples=40960"], cwd=REPO,
                       capture_output=True, text=True, timeout=300, check=True).stdout
  assert dict(line.split(None, 1) for line in out.splitlines())["total_steps"] == "900"


@pytest.mark.parametrize("flag, message", [
    ("--assumed_mfu=0",
     "flag --assumed_mfu=0.0: must be in (0, 1], a fraction of TPU v3's peak"),
    ("--config.image_size=225",
     "config.image_size=225 is not divisible by the patch size 16 of Ti/16"),
])
def test_estimate_cost_names_a_bad_flag_or_config_key_in_one_line(flag, message):
  stderr = stderr_of_a_refused_run(
      "scripts/estimate_cost.py", "--config=configs/pretrain.py:variant=Ti/16,steps=10",
      flag)
  assert any(line.endswith(message) for line in stderr.splitlines()), stderr
