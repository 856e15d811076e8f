r"""Prints runs as rows of a table like the ViT paper's Table 2.

  python scripts/summarize.py runs/demo/pretrain runs/demo/finetune

Each WORKDIR must hold the `summary.json` a finished run writes.
"""
import json
import os
import sys

COLUMNS = ("run", "model", "data", "res", "steps", "examples", "core-days",
           "TPUv3-core-days", "accuracy")


def row(workdir):
  path = os.path.join(workdir, "summary.json")
  if not os.path.exists(path):
    raise SystemExit(f"{path} does not exist: is {workdir} a finished run?")
  with open(path) as f:
    summary = json.load(f)
  accuracy = ", ".join(
      f"{split} {name} {100 * value:.2f}%"
      for split, split_metrics in summary["eval"].items()
      for name, value in split_metrics.items() if name in ("top1", "prec@1"))
  return (workdir, f"ViT-{summary['variant']}", summary["dataset"],
          str(summary["image_size"]), str(summary["step"]),
          f"{summary['examples_seen']:,.0f}", f"{summary['core_days']:.3g}",
          f"{summary['tpuv3_core_days']:.3g}", accuracy)


def main(workdirs):
  if not workdirs:
    raise SystemExit(__doc__)
  rows = [COLUMNS] + [row(w) for w in workdirs]
  widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
  for r in rows:
    print("  ".join(cell.ljust(width) for cell, width in zip(r, widths)))


if __name__ == "__main__":
  main(sys.argv[1:])
