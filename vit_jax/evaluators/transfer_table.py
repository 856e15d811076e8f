"""The transfer suite's table, in the layout of the ViT paper's Table 2 (one model).

A row per benchmark with its test accuracy as "mean ± std" over the seeds
(the sample standard deviation, 0 for one seed), the learning rate the dev
split chose, then VTAB's mean over its tasks and over each group (natural,
specialized, structured: per seed the mean over the group's tasks, then mean
± std over seeds), then what the pre-training cost in TPUv3-core-days and in
core-days of the device it ran on, and what the suite's fine-tunes cost.
"""
import numpy as np

from vit_jax.evaluators.over_seeds import mean_and_std

VTAB_GROUPS = ("natural", "specialized", "structured")


def rows(results):
  """The table as a list of {benchmark, lr, mean, std, seeds} (accuracies in %)."""
  table = []
  groups = {}
  for bench in results["benchmarks"].values():
    scores = [run["accuracy"] for run in bench["runs"]]
    table.append(_row(bench["row"], scores, lr=bench["lr"]))
    if bench.get("extra_row"):
      table.append(_row(bench["extra_row"], [run["extra_accuracy"] for run in bench["runs"]],
                        lr=bench["lr"]))
    if bench["group"]:
      groups.setdefault(bench["group"], []).append(scores)
  if groups:
    every_task = [scores for group in groups.values() for scores in group]
    table.append(_row(f"VTAB ({len(every_task)} tasks)", _per_seed_mean(every_task)))
    for group in VTAB_GROUPS:
      if group in groups:
        table.append(_row(f"VTAB {group} ({len(groups[group])} tasks)",
                          _per_seed_mean(groups[group])))
  return table


def cost_rows(results):
  """(label, value) of the pre-training's and the fine-tunes' core-days."""
  cost = []
  pretraining = results.get("pretraining") or {}
  for key, value in pretraining.items():
    if key.startswith("core_days_"):
      cost.append((f"pre-training core-days ({key[len('core_days_'):]})", value))
  if "tpuv3_core_days" in pretraining:
    cost.append(("pre-training TPUv3-core-days", pretraining["tpuv3_core_days"]))
  fine_tuning = sum(run["tpuv3_core_days"] for bench in results["benchmarks"].values()
                    for run in bench["runs"])
  cost.append(("fine-tuning TPUv3-core-days (final runs)", fine_tuning))
  return cost


def markdown(results):
  """The table as Markdown, accuracies in % with two decimals."""
  seeds = max((len(bench["runs"]) for bench in results["benchmarks"].values()), default=0)
  lines = [f"| benchmark | lr | top-1 %, mean ± std over {seeds} seed(s) |",
           "|---|---|---|"]
  for row in rows(results):
    lr = "" if row["lr"] is None else f"{row['lr']:g}"
    lines.append(f"| {row['benchmark']} | {lr} | {row['mean']:.2f} ± {row['std']:.2f} |")
  for label, value in cost_rows(results):
    lines.append(f"| {label} | | {value:.3g} |")
  return "\n".join(lines)


def _row(name, scores, lr=None):
  scores = 100 * np.asarray(scores, np.float64)
  mean, std = mean_and_std(scores)
  return {"benchmark": name, "lr": lr, "mean": mean, "std": std,
          "seeds": [float(s) for s in scores]}


def _per_seed_mean(task_scores):
  """Per seed, the mean over tasks (each task's list of per-seed scores)."""
  return list(np.mean(np.asarray(task_scores, np.float64), axis=0))
