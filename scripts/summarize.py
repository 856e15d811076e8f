r"""Prints runs as rows of a table like the ViT paper's Table 2.

  python scripts/summarize.py runs/demo/pretrain runs/demo/finetune

Each WORKDIR must hold the `summary.json` a finished run writes.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vit_jax.train import metrics  # noqa: E402


def read_summary(workdir):
  """``workdir``'s summary.json, checked whole so a bad one is named, not a KeyError."""
  path = os.path.join(workdir, "summary.json")
  if not os.path.exists(path):
    raise SystemExit(f"{path} does not exist: is {workdir} a finished run?")
  with open(path) as f:
    try:
      summary = json.load(f)
    except json.JSONDecodeError as e:
      raise SystemExit(f"{path} is not valid JSON ({e}): a run's summary.json "
                       f"is one object with {', '.join(metrics.SUMMARY_FIELDS)}") from None
  missing = [field for field in metrics.SUMMARY_FIELDS
             if not isinstance(summary, dict) or field not in summary]
  if missing:
    raise SystemExit(f"{path} lacks {', '.join(missing)}: a finished run's "
                     f"summary.json has {', '.join(metrics.SUMMARY_FIELDS)}")
  return summary


def main(workdirs):
  if not workdirs:
    raise SystemExit(__doc__)
  print(metrics.summary_table({w: read_summary(w) for w in workdirs}))


if __name__ == "__main__":
  main(sys.argv[1:])
