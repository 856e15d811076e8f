r"""Prints runs as rows of a table like the ViT paper's Table 2.

  python scripts/summarize.py runs/demo/pretrain runs/demo/finetune

Each WORKDIR must hold the `summary.json` a finished run writes.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vit_jax import metrics  # noqa: E402


def read_summary(workdir):
  path = os.path.join(workdir, "summary.json")
  if not os.path.exists(path):
    raise SystemExit(f"{path} does not exist: is {workdir} a finished run?")
  with open(path) as f:
    return json.load(f)


def main(workdirs):
  if not workdirs:
    raise SystemExit(__doc__)
  print(metrics.summary_table({w: read_summary(w) for w in workdirs}))


if __name__ == "__main__":
  main(sys.argv[1:])
