"""The transfer suite: lr chosen on the dev split, seeds, resume, missing data, the table."""
import json
import os

import ml_collections
import numpy as np
import pytest
from ml_collections.config_dict import placeholder

from configs import common, transfer as transfer_config
from conftest import tiny_config
from vit_jax.cost import accounting
from vit_jax.data import sources
from vit_jax.evaluators import transfer, transfer_table
from vit_jax.train import checkpoints

DIVERGING_LR = 1e30  # parameters overflow float32 in the first steps


def tiny_suite(data_dir, *, lrs=(DIVERGING_LR, 0.05), seeds=(0, 1), **overrides):
  """A one-benchmark suite of the tiny config, fine-tuning from scratch."""
  finetune = tiny_config(data_dir, **{"optim.name": "sgd", "optim.weight_decay": 0.0,
                                      **overrides})
  # The extra row scores the final runs again on the same test images and
  # labels, standing in for ImageNet's ReaL labels.
  extra_data = finetune.data.copy_and_resolve_references()
  with finetune.unlocked():  # the suite sets these per run, as configs/transfer.py's
    finetune.seed = placeholder(int)
    finetune.lr.base = placeholder(float)
    finetune.data.train_split = placeholder(str)
    finetune.data.eval_splits = None
  config = ml_collections.ConfigDict(dict(
      suite="test", init="", seeds=seeds, benchmarks={"tiny": dict(
          row="Tiny Fashion", group="", lrs=lrs, finetune=finetune,
          splits=dict(train="train", dev_train="train[:80%]", dev="train[80%:]",
                      test="test"),
          extra=dict(row="Tiny Fashion again", split="test", data=extra_data))}))
  config.lock()
  return config


@pytest.mark.slow
def test_a_diverging_rate_is_not_chosen_and_a_rerun_redoes_nothing(fashion_data_dir, tmp_path):
  config = tiny_suite(fashion_data_dir)
  results = transfer.run_suite(config, str(tmp_path))
  bench = results["benchmarks"]["tiny"]
  assert bench["dev"] == {f"{DIVERGING_LR:g}": None, "0.05": pytest.approx(bench["dev"]["0.05"])}
  assert bench["dev"]["0.05"] > 0.2  # learned something: 10 classes
  assert bench["lr"] == 0.05
  assert "non-finite" in (tmp_path / "tiny" / f"dev_lr{DIVERGING_LR:g}" /
                          transfer.DIVERGED_FILE).read_text()
  assert [run["seed"] for run in bench["runs"]] == [0, 1]
  seed_runs = [json.loads((tmp_path / "tiny" / f"seed{s}" / "summary.json").read_text())
               for s in (0, 1)]
  assert [run["accuracy"] for run in bench["runs"]] == [
      summary["eval"]["test"]["top1"] for summary in seed_runs]
  assert seed_runs[0]["eval"]["test"]["num_examples"] == 103  # the whole test split
  assert [run["extra_accuracy"] for run in bench["runs"]] == pytest.approx(
      [run["accuracy"] for run in bench["runs"]])
  assert [json.loads((tmp_path / "tiny" / f"seed{s}" / "config.json").read_text())["seed"]
          for s in (0, 1)] == [0, 1]

  # What a killed suite leaves: finished runs, and one with checkpoints but no summary.
  finished = tmp_path / "tiny" / "seed0" / "summary.json"
  mtime = finished.stat().st_mtime_ns
  (tmp_path / "tiny" / "seed1" / "summary.json").unlink()
  # A benchmark of the same suite that this config leaves out (a run of a
  # subset, benchmarks=...) keeps its row.
  saved = json.loads((tmp_path / transfer.RESULTS_FILE).read_text())
  saved["benchmarks"]["other"] = {**bench, "row": "Other", "extra_row": "Other again"}
  # One of other seeds is not: its runs would not make one table with these.
  saved["benchmarks"]["one_seed"] = {**bench, "row": "One seed", "runs": bench["runs"][:1]}
  (tmp_path / transfer.RESULTS_FILE).write_text(json.dumps(saved))
  again = transfer.run_suite(config, str(tmp_path))
  assert finished.stat().st_mtime_ns == mtime  # read, not rerun
  assert again["benchmarks"]["tiny"]["runs"] == bench["runs"]  # seed 1 resumed at its end
  saved = json.loads((tmp_path / transfer.RESULTS_FILE).read_text())
  assert [row["benchmark"] for row in saved["table"]["rows"]] == [
      "Other", "Other again", "Tiny Fashion", "Tiny Fashion again"]
  assert "| Tiny Fashion | 0.05 |" in (tmp_path / transfer.TABLE_FILE).read_text()


def test_a_missing_dataset_stops_the_suite_before_anything_trains(fashion_data_dir, tmp_path):
  config = tiny_suite(fashion_data_dir, **{"data.name": "no_such_dataset"})
  with pytest.raises(sources.DatasetNotPreparedError,
                     match=r"(?s)tiny: dataset 'no_such_dataset'.*prepare it with"):
    transfer.run_suite(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "tiny")


@pytest.mark.parametrize("split, problem", [
    ("trian[80%:]", "dataset 'fashion_mnist_local' has no split 'trian'; valid: test, train"),
    ("train[80%:", "split 'train[80%:' is not 'name' or a slice like 'name[:98%]' or "
     "'name[1000:2000]'"),
])
def test_a_split_the_dataset_lacks_is_named_by_its_field_before_anything_trains(
    split, problem, fashion_data_dir, tmp_path):
  config = tiny_suite(fashion_data_dir)
  config.benchmarks.tiny.splits.dev = split
  config.benchmarks.tiny.splits.test = "validation"  # every bad split is named
  with pytest.raises(sources.DatasetNotPreparedError) as error:
    transfer.run_suite(config, str(tmp_path))
  assert str(error.value) == (
      f"the suite cannot read 2 of its datasets and splits; nothing was trained:\n"
      f"  tiny: config.benchmarks.tiny.splits.dev={split!r}: {problem}\n"
      f"  tiny: config.benchmarks.tiny.splits.test='validation': dataset "
      f"'fashion_mnist_local' has no split 'validation'; valid: test, train")
  assert not os.path.exists(tmp_path / "tiny")


@pytest.mark.parametrize("lrs, overrides, message", [
    ((0.05, -1.0), {}, "config.benchmarks.tiny (lr -1, seed 0): config.lr.base=-1.0 "
     "must be > 0 (the peak learning rate)"),
    ((0.05,), {"optim.grad_clip_norm": -1.0}, "config.benchmarks.tiny (lr 0.05, seed 0): "
     "config.optim.grad_clip_norm=-1.0 must be >= 0 (0 turns clipping off; a negative "
     "norm would flip every gradient)"),
    ((), {}, "config.benchmarks.tiny.lrs is empty; give one learning rate or more"),
])
def test_a_field_no_run_could_take_stops_the_suite_before_anything_trains(
    lrs, overrides, message, tmp_path):
  config = tiny_suite(str(tmp_path / "no_data"), lrs=lrs, **overrides)
  with pytest.raises(ValueError) as error:
    transfer.run_suite(config, str(tmp_path))
  assert str(error.value) == message
  assert not os.path.exists(tmp_path / "tiny")


@pytest.mark.parametrize("run_files", [("config.json",), ("checkpoints/",)])
def test_a_workdir_holding_a_training_run_is_refused_and_kept(run_files, tmp_path):
  run_config = json.dumps({"variant": "Ti/16", "data": {}, "pp": {}})
  for name in run_files:
    if name.endswith("/"):
      (tmp_path / name).mkdir()
    else:
      (tmp_path / name).write_text(run_config)
  config = tiny_suite(str(tmp_path / "no_data"))
  with pytest.raises(ValueError, match=(
      rf"--workdir={tmp_path} holds a training run .*; give the suite a workdir of "
      rf"its own, such as {tmp_path}/transfer")):
    transfer.run_suite(config, str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == sorted(name.rstrip("/") for name in run_files)
  if "config.json" in run_files:
    assert (tmp_path / "config.json").read_text() == run_config


def test_a_suites_own_workdir_is_taken_again(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"benchmarks": {}}))
  transfer.check_workdir(str(tmp_path))  # no error: a suite run again resumes


def test_an_init_that_does_not_exist_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match=(
      rf"configs/transfer.py: init='{tmp_path}/nothere' does not exist")):
    transfer_config.get_config(f"suite=demo,init={tmp_path}/nothere")


@pytest.mark.parametrize("field, value, source", [
    ("seed", 3, "config.seeds"),
    ("lr.base", 0.5, "config.benchmarks.tiny.lrs"),
    ("data.train_split", "train[:10%]", "config.benchmarks.tiny.splits"),
])
def test_a_fine_tune_field_the_suite_sets_per_run_is_refused_naming_its_source(
    field, value, source, tmp_path):
  config = tiny_suite(str(tmp_path / "no_data"))
  *parents, leaf = field.split(".")
  node = config.benchmarks.tiny.finetune
  for part in parents:
    node = node[part]
  node[leaf] = value  # as --config.benchmarks.tiny.finetune.FIELD=VALUE does
  with pytest.raises(ValueError) as error:
    transfer.run_suite(config, str(tmp_path))
  assert str(error.value) == (f"config.benchmarks.tiny.finetune.{field}={value!r}: the "
                              f"suite sets it for each run from {source}; set that instead")


@pytest.mark.parametrize("suite", ["demo", "paper"])
def test_suite_configs_leave_per_run_fields_unset_and_init_to_config_init(suite):
  config = transfer_config.get_config(f"suite={suite},init=/x.npz,variant=Ti/7")
  for bench in config.benchmarks.values():
    for field in transfer.PER_RUN_FIELDS:
      node = bench.finetune
      for part in field.split("."):
        node = node[part]
      assert node is None, field
  config.init = "/y.npz"  # as --config.init=/y.npz does
  assert {bench.finetune.init for bench in config.benchmarks.values()} == {"/y.npz"}


def finished_run(run_dir, config, top1):
  """A run directory as a finished fine-tune leaves it: its config and summary."""
  os.makedirs(run_dir)
  (run_dir / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True))
  (run_dir / "summary.json").write_text(json.dumps({"eval": {"test": {"top1": top1}}}))


def test_a_finished_run_of_another_config_is_refused_not_read(tmp_path):
  """A suite run again in its workdir with another grid, length or recipe:
  the old runs' scores are not reported as the new config's."""
  bench = tiny_suite(str(tmp_path / "data")).benchmarks.tiny
  with bench.unlocked():
    bench.finetune.init = str(tmp_path / "pretrain")
  run = dict(seed=0, train="train", eval_name="test", eval_split="test")
  finished_run(tmp_path / "seed0", transfer.fine_tune_config(bench, lr=0.1, **run), 0.75)

  same = transfer.fine_tune_config(bench, lr=0.1, **run)
  with same.unlocked():  # fields that change no score: paths, logging, layout, kernels
    same.data.data_dir = str(tmp_path / "moved")
    same.log_every, same.mesh.data, same.accum_steps = 7, 1, 2
    same.model.attention_implementation = "xla"
    same.init = os.path.relpath(tmp_path / "pretrain") + "/"  # the same directory
  assert transfer.run_once(same, str(tmp_path / "seed0"))["eval"]["test"]["top1"] == 0.75

  other_lr = transfer.fine_tune_config(bench, lr=0.03, **run)
  with pytest.raises(ValueError) as error:
    transfer.run_once(other_lr, str(tmp_path / "seed0"))
  assert str(error.value) == (
      f"{tmp_path / 'seed0'} holds a run of another config: lr.base=0.1 there, 0.03 in "
      f"this suite, so its scores are not this suite's. Run the suite with the config "
      f"that trained it ({tmp_path / 'seed0' / 'config.json'}), or move that run (or its "
      f"benchmark's directory, {tmp_path}) away to train it again")

  longer = transfer.fine_tune_config(bench, lr=0.1, **run)
  with longer.unlocked():
    longer.total_steps += 100
    longer.model.num_registers = 4
  with pytest.raises(ValueError, match=r"another config: model.num_registers=0 there, 4 in "
                                       r"this suite \(and total_steps\), so"):
    transfer.run_once(longer, str(tmp_path / "seed0"))


def test_the_lr_of_the_best_dev_score_is_chosen_ties_to_the_first():
  assert transfer.choose_lr((0.1, 0.2, 0.3), {0.1: 0.5, 0.2: 0.7, 0.3: 0.7}) == 0.2
  assert transfer.choose_lr((0.1, 0.2), {0.1: None, 0.2: 0.1}) == 0.2
  assert transfer.choose_lr((0.01,), {}) == 0.01
  with pytest.raises(FloatingPointError, match=r"every learning rate of the grid \[0.1, 0.2\]"):
    transfer.choose_lr((0.1, 0.2), {0.1: None, 0.2: None})


def test_dev_runs_choose_the_lr_on_the_held_out_split_and_final_runs_use_all_of_train(
    monkeypatch, tmp_path):
  """The paper's protocol (Appendix B.1.1): each rate trains on dev_train and
  is scored on dev, the held-out rest of train; the best dev score's rate then
  trains on all of train, once a seed, scored on test. The fake runs score
  the test split in the opposite order, so a rate chosen on test would be 0.1."""
  bench = tiny_suite(str(tmp_path / "no_data"), lrs=(0.01, 0.03, 0.1)).benchmarks.tiny
  scores = {"train[80%:]": {0.01: 0.5, 0.03: 0.7, 0.1: 0.6},
            "test": {0.01: 0.6, 0.03: 0.7, 0.1: 0.8}}
  runs = []

  def fake_run_once(config, run_dir):
    (name, split), = config.data.eval_splits.items()
    runs.append((os.path.basename(run_dir), config.lr.base, config.seed,
                 config.data.train_split, name, split))
    return {"eval": {name: {"top1": scores[split][config.lr.base] + config.seed / 100}},
            "core_days": 1.0 + config.seed, "tpuv3_core_days": 0.5 + config.seed}

  monkeypatch.setattr(transfer, "run_once", fake_run_once)
  monkeypatch.setattr(transfer, "extra_accuracy",
                      lambda run_config, extra, run_dir: 0.65 + run_config.seed / 100)
  result = transfer.run_benchmark(bench, (0, 1), str(tmp_path / "tiny"))
  assert runs == [
      ("dev_lr0.01", 0.01, 0, "train[:80%]", "dev", "train[80%:]"),
      ("dev_lr0.03", 0.03, 0, "train[:80%]", "dev", "train[80%:]"),
      ("dev_lr0.1", 0.1, 0, "train[:80%]", "dev", "train[80%:]"),
      ("seed0", 0.03, 0, "train", "test", "test"),
      ("seed1", 0.03, 1, "train", "test", "test")]
  assert result["lr"] == 0.03 and result["dev"] == {"0.01": 0.5, "0.03": 0.7, "0.1": 0.6}
  assert result["runs"] == [
      {"seed": 0, "accuracy": 0.7, "core_days": 1.0, "tpuv3_core_days": 0.5,
       "extra_accuracy": 0.65},
      {"seed": 1, "accuracy": 0.71, "core_days": 2.0, "tpuv3_core_days": 1.5,
       "extra_accuracy": 0.66}]


def test_the_extra_row_is_the_mean_and_std_of_the_extra_labels_accuracy():
  """ImageNet's ReaL row: the final runs' precision@1 on the re-assessed
  labels (``extra_accuracy``), its own mean ± std, under its own name."""
  runs = [{"seed": s, "accuracy": a, "extra_accuracy": e, "core_days": 0.0,
           "tpuv3_core_days": 0.0} for s, (a, e) in enumerate([(0.80, 0.85), (0.82, 0.89)])]
  results = {"benchmarks": {"imagenet2012": {
      "row": "ImageNet", "group": "", "extra_row": "ImageNet ReaL", "lr": 0.03, "dev": {},
      "runs": runs}}}
  rows = transfer_table.rows(results)
  assert [row["benchmark"] for row in rows] == ["ImageNet", "ImageNet ReaL"]
  assert rows[0]["seeds"] == pytest.approx([80.0, 82.0])
  assert rows[1]["seeds"] == pytest.approx([85.0, 89.0])
  # Sample std of 85 and 89: |85 - 89| / sqrt(2).
  assert rows[1]["mean"] == pytest.approx(87.0) and rows[1]["std"] == pytest.approx(2 * 2 ** 0.5)
  assert rows[1]["lr"] == 0.03
  assert "| ImageNet ReaL | 0.03 | 87.00 ± 2.83 |" in transfer_table.markdown(results)


def test_the_table_gives_mean_and_sample_std_per_benchmark_and_vtab_group():
  def bench(row, group, scores):
    return {"row": row, "group": group, "extra_row": "", "lr": 0.01, "dev": {},
            "runs": [{"seed": s, "accuracy": a, "core_days": 1.0, "tpuv3_core_days": 0.5}
                     for s, a in enumerate(scores)]}
  results = {"pretraining": {"core_days": 2.0, "core_days_cpu": 2.0, "tpuv3_core_days": 0.25},
             "benchmarks": {"a": bench("A", "natural", [0.80, 0.90, 1.00]),
                            "b": bench("B", "natural", [0.60, 0.60, 0.60]),
                            "c": bench("C", "structured", [0.40, 0.50, 0.30])}}
  rows = {row["benchmark"]: row for row in transfer_table.rows(results)}
  assert rows["A"]["mean"] == pytest.approx(90.0) and rows["A"]["std"] == pytest.approx(10.0)
  # Per seed the mean over tasks: (80+60+40)/3, (90+60+50)/3, (100+60+30)/3.
  assert rows["VTAB (3 tasks)"]["seeds"] == pytest.approx([60.0, 200 / 3, 190 / 3])
  assert rows["VTAB natural (2 tasks)"]["mean"] == pytest.approx(75.0)
  assert rows["VTAB structured (1 tasks)"]["std"] == pytest.approx(10.0)
  text = transfer_table.markdown(results)
  assert "| A | 0.01 | 90.00 ± 10.00 |" in text
  assert "| pre-training TPUv3-core-days | | 0.25 |" in text
  assert "| pre-training core-days (cpu) | | 2 |" in text
  assert "| fine-tuning TPUv3-core-days (final runs) | | 4.5 |" in text


def test_suite_configs_follow_table_4_and_name_their_splits(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"variant": "B/16", "data": {}, "pp": {}}))
  config = transfer_config.get_config(f"suite=paper,init={tmp_path}")
  names = list(config.benchmarks)
  assert names[:5] == ["imagenet2012", "cifar10", "cifar100", "oxford_iiit_pet",
                       "oxford_flowers102"]
  assert len(names) == 5 + 19
  pets = config.benchmarks.oxford_iiit_pet
  assert pets.finetune.total_steps == 500 and pets.lrs == (0.001, 0.003, 0.01, 0.03)
  assert pets.finetune.variant == "B/16" and pets.finetune.image_size == 384
  assert config.benchmarks.imagenet2012.lrs == (0.003, 0.01, 0.03, 0.06)
  assert config.benchmarks.imagenet2012.extra.data.name == "imagenet2012_real"
  groups = [config.benchmarks[n].group for n in names[5:]]
  assert (groups.count("natural"), groups.count("specialized"),
          groups.count("structured")) == (7, 4, 8)
  for name in names[5:]:
    vtab = config.benchmarks[name]
    assert vtab.lrs == (0.01,) and vtab.finetune.total_steps == 2_500
    assert set(vtab.splits) == {"train", "dev_train", "dev", "test"}
  assert list(transfer_config.get_config(
      f"suite=paper,init={tmp_path},benchmarks=cifar10+vtab_dtd").benchmarks) == [
          "cifar10", "vtab_dtd"]
  with pytest.raises(ValueError, match=r"benchmarks=mnist not in suite=vtab; valid: vtab_"):
    transfer_config.get_config(f"suite=vtab,init={tmp_path},benchmarks=mnist")
  (tmp_path / "x.npz").write_bytes(b"")
  with pytest.raises(ValueError, match=rf"variant= is needed: init='{tmp_path}/x.npz' has no"):
    transfer_config.get_config(f"suite=paper,init={tmp_path}/x.npz")
  assert transfer_config.get_config("suite=paper,init=x.npz,variant=L/16").benchmarks[
      "cifar10"].finetune.variant == "L/16"


def test_the_demo_suite_transfers_to_datasets_the_pre_training_did_not_see():
  config = transfer_config.get_config("suite=demo,init=/x,variant=Ti/7")
  assert list(config.benchmarks) == ["fashion_mnist_last5", "digits"]
  pretrain = common.DATASETS["fashion_mnist_first5"]["tfds_name"]
  for bench in config.benchmarks.values():
    assert bench.finetune.data.name != pretrain
    assert bench.finetune.optim.name == "sgd" and bench.finetune.optim.momentum == 0.9
    assert bench.finetune.optim.weight_decay == 0.0
    assert len(bench.lrs) > 1


def test_the_pre_training_cost_is_read_from_its_workdir_or_a_checkpoint_of_it(tmp_path):
  """A checkpoint before the end cost the share of the run's training seconds
  spent up to it, as its accounting saved them."""
  workdir = tmp_path / "pretrain"
  manager = checkpoints.make_manager(str(workdir))
  for step, seconds in ((600, 30.0), (1200, 120.0)):
    checkpoints.save(manager, step, {"step": np.int32(step)},
                     {"examples_seen": step * 64, "train_seconds": seconds})
  checkpoints.wait(manager)
  manager.close()
  (workdir / "summary.json").write_text(json.dumps(
      {"step": 1200, "train_seconds": 120.0, "core_days": 0.5, "core_days_cpu": 0.5,
       "tpuv3_core_days": 0.01, "eval": {"test": {"top1": 0.9}}}))
  cost = {"core_days": 0.5, "core_days_cpu": 0.5, "tpuv3_core_days": 0.01}
  assert transfer.pretraining_cost(str(workdir)) == cost
  assert transfer.pretraining_cost(str(workdir / "checkpoints" / "1200")) == cost
  assert transfer.pretraining_cost(str(workdir / "checkpoints" / "600")) == {
      key: value / 4 for key, value in cost.items()}
  assert transfer.pretraining_cost(str(tmp_path / "model.npz")) is None  # no workdir


def test_a_checkpoint_of_a_run_resumed_on_other_devices_costs_its_own_stretch(tmp_path):
  """1000 s on 8 TPU v3 cores up to step 100, then 1000 s on 4 H100s: step
  100 cost the TPU stretch alone, not a time share of both kinds."""
  workdir = tmp_path / "pretrain"
  manager = checkpoints.make_manager(str(workdir))
  tpu = accounting.Accountant(flops_per_example=1e9, num_devices=8, device_kind="TPU_v3",
                              peak_flops_per_device=accounting.TPU_V3_CORE_PEAK)
  tpu.update(examples=6400, seconds=1000.0)
  checkpoints.save(manager, 100, {"step": np.int32(100)}, tpu.state_dict())
  gpu = accounting.Accountant(flops_per_example=1e9, num_devices=4, device_kind="H100",
                              peak_flops_per_device=989e12, **tpu.state_dict())
  gpu.update(examples=6400, seconds=1000.0)
  checkpoints.save(manager, 200, {"step": np.int32(200)}, gpu.state_dict())
  checkpoints.wait(manager)
  manager.close()
  (workdir / "summary.json").write_text(json.dumps({"step": 200, **gpu.fields()}))
  assert transfer.pretraining_cost(str(workdir / "checkpoints" / "100")) == pytest.approx(
      {"core_days": 8000 / 86400, "core_days_TPU_v3": 8000 / 86400,
       "tpuv3_core_days": 8000 / 86400})
  whole = transfer.pretraining_cost(str(workdir))
  assert whole["core_days_H100"] == pytest.approx(4000 / 86400)
