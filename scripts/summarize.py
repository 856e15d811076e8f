r"""Prints runs as rows of a table like the ViT paper's Table 2.

  python scripts/summarize.py runs/demo/pretrain runs/demo/transfer/fashion_mnist_last5/seed0
  python scripts/summarize.py runs/demo/transfer

Each WORKDIR must hold the `summary.json` a finished run writes, or be a
transfer suite's directory (`python -m vit_jax.transfer`), whose
`results.json` is printed as the suite's table.
"""
import json
import os

from absl import app

from vit_jax.evaluators import transfer, transfer_table
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


def read_suite(workdir):
  """The results a transfer suite wrote in ``workdir``, or None if it is no suite's."""
  path = os.path.join(workdir, transfer.RESULTS_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def main(argv):
  workdirs = argv[1:]
  if not workdirs:
    raise app.UsageError("name the finished runs' workdirs to summarize")
  suites = {w: read_suite(w) for w in workdirs}
  runs = [w for w in workdirs if suites[w] is None]
  if runs:
    print(metrics.summary_table({w: read_summary(w) for w in runs}))
  for workdir in workdirs:
    if suites[workdir] is not None:
      print(f"\n{workdir}:\n{transfer_table.markdown(suites[workdir])}")


if __name__ == "__main__":
  cli.run(main)
