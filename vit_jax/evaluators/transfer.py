"""The transfer suite: a learning rate chosen on a dev split, then seeds on the test split.

The ViT paper's protocol (its Appendix B.1.1): for each benchmark, fine-tune
on a development sub-split of the training set once per learning rate of
the grid and keep the rate that scores best on the held-out rest; then
fine-tune on the whole training set with that rate, once per seed, and score
the test split. `configs/transfer.py` says which benchmarks, grids, splits
and fine-tuning recipe; this module runs them. Every fine-tune is an
ordinary run (`train.loop.train_and_evaluate`) in its own workdir:

  SUITE_DIR/config.json        the suite's config
  SUITE_DIR/NAME/dev_lr0.01/   a run per learning rate of the grid (none for one rate)
  SUITE_DIR/NAME/seed0/        the final runs, one per seed
  SUITE_DIR/results.json       every score, the table's source (`transfer_table`)
  SUITE_DIR/table.md           the table

A run whose `summary.json` exists is finished: it is read, not redone. One
that stopped on a non-finite loss leaves `diverged.txt` and is never chosen.
Any other starts, or resumes from its latest checkpoint, so a suite killed
and run again picks up where it stopped. A run directory that holds a run of
another config (another grid, length or recipe, in the same workdir) is
refused, not read (`check_same_run`).
"""
import copy
import json
import os
import re

import jax
from absl import logging

from vit_jax.cost import accounting
from vit_jax.data import sources
from vit_jax.evaluators import classification, transfer_table
from vit_jax.train import checkpoints, config_checks, loop, workdir_files

# A fine-tune's fields that `fine_tune_config` sets for each run -> the
# suite's field it takes them from ({name}: the benchmark's). The suite's
# config (`configs/transfer.py`) leaves them unset.
PER_RUN_FIELDS = {"seed": "config.seeds", "lr.base": "config.benchmarks.{name}.lrs",
                  "data.train_split": "config.benchmarks.{name}.splits",
                  "data.eval_splits": "config.benchmarks.{name}.splits"}

DIVERGED_FILE = "diverged.txt"
RESULTS_FILE = "results.json"
TABLE_FILE = "table.md"
EXTRA_FILE = "extra_eval.json"


def run_suite(config, workdir):
  """Runs every benchmark of the suite ``config``; returns and writes the results.

  Every run's config and every dataset are checked before anything trains.
  """
  check_workdir(workdir)
  check_runs(config)
  check_datasets(config)
  is_main = jax.process_index() == 0
  if is_main:
    os.makedirs(workdir, exist_ok=True)
    workdir_files.write_whole(os.path.join(workdir, workdir_files.CONFIG_FILE),
                              config.to_json(indent=2))
  results = {"suite": config.suite, "init": config.init,
             "pretraining": pretraining_cost(config.init),
             "benchmarks": earlier_benchmarks(workdir, config)}
  for name, bench in config.benchmarks.items():
    results["benchmarks"][name] = run_benchmark(bench, config.seeds,
                                                os.path.join(workdir, name))
    if is_main:  # after each benchmark, so a killed suite still shows its progress
      write_results(workdir, results)
  return results


def check_workdir(workdir):
  """Refuses a ``workdir`` that holds a training run, whose config.json the
  suite's would replace (and whose checkpoints no suite reads)."""
  config_path = os.path.join(workdir, workdir_files.CONFIG_FILE)
  holds_a_run = os.path.isdir(os.path.join(workdir, workdir_files.CHECKPOINT_SUBDIR))
  if not holds_a_run and os.path.exists(config_path):
    saved = workdir_files.read_json(config_path, "the config.json of a suite or a run")
    holds_a_run = workdir_files.SUITE_FIELD not in saved
  if holds_a_run:
    raise ValueError(f"--workdir={workdir} holds a training run ({config_path}, "
                     f"{workdir_files.CHECKPOINT_SUBDIR}/), which the suite's files "
                     f"would replace; give the suite a workdir of its own, such as "
                     f"{os.path.join(workdir, 'transfer')}")


def earlier_benchmarks(workdir, config):
  """The results already in ``workdir``'s results.json of the benchmarks that
  ``config`` leaves out, where they are of the same suite, ``init`` and seeds.

  A suite run again with a subset of its benchmarks (`benchmarks=` of
  configs/transfer.py) keeps the others' rows in the table; the results of
  another pre-trained model, suite or set of seeds are not mixed in.
  """
  path = os.path.join(workdir, RESULTS_FILE)
  if not os.path.exists(path):
    return {}
  try:
    with open(path) as f:
      earlier = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is no JSON ({e}); move it away to start the "
                     f"suite's table afresh") from None
  if (earlier.get("suite"), earlier.get("init")) != (config.suite, config.init):
    return {}
  return {name: bench for name, bench in earlier.get("benchmarks", {}).items()
          if name not in config.benchmarks
          and [run["seed"] for run in bench["runs"]] == list(config.seeds)}


def check_runs(config):
  """Fails naming the first field of the suite that one of its runs could not take.

  The trainer checks a run's config as the run starts; checked here, a bad
  override of the last benchmark stops the suite before the first trains.
  A fine-tune's field of `PER_RUN_FIELDS` is refused when set, as the
  suite's value would silently replace it.
  """
  if not config.seeds:
    raise ValueError("config.seeds is empty; give one seed or more")
  for name, bench in config.benchmarks.items():
    for field, source in PER_RUN_FIELDS.items():
      value = bench.finetune
      for part in field.split("."):
        value = value[part]
      if value is not None:
        raise ValueError(f"config.benchmarks.{name}.finetune.{field}={value!r}: the "
                         f"suite sets it for each run from {source.format(name=name)}; "
                         f"set that instead")
    if not bench.lrs:
      raise ValueError(f"config.benchmarks.{name}.lrs is empty; give one learning "
                       f"rate or more")
    # Each rate with the first seed and each seed with the first rate: the
    # checks look at one field at a time.
    for lr, seed in ([(lr, config.seeds[0]) for lr in bench.lrs] +
                     [(bench.lrs[0], seed) for seed in config.seeds[1:]]):
      run_config = fine_tune_config(bench, lr=lr, seed=seed, train=bench.splits.train,
                                    eval_name="test", eval_split=bench.splits.test)
      try:
        config_checks.check_config(run_config, num_devices=jax.device_count(),
                                   process_count=jax.process_count())
      except ValueError as e:
        raise ValueError(f"config.benchmarks.{name} (lr {lr:g}, seed {seed}): "
                         f"{e}") from None


def check_datasets(config):
  """Fails naming every missing dataset of the suite, with how to prepare it,
  and every split one lacks.

  A split the dataset lacks or a slice past its end is named by its field
  (`config.benchmarks.NAME.splits.dev`), as the config's mistake, not the
  data's. A dataset that is missing is named once, for the first benchmark
  that reads it.
  """
  problems, missing = [], set()
  for name, bench in config.benchmarks.items():
    where = f"config.benchmarks.{name}"
    reads = [(bench.finetune.data, {f"{where}.splits.{key}": split
                                    for key, split in bench.splits.items()})]
    if "extra" in bench:
      reads.append((bench.extra.data, {f"{where}.extra.split": bench.extra.split}))
    for data, wanted in reads:
      if data.name in missing:
        continue
      try:
        source = sources.get_source(data)
        for field, split in wanted.items():
          try:
            source.regions(split)
          except sources.DatasetNotPreparedError:
            raise
          except (FileNotFoundError, ValueError) as e:
            problems.append(f"{name}: {field}={split!r}: {e}")
      except (FileNotFoundError, ValueError) as e:
        problems.append(f"{name}: {e}")
        missing.add(data.name)
  if problems:
    raise sources.DatasetNotPreparedError(
        f"the suite cannot read {len(problems)} of its datasets and splits; nothing "
        f"was trained:\n  " + "\n  ".join(problems))


def run_benchmark(bench, seeds, bench_dir):
  """The learning rate the dev split chose and the test scores of each seed."""
  dev_scores = {}
  if len(bench.lrs) > 1:
    for lr in bench.lrs:
      run_config = fine_tune_config(bench, lr=lr, seed=0, train=bench.splits.dev_train,
                                    eval_name="dev", eval_split=bench.splits.dev)
      summary = run_once(run_config, os.path.join(bench_dir, f"dev_lr{lr:g}"))
      dev_scores[lr] = None if summary is None else accuracy(summary["eval"]["dev"])
  lr = choose_lr(bench.lrs, dev_scores)
  runs = []
  for seed in seeds:
    run_config = fine_tune_config(bench, lr=lr, seed=seed, train=bench.splits.train,
                                  eval_name="test", eval_split=bench.splits.test)
    run_dir = os.path.join(bench_dir, f"seed{seed}")
    summary = run_once(run_config, run_dir)
    if summary is None:
      raise FloatingPointError(f"{bench.row}: the final run of seed {seed} at lr "
                               f"{lr:g}, which the dev split chose, diverged "
                               f"({os.path.join(run_dir, DIVERGED_FILE)})")
    run = {"seed": seed, "accuracy": accuracy(summary["eval"]["test"]),
           "core_days": summary["core_days"],
           "tpuv3_core_days": summary["tpuv3_core_days"]}
    if "extra" in bench:
      run["extra_accuracy"] = extra_accuracy(run_config, bench.extra, run_dir)
    runs.append(run)
  return {"row": bench.row, "group": bench.group,
          "extra_row": bench.extra.row if "extra" in bench else "",
          "lr": lr, "dev": {f"{lr:g}": score for lr, score in dev_scores.items()},
          "runs": runs}


def fine_tune_config(bench, *, lr, seed, train, eval_name, eval_split):
  """The benchmark's fine-tuning config with one rate, seed, and split pair."""
  config = copy.deepcopy(bench.finetune)  # keeps its FieldReferences working
  with config.unlocked():
    config.seed = seed
    config.lr.base = lr
    config.data.train_split = train
    config.data.eval_splits = {eval_name: eval_split}
  return config


# Fields of a run's config that do not change what it learns or scores: where
# its data is, how often it logs, evaluates and checkpoints, the probes
# while training, and how the devices compute the same function (their
# layout, kernels, memory savers).
_FIELDS_THAT_KEEP_SCORES = re.compile(
    r"(checkpoint_every|keep_checkpoints|log_every|eval_every|eval_batch|prefetch"
    r"|on_save_error|accum_steps|fewshot|mesh"
    r"|data\.(data_dir|prepare|cache|strict|published_sizes)"
    r"|model\.(\w+_implementation|token_padding|remat|remat_policy))(\..+)?")
# Fields that name a path, compared as the file they name.
_PATH_FIELDS = ("init",)


def _flat_fields(tree, prefix=""):
  """{dotted field: value} of a config's JSON."""
  fields = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      fields.update(_flat_fields(value, f"{prefix}{key}."))
    else:
      fields[f"{prefix}{key}"] = value
  return fields


def check_same_run(config, run_dir):
  """Refuses ``run_dir`` where it holds a run of another config than ``config``.

  A run's directory is named by its rate and seed alone, so a suite run again
  in the same workdir with another grid, length or recipe would otherwise
  report the old runs' scores as the new config's, or resume them under it.
  Fields that do not change the scores may differ (`_FIELDS_THAT_KEEP_SCORES`),
  and so may fields that one of the two configs lacks (added to the code
  since).
  """
  path = os.path.join(run_dir, workdir_files.CONFIG_FILE)
  if not os.path.exists(path):
    return
  with open(path) as f:
    saved = _flat_fields(json.load(f))
  wanted = _flat_fields(json.loads(config.to_json_best_effort()))
  for fields in (saved, wanted):
    for field in _PATH_FIELDS:
      if fields.get(field):
        fields[field] = os.path.realpath(fields[field])
  differ = [field for field in sorted(saved.keys() & wanted.keys())
            if saved[field] != wanted[field] and not _FIELDS_THAT_KEEP_SCORES.fullmatch(field)]
  if differ:
    first = differ[0]
    more = f" (and {', '.join(differ[1:])})" if differ[1:] else ""
    raise ValueError(
        f"{run_dir} holds a run of another config: {first}={saved[first]!r} there, "
        f"{wanted[first]!r} in this suite{more}, so its scores are not this suite's. "
        f"Run the suite with the config that trained it ({path}), or move that run "
        f"(or its benchmark's directory, {os.path.dirname(run_dir)}) away to train "
        f"it again")


def run_once(config, run_dir):
  """The summary of the run in ``run_dir``: read if finished, else trained (or resumed).

  None when the run stopped on a non-finite loss or gradient (now or before).
  A run of another config there is refused (`check_same_run`).
  """
  check_same_run(config, run_dir)
  diverged_path = os.path.join(run_dir, DIVERGED_FILE)
  summary = workdir_files.read_summary(run_dir)
  if summary is not None:
    logging.info("%s is finished; its summary is read, not rerun", run_dir)
    return summary
  if os.path.exists(diverged_path):
    return None
  try:
    return loop.train_and_evaluate(config, run_dir)
  except FloatingPointError as e:
    logging.warning("%s diverged: %s", run_dir, e)
    if jax.process_index() == 0:
      workdir_files.write_whole(diverged_path, f"{e}\n")
    return None


def choose_lr(lrs, dev_scores):
  """The rate of the best dev score; the grid's only rate when there is no choice.

  A diverged run (score None) is never chosen; ties go to the first rate.
  """
  if not dev_scores:
    return lrs[0]
  finite = {lr: score for lr, score in dev_scores.items() if score is not None}
  if not finite:
    raise FloatingPointError(f"every learning rate of the grid {list(lrs)} "
                             f"diverged on the dev split")
  return max(finite, key=lambda lr: (finite[lr], -lrs.index(lr)))


def accuracy(split_metrics):
  """Top-1 (single label) or precision@1 (multi-label) of one split's metrics."""
  return split_metrics.get("top1", split_metrics.get("prec@1"))


def extra_accuracy(run_config, extra, run_dir):
  """The final run's parameters scored on a second labelling of the test images.

  ImageNet ReaL: the validation images with their re-assessed labels, as
  precision@1 over the images that have any (`classification.evaluate`).
  """
  path = os.path.join(run_dir, EXTRA_FILE)
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)["accuracy"]
  config = copy.deepcopy(run_config)
  with config.unlocked():
    config.data.update(extra.data)
  metrics = classification.evaluate_checkpoint(config, run_dir, {"extra": extra.split})
  score = accuracy(metrics["extra"])
  if jax.process_index() == 0:
    workdir_files.write_whole(path, json.dumps({"row": extra.row, "accuracy": score,
                                                **metrics["extra"]}, indent=2))
  return score


def pretraining_cost(init):
  """The core-days the pre-training run ``init`` reported, where it is a workdir.

  One of its checkpoint steps before the end cost what its saved progress
  says (`accounting.cost_fields`); one saved before that was kept, the share
  of the whole run's that its training seconds are.
  """
  workdir = workdir_files.run_workdir(init)
  summary = workdir_files.read_summary(workdir)
  if summary is None:
    return None
  share = 1.0
  step_dir = os.path.normpath(init)
  step = int(os.path.basename(step_dir)) if step_dir != workdir else summary["step"]
  if step != summary["step"]:
    manager = checkpoints.manager_at(os.path.dirname(step_dir), read_only=True)
    try:
      progress = checkpoints.read_progress(manager, step)
    finally:
      manager.close()
    if "device_seconds" in progress:
      return accounting.cost_fields(progress)
    share = progress["train_seconds"] / summary["train_seconds"]
  return {key: value * share for key, value in summary.items()
          if key.startswith("core_days") or key == "tpuv3_core_days"}


def write_results(workdir, results):
  """results.json (every score, and the table's rows) and table.md, written whole."""
  table = {"rows": transfer_table.rows(results),
           "cost": dict(transfer_table.cost_rows(results))}
  workdir_files.write_whole(os.path.join(workdir, RESULTS_FILE),
                            json.dumps({**results, "table": table}, indent=2))
  workdir_files.write_whole(os.path.join(workdir, TABLE_FILE),
                            transfer_table.markdown(results) + "\n")
