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
from vit_jax.train import metrics, workdir_files

FLAGS = cli.command_flags(__name__)  # no flags of its own, but absl's (--help)


def read_summary(workdir):
  """``workdir``'s summary.json, checked whole so a bad one is named, not a KeyError."""
  summary = workdir_files.read_summary(workdir, metrics.SUMMARY_FIELDS)
  if summary is None:
    raise FileNotFoundError(f"{os.path.join(workdir, workdir_files.SUMMARY_FILE)} does "
                            f"not exist: is {workdir} a finished run?")
  return summary


# What `transfer_table.markdown` reads of a suite's results.json.
SUITE_LAYOUT = ("one object whose 'benchmarks' map each benchmark to its row, lr, "
                "group and runs (each run's accuracy and tpuv3_core_days), as "
                "`python -m vit_jax.transfer` writes it")
BENCHMARK_FIELDS = ("row", "lr", "group", "runs")
RUN_FIELDS = ("accuracy", "tpuv3_core_days")


def read_suite(workdir):
  """The results a transfer suite wrote in ``workdir``, or None if it is no suite's.

  Checked whole, as `read_summary` checks a run's, so a bad file is named
  and what it lacks said, not a KeyError from the table.
  """
  path = os.path.join(workdir, transfer.RESULTS_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    try:
      results = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} is not valid JSON ({e}): a suite's "
                       f"{transfer.RESULTS_FILE} is {SUITE_LAYOUT}") from None
  problem = _suite_problem(results)
  if problem:
    raise ValueError(f"{path} {problem}: a suite's {transfer.RESULTS_FILE} is "
                     f"{SUITE_LAYOUT}")
  return results


def _suite_problem(results):
  """What the first part of ``results`` that the table cannot read lacks, or None."""
  if not isinstance(results, dict) or not isinstance(results.get("benchmarks"), dict):
    return "has no 'benchmarks' object"
  for name, bench in results["benchmarks"].items():
    missing = [f for f in BENCHMARK_FIELDS if not isinstance(bench, dict) or f not in bench]
    if missing:
      return f"lacks {', '.join(missing)} of benchmark {name!r}"
    if not isinstance(bench["runs"], list):
      return f"has no list of runs for benchmark {name!r}"
    for index, run in enumerate(bench["runs"]):
      missing = [f for f in RUN_FIELDS if not isinstance(run, dict) or f not in run]
      if missing:
        return f"lacks {', '.join(missing)} of run {index} of benchmark {name!r}"
  return None


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
