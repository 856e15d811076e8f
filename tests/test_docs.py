"""The README is a front page, and every command of it and of docs/ runs.

Each command of a shell block is checked by the rules of
scripts/check_docs.py: run as written, run with --dry_run appended, its
flags and config arguments parsed, or its Makefile target, setup.py extra or
pytest selection looked up. The test ids and `python scripts/check_docs.py`
say which rule checked which command.
"""
import re

import pytest

from repo_root import REPO_PATH
from scripts import check_docs
from scripts.check_docs import Check, DocCommand

DOCS = check_docs.doc_paths()
PLANNED = [(command, check) for path in DOCS
           for command in check_docs.doc_commands(path)
           for check in check_docs.plan(command)]


def _write(tmp_path, text):
  (tmp_path / "doc.md").write_text(text)
  return check_docs.doc_commands("doc.md", repo=tmp_path)


def test_readme_is_under_200_lines():
  lines = (REPO_PATH / "README.md").read_text().splitlines()
  assert len(lines) < 200, f"README.md has {len(lines)} lines"


def test_readme_links_every_doc():
  readme = (REPO_PATH / "README.md").read_text()
  unlinked = [p for p in DOCS[1:] if f"]({p})" not in readme]
  assert not unlinked, f"README.md links none of {unlinked}"


def _anchor(heading):
  """GitHub's anchor of a markdown heading."""
  return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_relative_links_and_anchors_resolve():
  broken = []
  for path in DOCS:
    for target in re.findall(r"\]\(([^)\s]+)\)", (REPO_PATH / path).read_text()):
      if re.match(r"[a-z]+://", target):
        continue
      file, _, anchor = target.partition("#")
      linked = (REPO_PATH / path).parent / file if file else REPO_PATH / path
      if not linked.exists():
        broken.append(f"{path}: {target}")
      elif anchor:
        headings = re.findall(r"^#+ (.*)$", linked.read_text(), re.MULTILINE)
        if anchor not in {_anchor(h) for h in headings}:
          broken.append(f"{path}: {target} (no such heading)")
  assert not broken


def test_every_doc_command_has_a_rule():
  for path in DOCS:
    for command in check_docs.doc_commands(path):
      assert check_docs.plan(command), command  # raises where no rule fits


def test_commands_are_logical_lines_and_comments_below_are_output(tmp_path):
  commands = _write(tmp_path, "text `python not_a_command.py`\n"
                    "```sh\n#!/bin/bash\n#SBATCH --nodes=2\n"
                    "python scripts/estimate_cost.py \\\n    --config=X  # why\n"
                    "# parameters 1 ... steps 2\n\nmake demo\n```\n"
                    "```\npython in_a_plain_block.py\n```\n")
  assert commands == [
      DocCommand("doc.md", 5, "python scripts/estimate_cost.py --config=X  # why",
                 ("parameters 1 ... steps 2",)),
      DocCommand("doc.md", 9, "make demo")]


def test_wrappers_are_unwrapped_into_the_commands_they_run():
  gcloud = DocCommand("doc.md", 1, 'gcloud compute ssh vm --command="cd vit_jax && '
                      'pip install -e .[tpu] && python -m vit_jax.main --config=C"')
  srun = DocCommand("doc.md", 2, "X=1 srun --ntasks=2 python -m vit_jax.evaluate --workdir=W")
  gpu_test = DocCommand("doc.md", 3, "JAX_PLATFORMS=cuda pytest tests/t.py -k gpu")
  assert check_docs.plan(gcloud) == [
      Check("pip", (".[tpu]",)),
      Check("dry_run", ("-m", "vit_jax.main", "--config=C", "--dry_run"))]
  assert check_docs.plan(srun) == [
      Check("parse", ("-m", "vit_jax.evaluate", "--workdir=W"), (("X", "1"),))]
  assert check_docs.plan(gpu_test) == [
      Check("pytest", ("tests/t.py", "-k", "gpu"), (("JAX_PLATFORMS", "cuda"),))]


def test_a_program_without_a_rule_or_output_under_an_unrun_command_is_refused():
  with pytest.raises(ValueError, match="no rule for the program 'curl'"):
    check_docs.plan(DocCommand("doc.md", 1, "curl https://example.com"))
  with pytest.raises(ValueError, match="shows output but is not run"):
    check_docs.plan(DocCommand("doc.md", 1, "python scripts/export.py --out=x",
                               ("exported",)))


def test_shown_output_is_found_in_what_the_command_prints():
  printed = "parameters     1\nflops   3\ntotal_steps    2\n"
  assert check_docs.output_missing(["parameters 1 ... total_steps 2"], printed) == []
  assert check_docs.output_missing(["parameters 7 ... total_steps 2"], printed) == [
      "parameters 7"]


def test_make_targets_pip_extras_and_shell_scripts_named_in_the_docs_exist(tmp_path):
  failures = [f"{command}: {error}" for command, check in PLANNED
              if check.rule in ("make", "pip", "shell")
              if (error := check_docs.check_static(check))]
  assert not failures
  assert check_docs.check_static(Check("make", ("deploy",))) == (
      "the Makefile has no target deploy")
  assert check_docs.check_static(Check("pip", (".[gpu]",))) == (
      "setup.py declares no extra gpu")
  assert check_docs.check_static(Check("shell", ("scripts/gone.sh",))) == (
      "no script scripts/gone.sh")
  (tmp_path / "broken.sh").write_text("if true; then\n  echo unfinished\n")
  assert check_docs.check_static(Check("shell", ("broken.sh",)), repo=tmp_path).startswith(
      "bash -n broken.sh: ")


def test_parsing_fails_a_stale_flag_a_stale_config_argument_and_a_moved_script():
  export = ("scripts/export.py", "--workdir=w", "--format=npz", "--out=x.npz")
  results = check_docs.run_python([
      Check("parse", export),
      Check("parse", export + ("--mfu=0.4",)),
      Check("parse", ("-m", "vit_jax.main", "--workdir=w",
                      "--config=configs/demo.py:stage=pretrain,width=3")),
      Check("parse", ("scripts/no_such_script.py",))])
  (ok, _), (flag_ok, flag), (config_ok, config), (moved_ok, moved) = results
  assert ok
  assert not flag_ok and "Unknown command line flag 'mfu'" in flag
  assert not config_ok and "width" in config
  assert not moved_ok and "no_such_script.py" in moved


@pytest.mark.slow
def test_python_commands_run_as_written_or_with_dry_run_or_parse():
  results = check_docs.check_all(DOCS, rules=check_docs.PYTHON_RULES)
  assert len(results) == sum(c.rule in check_docs.PYTHON_RULES for _, c in PLANNED)
  failures = [f"{r.command} ({r.rule}): {r.command.text}\n{r.detail}"
              for r in results if not r.ok]
  assert not failures, "\n\n".join(failures)


@pytest.mark.slow
@pytest.mark.parametrize(
    "command,check",
    list({k: (c, k) for c, k in reversed(PLANNED) if k.rule == "pytest"}.values()),
    ids=lambda x: str(x) if isinstance(x, DocCommand) else x.rule)
def test_pytest_commands_select_tests(command, check):
  assert not check_docs.check_pytest(check), command.text
