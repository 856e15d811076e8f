r"""Prints runs as rows of a table like the ViT paper's Table 2.

  python scripts/summarize.py runs/demo/pretrain runs/demo/finetune

Each WORKDIR must hold the `summary.json` a finished run writes.
"""
import json
import os

from absl import app

from vit_jax.runtime import cli
from vit_jax.train import metrics

FLAGS = cli.command_flags(__name__)  # no flags of its own, but absl's (--help)


def read_summary(workdir):
  """``workdir``'s summary.json, checked whole so a bad one is named, not a KeyError."""
  path = os.path.join(workdir, "summary.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: is {workdir} a finished run?")
  with open(path) as f:
    try:
      summary = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} is not valid JSON ({e}): a run's summary.json "
                       f"is one object with {', '.join(metrics.SUMMARY_FIELDS)}") from None
  missing = [field for field in metrics.SUMMARY_FIELDS
             if not isinstance(summary, dict) or field not in summary]
  if missing:
    raise ValueError(f"{path} lacks {', '.join(missing)}: a finished run's "
                     f"summary.json has {', '.join(metrics.SUMMARY_FIELDS)}")
  return summary


def main(argv):
  workdirs = argv[1:]
  if not workdirs:
    raise app.UsageError("name the finished runs' workdirs to summarize")
  print(metrics.summary_table({w: read_summary(w) for w in workdirs}))


if __name__ == "__main__":
  cli.run(main)
