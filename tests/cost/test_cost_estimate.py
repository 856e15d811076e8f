"""The cost estimator: XLA's FLOPs against the analytic count, no allocation; the
plan for a target's devices against a really initialised state and compiled step."""
import os
import subprocess
import sys

import jax
import pytest

from vit_jax import models
from vit_jax.cost import accounting, estimate
from repo_root import REPO



# 22B's options (parallel block, qk_norm, no biases, MAP head) on one narrow
# block of 64 tokens, where the MAP head is a tenth of the FLOPs.
TINY_22B = {"hidden_size": 64, "num_layers": 1, "mlp_dim": 256, "num_heads": 4}


@pytest.mark.parametrize("variant, overrides, image_size", [
    ("Ti/16", {}, 224), ("S/16", {}, 224), ("B/16", {}, 224), ("L/16", {}, 224),
    ("H/14", {}, 224), ("R50x1", {}, 224), ("R50x1+B/16", {}, 224),
    ("22B/8", TINY_22B, 64)])
def test_xla_flops_agree_with_the_analytic_count_within_5_percent(
    variant, overrides, image_size):
  model = models.get_model(variant, num_classes=1000, **overrides)
  for train in (False, True):
    xla = estimate.xla_flops_per_example(model, image_size, train=train)
    analytic = accounting.analytic_flops_per_example(model, image_size, train=train)
    assert abs(xla / analytic - 1) < 0.05, (variant, train, xla, analytic)


def test_without_its_map_head_the_tiny_22b_count_would_miss_xlas_by_over_10_percent():
  model = models.get_model("22B/8", num_classes=1000, **TINY_22B)
  assert model.classifier == "map" and model.parallel_block and not model.use_bias
  xla = estimate.xla_flops_per_example(model, 64, train=False)
  without_map_head = accounting.analytic_flops_per_example(
      model.clone(classifier="gap"), 64, train=False)
  assert xla / without_map_head - 1 > 0.1


def test_a_scanned_models_xla_flops_are_all_its_blocks_not_one():
  scanned = models.get_model("Ti/16", num_classes=10, scan=True)
  unrolled = models.get_model("Ti/16", num_classes=10, scan=False)
  for train in (False, True):
    assert (estimate.xla_flops_per_example(scanned, 64, train=train)
            == estimate.xla_flops_per_example(unrolled, 64, train=train))


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

  for mfu in (1.5, 0.0):
    with pytest.raises(ValueError, match=rf"^the assumed MFU must be in \(0, 1\], got {mfu}$"):
      estimate.estimate(benchmark.get_config(), total_steps=10, mfu=mfu)


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
  assert process.returncode == 1 and "Traceback" not in process.stderr, process.stderr
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
    ("--devices=tpu_v9:8", "--devices=tpu_v9:8: unknown device kind 'tpu_v9'; valid: "
     "tpu_v3, tpu_v4, tpu_v5e, tpu_v5p, a100_40gb, a100_80gb, h100, h200, as "
     "KIND:CHIPS, e.g. tpu_v4:256"),
    ("--config.image_size=225",
     "config.image_size=225 is not divisible by the patch size 16 of Ti/16"),
    # Not a silent one-step run: an epoch of 0 examples is max(1, 0) steps.
    ("--train_examples=0", "flag --train_examples=0: 0 is not a positive integer"),
])
def test_estimate_cost_names_a_bad_flag_or_config_key_in_one_line(flag, message):
  stderr = stderr_of_a_refused_run(
      "scripts/estimate_cost.py", "--config=configs/pretrain.py:variant=Ti/16,steps=10",
      flag)
  assert any(line.endswith(message) for line in stderr.splitlines()), stderr


# ---------------------------------------------------------------------------
# The plan for a target's devices (--devices), on the tests' 8 CPU devices.
# ---------------------------------------------------------------------------

def tiny_plan_config(*, data, fsdp, hidden=32, mlp=64, heads=2, image_size=16, batch=16):
  """A two-block ViT whose kernels are the ones the plan compiles anyway."""
  from configs import pretrain

  config = pretrain.get_config("variant=Ti/4,data=imagenet21k,steps=10")
  config.unlock()
  config.model.update(hidden_size=hidden, num_layers=2, mlp_dim=mlp, num_heads=heads,
                      **estimate.ACCELERATOR_KERNELS)
  config.data.num_classes = 10
  config.lr.warmup_steps = 2
  config.update(image_size=image_size, global_batch=batch)
  # Small enough that FSDP splits the blocks' kernels of this tiny model.
  config.mesh.update(data=data, fsdp=fsdp, fsdp_min_size=2**10)
  config.lock()
  return config


# A device whose 256 KiB the tiny model's step outgrows: the plan is printed, then refused.
TINY_DEVICE = estimate.DeviceKind("tiny", "TPU v4", "tpu", memory_bytes=2**18)


def printed_plan(config, monkeypatch, capsys):
  """The fields `print_report` printed for ``config`` on 8 tiny devices, and its refusal."""
  monkeypatch.setitem(estimate.DEVICE_KINDS, "tiny", TINY_DEVICE)
  with pytest.raises(ValueError) as refused:
    estimate.print_report(config, mfu=0.4, devices="tiny:8")
  lines = capsys.readouterr().out.splitlines()
  fields = dict(line.split(None, 1) for line in lines)
  for key in fields:
    if key.endswith("_bytes"):  # "1,234,567 (1.18 MiB)"
      fields[key] = int(fields[key].split()[0].replace(",", ""))
  return fields, str(refused.value)


def real_state_and_step(config):
  """The state the trainer initialises for ``config`` on the 8 devices, and its jitted step."""
  from vit_jax.train import sharding, steps

  mesh = sharding.make_mesh(config.mesh)
  parts = steps.training_parts(config, total_steps=10)
  shardings = sharding.state_shardings(mesh, parts.abstract_state(), config.mesh)
  state = jax.jit(lambda: parts.initial_state(parts.init_params()),
                  out_shardings=shardings)()
  return state, parts.jit_train_step(mesh, shardings), mesh


def bytes_on_first_device(tree, mesh):
  device = mesh.devices.flat[0]
  return sum(shard.data.nbytes for leaf in jax.tree.leaves(tree)
             for shard in leaf.addressable_shards if shard.device == device)


def assert_state_bytes_are_the_shards_of(fields, state, mesh, *, split):
  params = bytes_on_first_device(state["params"], mesh)
  assert fields["parameters_bytes"] == params
  assert fields["optimizer_state_bytes"] == bytes_on_first_device(state, mesh) - params
  whole = sum(x.nbytes for x in jax.tree.leaves(state["params"]))
  assert (params < whole / 4) == split


def test_data_parallel_plans_state_bytes_are_a_really_initialised_states_shards(
    monkeypatch, capsys):
  config = tiny_plan_config(data=-1, fsdp=1)
  fields, _ = printed_plan(config, monkeypatch, capsys)
  state, _, mesh = real_state_and_step(config)
  assert_state_bytes_are_the_shards_of(fields, state, mesh, split=False)
  assert fields["mesh"] == "data=8, fsdp=1, model=1"


def test_fsdp_plan_is_the_real_states_shards_and_its_compiled_steps_memory_then_refused(
    monkeypatch, capsys):
  from vit_jax.train import sharding

  config = tiny_plan_config(data=1, fsdp=-1)
  fields, refused = printed_plan(config, monkeypatch, capsys)
  state, step, mesh = real_state_and_step(config)
  assert_state_bytes_are_the_shards_of(fields, state, mesh, split=True)
  assert fields["mesh"] == "data=1, fsdp=8, model=1"
  batch = jax.device_put(
      {"image": jax.numpy.zeros((16, 16, 16, 3)), "labels": jax.numpy.zeros((16, 10))},
      sharding.batch_sharding(mesh))
  memory = step.lower(state, batch).compile().memory_analysis()
  assert fields["activations_bytes"] == memory.temp_size_in_bytes
  assert fields["batch_bytes"] == 16 * (16 * 16 * 3 + 10) * 4 // 8
  total = (memory.argument_size_in_bytes + memory.output_size_in_bytes
           - memory.alias_size_in_bytes + memory.temp_size_in_bytes)
  assert fields["total_bytes"] == total and total > TINY_DEVICE.memory_bytes
  assert fields["micro_batch_per_device"] == "2" and fields["fits"] == "no"
  assert fields["devices"] == "tiny:8, 8 JAX devices of 0.25 MiB"
  assert refused == (
      f"{estimate.format_bytes(total)} per device does not fit tiny's 0.25 MiB; the "
      f"largest term is activations, {estimate.format_bytes(memory.temp_size_in_bytes)}: "
      f"set config.model.remat=True (now False): each block keeps only its input for "
      f"the backward pass; or a smaller micro-batch per device, 1 not 2: "
      f"config.accum_steps=2 (now 1)")


def state_refusal(config):
  """`estimate.refusal` of ``config``'s state on 8 tiny devices, the state too big;
  and the state's bytes per device under any data x fsdp x model split."""
  from vit_jax.train import sharding, steps

  mesh = sharding.make_mesh(config.mesh)
  state = steps.training_parts(config, total_steps=10).abstract_state()
  terms = {"parameters": 2**19, "optimizer state": 2**20, "batch": 10, "activations": 2**18}
  message = estimate.refusal(config, TINY_DEVICE, terms, sum(terms.values()), mesh=mesh,
                             abstract_state=state, micro_batch=2)

  def state_bytes(data, fsdp, model):
    mesh_config = config.mesh.copy_and_resolve_references()
    mesh_config.update(data=data, fsdp=fsdp, model=model)
    layout = sharding.abstract_mesh(mesh_config, 8)
    return sharding.bytes_per_device(state, sharding.state_shardings(layout, state, mesh_config))

  return message, state_bytes


def test_a_state_too_big_is_refused_naming_the_fsdp_split_that_shrinks_it():
  """hidden 36 over 8 FSDP devices: the attention kernels cannot split, over 4
  they can; one head cannot split over a model axis, so no model axis is tried."""
  config = tiny_plan_config(data=1, fsdp=-1, hidden=36, mlp=64, heads=1)
  message, state_bytes = state_refusal(config)

  assert state_bytes(2, 4, 1) < state_bytes(1, 8, 1)
  assert message == (
      f"1.75 MiB per device does not fit tiny's 0.25 MiB; the largest term is "
      f"optimizer state, 1.00 MiB: set config.mesh.data=2, config.mesh.fsdp=4, "
      f"config.mesh.model=1 (now data=1, fsdp=8, model=1) for "
      f"{estimate.format_bytes(state_bytes(2, 4, 1))} of parameters and optimizer "
      f"state per device, not {estimate.format_bytes(state_bytes(1, 8, 1))}")


def test_a_state_too_big_is_refused_naming_the_model_axis_that_splits_what_fsdp_cannot():
  """hidden 36 with 2 heads: 4 FSDP devices split the hidden dimension and the
  model axis the 2 heads and the MLP's 64 units, all 8 devices sharing each
  kernel, which 8 FSDP devices (36 is not a multiple of 8) cannot."""
  config = tiny_plan_config(data=1, fsdp=-1, hidden=36, mlp=64, heads=2)
  message, state_bytes = state_refusal(config)

  assert state_bytes(1, 4, 2) < min(state_bytes(2, 4, 1), state_bytes(1, 8, 1))
  assert message == (
      f"1.75 MiB per device does not fit tiny's 0.25 MiB; the largest term is "
      f"optimizer state, 1.00 MiB: set config.mesh.data=1, config.mesh.fsdp=4, "
      f"config.mesh.model=2 (now data=1, fsdp=8, model=1) for "
      f"{estimate.format_bytes(state_bytes(1, 4, 2))} of parameters and optimizer "
      f"state per device, not {estimate.format_bytes(state_bytes(1, 8, 1))}")


def test_a_state_already_split_as_far_as_the_rules_allow_asks_for_more_chips():
  config = tiny_plan_config(data=1, fsdp=4, hidden=36, mlp=64, heads=2)
  config.unlock()
  config.mesh.model = 2
  config.lock()
  message, state_bytes = state_refusal(config)

  assert message.endswith(
      f"config.mesh.data, config.mesh.fsdp and config.mesh.model split the state as "
      f"far as config.mesh.rules and the trainer's checks allow "
      f"({estimate.format_bytes(state_bytes(1, 4, 2))} per device); more chips "
      f"(--devices=tiny:N) split it further")


def with_split(config, data, fsdp, model):
  config = config.copy_and_resolve_references()
  config.mesh.update(data=data, fsdp=fsdp, model=model)
  return config


@pytest.mark.parametrize("batches, reason", [
    (dict(global_batch=4, eval_batch=4),
     "config.global_batch=4 must be divisible by config.accum_steps=1 x 8 devices; e.g. 8"),
    (dict(global_batch=8, eval_batch=8, accum_steps=2),
     "config.global_batch=8 must be divisible by config.accum_steps=2 x 8 devices; "
     "e.g. 16"),
    (dict(global_batch=8, eval_batch=4),
     "config.eval_batch=4 must be divisible by the 8 devices and the 1 processes; e.g. 8"),
])
def test_a_state_refusal_names_only_a_split_the_trainer_accepts_for_the_batches(
    batches, reason):
  """8 heads of a hidden 32: data=1, fsdp=8 leaves the least state, but a
  batch (or micro-batch) of 4 does not split 8 ways and the trainer refuses
  it; the refusal names the least the trainer accepts, fsdp=4 with a model
  axis of 2, and says why not the other. It named data=1, fsdp=8."""
  from vit_jax.train import config_checks

  config = tiny_plan_config(data=2, fsdp=1, hidden=32, mlp=64, heads=8)
  config.unlock()
  config.mesh.model = 4
  config.update(batches)
  config.lock()
  message, state_bytes = state_refusal(config)

  config_checks.check_config(with_split(config, 1, 4, 2), num_devices=8, process_count=1)
  with pytest.raises(ValueError) as refused:
    config_checks.check_config(with_split(config, 1, 8, 1), num_devices=8, process_count=1)
  assert str(refused.value) == reason
  assert state_bytes(1, 8, 1) < state_bytes(1, 4, 2) < state_bytes(2, 1, 4)
  assert message == (
      f"1.75 MiB per device does not fit tiny's 0.25 MiB; the largest term is "
      f"optimizer state, 1.00 MiB: set config.mesh.data=1, config.mesh.fsdp=4, "
      f"config.mesh.model=2 (now data=2, fsdp=1, model=4) for "
      f"{estimate.format_bytes(state_bytes(1, 4, 2))} of parameters and optimizer "
      f"state per device, not {estimate.format_bytes(state_bytes(2, 1, 4))} (data=1, "
      f"fsdp=8, model=1 would leave {estimate.format_bytes(state_bytes(1, 8, 1))}, but "
      f"the trainer refuses it: {reason})")


@pytest.mark.parametrize("spec, message", [  # an unknown kind: the command's test
    ("h100", "--devices=h100: expected KIND:CHIPS with a whole number of chips >= 1, "
     "e.g. h100:256"),
    ("tpu_v4:0", "--devices=tpu_v4:0: expected KIND:CHIPS with a whole number of "
     "chips >= 1, e.g. tpu_v4:256"),
])
def test_a_bad_devices_flag_names_the_valid_kinds(spec, message):
  with pytest.raises(ValueError) as error:
    estimate.parse_devices(spec)
  assert str(error.value) == message


def test_tpu_v3_chips_are_two_devices_of_16_gib():
  kind, chips = estimate.parse_devices("tpu_v3:128")
  assert (chips, kind.devices_per_chip, kind.memory_bytes) == (128, 2, 16 * 2**30)


@pytest.mark.parametrize("devices, data, hint", [
    ("tpu_v4:8", 3, "; or plan for 3 devices: --devices=tpu_v4:3"),
    ("tpu_v3:4", 6, "; or plan for 6 devices: --devices=tpu_v3:3"),
    ("tpu_v3:4", 3, ""),  # half a chip: no such target
])
def test_a_mesh_that_does_not_cover_the_targets_devices_names_the_devices_flag(
    devices, data, hint):
  """Not JAX_NUM_CPU_DEVICES, a run's hint: with it set the plan is refused."""
  with pytest.raises(ValueError) as error:
    estimate.print_report(tiny_plan_config(data=data, fsdp=1), mfu=0.4,
                          devices=devices)
  assert str(error.value) == (
      f"config.mesh data={data} x fsdp=1 x model=1 does not cover the 8 devices; "
      f"choose sizes whose product is 8, at most one of them -1 (it takes the "
      f"rest){hint}")


def test_the_estimate_prices_a_training_step_as_three_forward_passes():
  """The forward pass (hand-counted in test_accounting.py) x 3 for a training
  step, x 16 x 10 examples, at 61.5e12 FLOP/s a TPU v3 core and the assumed
  MFU of 0.4: TPUv3-core-days = FLOPs / (61.5e12 x 0.4 x 86,400). A step is
  its global batch of examples, however many micro-batches make it up."""
  from vit_jax.models import build

  config = tiny_plan_config(data=-1, fsdp=1).copy_and_resolve_references()
  config.accum_steps = 2
  forward = accounting.analytic_flops_per_example(build.model_from_config(config), 16,
                                                  train=False)
  result = estimate.estimate(config, total_steps=10, mfu=0.4)
  assert result["inference_flops_per_example"] == forward
  assert result["train_flops_per_example"] == 3 * forward
  assert result["examples"] == 160 and result["total_train_flops"] == 3 * forward * 160
  assert result["tpuv3_core_days"] == pytest.approx(
      3 * forward * 160 / (61.5e12 * 0.4 * 86400), rel=1e-12)
  # XLA's count of the gradient too, not of the forward pass alone.
  assert result["train_flops_per_example_xla"] == pytest.approx(3 * forward, rel=0.3)


def test_a_plans_step_time_divides_its_flops_by_every_device_of_every_chip():
  """4 chips of two TPU v3 cores are 8 devices of 61.5e12 FLOP/s: a step of
  16 examples of 3 forward passes each takes 16 x 3F / (8 x 61.5e12 x 0.4)
  seconds, whatever the accumulation, and 10 steps that over 86,400 days.
  XLA's count of one device's micro-batch, x 8 devices x 2 micro-batches, is
  the whole step's and more (the optimizer's and elementwise work: 1.7x the
  model's here); one device's share or one micro-batch (0.2x, 0.8x) is less."""
  kind = estimate.DeviceKind("tiny_v3", "TPU v3", "tpu", memory_bytes=2**18,
                             devices_per_chip=2)
  config = tiny_plan_config(data=-1, fsdp=1).copy_and_resolve_references()
  config.accum_steps = 2
  forward = estimate.estimate(config, total_steps=10, mfu=0.4)["inference_flops_per_example"]
  plan, _ = estimate.device_plan(config, kind, 4, total_steps=10, mfu=0.4)
  assert plan["devices"] == "tiny_v3:4, 8 JAX devices of 0.25 MiB"
  assert plan["micro_batch_per_device"] == 1
  assert plan["peak_flops_per_device"] == 61.5e12
  assert plan["step_flops"] == 16 * 3 * forward
  assert plan["step_seconds"] == pytest.approx(16 * 3 * forward / (8 * 61.5e12 * 0.4),
                                               rel=1e-12)
  assert plan["run_days"] == pytest.approx(plan["step_seconds"] * 10 / 86400, rel=1e-12)
  assert plan["step_flops_xla"] > plan["step_flops"]
