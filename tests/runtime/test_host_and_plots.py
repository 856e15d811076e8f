"""The launchers' malloc settings, and the metrics plot."""
import json
import os
import subprocess
import sys

from matplotlib.backend_bases import FigureCanvasBase
import pytest

from scripts import plot_metrics, summarize
from vit_jax.runtime import cli, host_malloc
from repo_root import REPO

PRINT_TUNABLES = ("from vit_jax.runtime import host_malloc; "
                  "host_malloc.reexec_with_tunables(); "
                  "import os; print(repr(os.environ['GLIBC_TUNABLES']))")


def run_python(code, **env_changes):
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  env.update(env_changes)
  return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                        capture_output=True, text=True, check=True).stdout.strip()


def test_a_launcher_restarts_itself_with_the_malloc_tunables():
  assert run_python(PRINT_TUNABLES) == repr(host_malloc.TUNABLES)


def test_a_users_own_glibc_tunables_are_kept():
  assert run_python(PRINT_TUNABLES, GLIBC_TUNABLES="") == "''"
  assert run_python(PRINT_TUNABLES, GLIBC_TUNABLES="glibc.malloc.arena_max=1") == \
      "'glibc.malloc.arena_max=1'"


def test_plot_metrics_draws_train_and_eval_series(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  records = [{"step": s, "split": "train", "loss": 1.0 / s, "lr": 0.1,
              "img_per_sec": 100.0, "tpuv3_core_days": s * 1e-6} for s in (1, 2, 3)]
  records.append({"step": 3, "split": "test", "top1": 0.9, "tpuv3_core_days": 3e-6})
  (workdir / "metrics.jsonl").write_text("\n".join(map(json.dumps, records)))
  loaded = plot_metrics.read_metrics(str(workdir))
  assert plot_metrics.series(loaded, "train", ("loss",), "step") == {
      "loss": ([1, 2, 3], [1.0, 0.5, 1.0 / 3])}
  assert plot_metrics.series(loaded, "eval", ("top1", "prec@1"), "tpuv3_core_days") == {
      "test": ([3e-6], [0.9])}
  assert [title for title, _, _ in plot_metrics.rows_with_data({"run": loaded})] == [
      "train loss", "eval accuracy", "learning rate", "images/s"]  # no probes logged
  out = plot_metrics.plot([str(workdir)], str(tmp_path / "m.png"))
  with open(out, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_metrics_draws_few_shot_accuracy_against_cost(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  records = [{"step": s, "split": "train", "loss": 1.0, "lr": 0.1, "img_per_sec": 1.0,
              "tpuv3_core_days": s * 1e-6} for s in (2, 4)]
  records += [{"step": s, "split": "fewshot", "1shot": 0.2, "10shot": 0.3 * s,
               "tpuv3_core_days": s * 1e-6} for s in (2, 4)]
  records.append({"step": 4, "split": "test", "top1": 0.9, "tpuv3_core_days": 4e-6})
  (workdir / "metrics.jsonl").write_text("\n".join(map(json.dumps, records)))
  loaded = plot_metrics.read_metrics(str(workdir))
  title, split, keys = plot_metrics.ROWS[2]
  assert title == "few-shot accuracy"
  assert plot_metrics.series(loaded, split, keys, "tpuv3_core_days") == {
      "10shot": ([2e-6, 4e-6], [0.6, 1.2])}
  assert plot_metrics.series(loaded, "eval", ("top1", "prec@1"), "step") == {
      "test": ([4], [0.9])}  # the probes are no eval split
  assert "few-shot accuracy" in [t for t, _, _ in plot_metrics.rows_with_data({"run": loaded})]
  plot_metrics.plot([str(workdir)], str(tmp_path / "m.png"))


@pytest.mark.parametrize("text, problem", [
    ('{"step": 3,', "is not valid JSON (Expecting property name enclosed in double "
     "quotes: line 1 column 12 (char 11)): a run's summary.json is one object with "),
    ('{"step": 3, "variant": "Ti/16", "eval": {}}', "lacks dataset, image_size, "
     "examples_seen, core_days, tpuv3_core_days: a finished run's summary.json has "),
])
def test_summarize_names_a_malformed_summary_and_what_it_lacks(tmp_path, text, problem):
  (tmp_path / "summary.json").write_text(text)
  with pytest.raises(SystemExit) as exit_info:
    cli.call(summarize.main, summarize.FLAGS, ["summarize", str(tmp_path)])
  assert str(exit_info.value) == (f"error: {tmp_path / 'summary.json'} {problem}"
                                  + ", ".join(summarize.metrics.SUMMARY_FIELDS))


def plot_metrics_error(workdir, lines):
  """The one-line error of plot_metrics on a workdir whose metrics.jsonl is ``lines``."""
  (workdir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
  with pytest.raises(SystemExit) as exit_info:
    cli.call(plot_metrics.main, plot_metrics.FLAGS,
             ["plot_metrics", str(workdir), f"--out={workdir / 'm.png'}"])
  return str(exit_info.value)


def test_plot_metrics_of_runs_without_a_plottable_metric_says_so(tmp_path):
  assert plot_metrics_error(tmp_path, [json.dumps({"step": 1, "split": "train"})]) == (
      f"error: nothing to plot: {tmp_path / 'metrics.jsonl'} log none of 10shot, "
      "1shot, 25shot, 5shot, img_per_sec, loss, lr, prec@1, top1 with a step")


def test_plot_metrics_skips_the_torn_last_line_of_a_killed_run(tmp_path):
  # It used to end in a JSONDecodeError; the trainer drops this line on resume.
  records = [{"step": s, "split": "train", "loss": 1.0 / s} for s in (1, 2)]
  (tmp_path / "metrics.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in records) + '{"step": 3, "spl')
  assert plot_metrics.read_metrics(str(tmp_path)) == records


def test_plot_metrics_names_the_line_of_a_damaged_record(tmp_path):
  lines = [json.dumps({"step": 1, "split": "train", "loss": 1.0}), '{"step": 2,',
           json.dumps({"step": 3, "split": "train", "loss": 0.5})]
  assert plot_metrics_error(tmp_path, lines) == (
      f"error: {tmp_path / 'metrics.jsonl'}:2 is not a JSON record (Expecting property "
      "name enclosed in double quotes at column 12); each line of metrics.jsonl is one")


def test_plot_metrics_makes_the_directory_of_its_out(tmp_path):
  (tmp_path / "metrics.jsonl").write_text(
      json.dumps({"step": 1, "split": "train", "loss": 1.0}) + "\n")
  out = tmp_path / "plots" / "new" / "m.png"
  cli.call(plot_metrics.main, plot_metrics.FLAGS,
           ["plot_metrics", str(tmp_path), f"--out={out}"])
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


SUITE_LAYOUT = ("one object whose 'benchmarks' map each benchmark to its row, lr, group "
                "and runs (each run's accuracy and tpuv3_core_days), as `python -m "
                "vit_jax.transfer` writes it")


@pytest.mark.parametrize("text, problem", [
    ('{"benchmarks": {', "is not valid JSON (Expecting property name enclosed in double "
     "quotes: line 1 column 17 (char 16))"),
    ("[]", "has no 'benchmarks' object"),
    ('{"benchmarks": {"cifar10": {"row": "CIFAR-10", "runs": []}}}',
     "lacks lr, group of benchmark 'cifar10'"),
    ('{"benchmarks": {"cifar10": {"row": "CIFAR-10", "lr": 0.01, "group": null, '
     '"runs": [{"accuracy": 0.9}]}}}',
     "lacks tpuv3_core_days of run 0 of benchmark 'cifar10'"),
], ids=["not_json", "no_object", "benchmark_fields", "run_fields"])
def test_summarize_names_a_malformed_suite_result_and_what_it_lacks(tmp_path, text, problem):
  # It used to be a JSONDecodeError or KeyError traceback.
  (tmp_path / "results.json").write_text(text)
  with pytest.raises(SystemExit) as exit_info:
    cli.call(summarize.main, summarize.FLAGS, ["summarize", str(tmp_path)])
  assert str(exit_info.value) == (f"error: {tmp_path / 'results.json'} {problem}: "
                                  f"a suite's results.json is {SUITE_LAYOUT}")


def test_summarize_prints_a_suites_table(tmp_path, capsys):
  (tmp_path / "results.json").write_text(json.dumps({"benchmarks": {"cifar10": {
      "row": "CIFAR-10", "lr": 0.01, "group": None,
      "runs": [{"accuracy": 0.9, "tpuv3_core_days": 0.5}]}}}))
  cli.call(summarize.main, summarize.FLAGS, ["summarize", str(tmp_path)])
  assert "| CIFAR-10 | 0.01 | 90.00 ± 0.00 |" in capsys.readouterr().out


@pytest.mark.parametrize("out, problem", [
    ("config.json", "--out={tmp}/config.json: matplotlib writes no .json images; valid "
     "suffixes: " + ", ".join(
         "." + f for f in sorted(FigureCanvasBase.get_supported_filetypes()))),
    ("afile/m.png", "--out={tmp}/afile/m.png lies under {tmp}/afile, a file; it is the "
     "image file to write"),
], ids=["json_suffix", "under_a_file"])
def test_plot_metrics_names_an_out_it_cannot_write(tmp_path, out, problem):
  # They used to end in matplotlib's "Format 'json' is not supported" and in
  # FileExistsError, as tracebacks.
  (tmp_path / "metrics.jsonl").write_text(
      json.dumps({"step": 1, "split": "train", "loss": 1.0}) + "\n")
  (tmp_path / "config.json").write_text("{}")
  (tmp_path / "afile").write_text("kept")
  with pytest.raises(SystemExit) as exit_info:
    cli.call(plot_metrics.main, plot_metrics.FLAGS,
             ["plot_metrics", str(tmp_path), f"--out={tmp_path / out}"])
  assert str(exit_info.value) == f"error: {problem.format(tmp=tmp_path)}"
  assert (tmp_path / "config.json").read_text() == "{}"
  assert (tmp_path / "afile").read_text() == "kept"
