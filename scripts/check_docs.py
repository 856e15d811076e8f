r"""Checks that the commands in README.md and docs/*.md run as written.

  python scripts/check_docs.py                     # README.md and docs/*.md
  python scripts/check_docs.py docs/multi_host.md  # one file

A documented command that no longer runs (a renamed flag, a config argument
that went away, a moved script) fails every reader who copies it, and no
other test reads the docs. So every command of a fenced ``sh``, ``bash`` or
``console`` block is checked, by the rule for its program, and one line per
command says which rule checked it and whether it passed. Commands in the
prose (inline code) are mentions, not checked: what a reader should copy
goes in a block. tests/test_docs.py runs the same checks.

Rules, by program:

  run      ``python scripts/estimate_cost.py``, ``python -m vit_jax.main ...
           --dry_run`` and any command with --help/--helpfull run as written.
           The comment lines right after a command (``# ...``, no blank
           line between) are its output, abridged with ``...``: each piece
           must appear in what it prints, whitespace aside. Only commands
           that run may show output.
  dry_run  ``python -m vit_jax.main`` for a training run: run with --dry_run
           appended, which parses the flags and the config with its
           arguments and overrides, checks it and prices the model from its
           shapes, but reads no data and trains nothing.
  parse    Every other Python program of this repository (``scripts/X.py``,
           ``python -m vit_jax.X``): run up to its flag parsing, with the
           arguments as written, and stopped there, so an unknown flag, a
           missing required flag or a stale config argument fails. These
           need a trained run, a dataset or minutes (export, predict,
           evaluate, the benchmarks, data preparation); the test suite runs
           each of them on small runs.
  make     ``make TARGET``: the Makefile defines the target (``make demo``
           takes ten minutes, ``make test`` is the test suite).
  pip      ``pip install -e .[EXTRA]``: setup.py declares the extra.
  shell    ``bash scripts/X.sh``: the script is there and ``bash -n`` parses
           it (it is not run: those scripts need a GPU or minutes).
  pytest   ``pytest ARGS``: ``pytest --collect-only ARGS`` selects a test, on
           this machine's backend (assignments in front, such as
           JAX_PLATFORMS=cuda, pick hardware it may lack, and are dropped).

Wrappers are unwrapped: leading ``VAR=value`` assignments go into the
command's environment; ``srun CMD`` and ``gcloud ... --command="cd DIR &&
CMD"`` check CMD (``cd`` is skipped: commands run in the repository root);
the wrapper itself is not run, as it needs a cluster or a cloud project.
Any other program fails: a new kind of command needs a rule here.

The Python commands run one after another in one worker process, so jax
and TensorFlow are imported once: each runs as ``python`` would run it
(``runpy``, its argv, its environment, the repository root as working
directory; what it prints and logs is its output, and a message it exits
with is printed, as the interpreter does), and the flags it defined are
removed before the next one. tests/runtime/test_cli.py runs the commands a
user's mistake stops in such a worker too.
"""
import ast
import contextlib
import dataclasses
import io
import json
import os
import pathlib
import re
import runpy
import shlex
import subprocess
import sys
import tempfile
import traceback

from absl import app, flags
from absl import logging as absl_logging

REPO = pathlib.Path(__file__).resolve().parents[1]
SHELL_LANGUAGES = ("sh", "bash", "shell", "console")
RUN_AS_WRITTEN = ("scripts/estimate_cost.py",)
HELP_FLAGS = ("--help", "--helpfull", "-h")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


@dataclasses.dataclass(frozen=True)
class DocCommand:
  """One command of a doc: a logical line of a shell block."""
  path: str  # relative to the repository
  line: int
  text: str  # continuation lines joined
  output: tuple[str, ...] = ()  # the comment lines right after it

  def __str__(self):
    return f"{self.path}:{self.line}"


@dataclasses.dataclass(frozen=True)
class Check:
  """How one (unwrapped) command is checked."""
  rule: str  # run, dry_run, parse, make, pip, pytest
  argv: tuple[str, ...]  # what is executed or looked up
  env: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class Result:
  """One check of one command: its rule, and what failed (``detail``)."""
  command: DocCommand
  rule: str
  ok: bool
  detail: str = ""


def doc_paths(repo=REPO):
  """README.md and every docs/*.md, relative to ``repo``."""
  return ["README.md"] + sorted(
      str(p.relative_to(repo)) for p in (repo / "docs").glob("*.md"))


def doc_commands(path, repo=REPO):
  """The commands of the shell blocks of ``path``, in order."""
  commands, language, logical, start = [], None, "", 0
  last = None  # the command that comment lines directly below belong to
  for number, raw in enumerate((repo / path).read_text().splitlines(), 1):
    line = raw.strip()
    if line.startswith("```"):
      language = None if language is not None else line[3:].strip() or ""
      last = None
      continue
    if language not in SHELL_LANGUAGES:
      continue
    if not logical:
      start = number
    if line.endswith("\\"):
      logical += line[:-1].rstrip() + " "
      continue
    logical += line
    text, logical = logical.strip(), ""
    if not text:
      last = None
    elif text.startswith("#"):
      if last is not None:
        last = dataclasses.replace(last, output=last.output + (text[1:].strip(),))
        commands[-1] = last
    else:
      last = DocCommand(path, start, text)
      commands.append(last)
  return commands


def plan(command):
  """The checks of ``command`` by the rules above; ValueError if none fits."""
  try:
    words = shlex.split(command.text, comments=True)
  except ValueError as e:
    raise ValueError(f"{command}: not a shell command ({e})") from None
  checks = _plan_words(words, command)
  if command.output and [c.rule for c in checks] != ["run"]:
    raise ValueError(f"{command}: shows output but is not run, so the output "
                     "cannot be checked; drop it or make the command one that runs")
  return checks


def _plan_words(words, command, inherited_env=()):
  checks = []
  for part in _split_on(words, ("&&", ";")):
    env = list(inherited_env)
    while part and _ASSIGNMENT.match(part[0]):
      name, value = part.pop(0).split("=", 1)
      env.append((name, value))
    if not part or part[0] == "cd":
      continue
    program, args = part[0], part[1:]
    if program in ("python", "python3"):
      checks.append(_plan_python(args, tuple(env), command))
    elif program == "pytest":
      checks.append(Check("pytest", tuple(args), tuple(env)))
    elif program == "make":
      checks.append(Check("make", tuple(args)))
    elif program == "pip" and args[:2] == ["install", "-e"] and len(args) == 3:
      checks.append(Check("pip", (args[2],)))
    elif program == "bash" and args[:1] and args[0].endswith(".sh"):
      checks.append(Check("shell", (args[0],), tuple(env)))
    elif program == "srun":
      inner = list(args)
      while inner and inner[0].startswith("-"):
        inner.pop(0)
      checks += _plan_words(inner, command, env)  # srun passes its environment on
    elif program == "gcloud":
      inner = [a.split("=", 1)[1] for a in args if a.startswith("--command=")]
      if not inner:
        raise ValueError(f"{command}: gcloud without --command= has nothing to check")
      checks += _plan_words(shlex.split(inner[0]), command)
    else:
      raise ValueError(f"{command}: no rule for the program {program!r} "
                       "(see scripts/check_docs.py)")
  return checks


def _split_on(words, separators):
  parts = [[]]
  for word in words:
    if word in separators:
      parts.append([])
    else:
      parts[-1].append(word)
  return parts


def _plan_python(args, env, command):
  if args[:2] == ["-m", "pytest"]:
    return Check("pytest", tuple(args[2:]), env)
  if args[:1] == ["-m"] and len(args) > 1:
    program, rest = ("-m", args[1]), args[2:]
  elif args and args[0].endswith(".py"):
    program, rest = (args[0],), args[1:]
  else:
    raise ValueError(f"{command}: python runs neither `-m MODULE` nor a script")
  if any(a in HELP_FLAGS for a in rest) or program[0] in RUN_AS_WRITTEN:
    return Check("run", program + tuple(rest), env)
  if program == ("-m", "vit_jax.main"):
    if "--dry_run" in rest:
      return Check("run", program + tuple(rest), env)
    return Check("dry_run", program + tuple(rest) + ("--dry_run",), env)
  return Check("parse", program + tuple(rest), env)


# --- Checks that need no Python program run.


def makefile_targets(repo=REPO):
  text = (repo / "Makefile").read_text()
  return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.MULTILINE))


def setup_extras(repo=REPO):
  """The keys of setup.py's extras_require."""
  for node in ast.walk(ast.parse((repo / "setup.py").read_text())):
    if isinstance(node, ast.keyword) and node.arg == "extras_require":
      return {ast.literal_eval(k) for k in node.value.keys}
  return set()


def check_static(check, repo=REPO):
  """An error message for a make, pip or shell check, or '' when it passes."""
  if check.rule == "shell":
    script = repo / check.argv[0]
    if not script.is_file():
      return f"no script {check.argv[0]}"
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    return f"bash -n {check.argv[0]}: {proc.stderr.strip()}" if proc.returncode else ""
  if check.rule == "make":
    missing = [t for t in check.argv if t not in makefile_targets(repo)]
    return f"the Makefile has no target {', '.join(missing)}" if missing else ""
  match = re.fullmatch(r"\.(?:\[([\w,-]+)\])?", check.argv[0])
  if not match:
    return f"pip install -e {check.argv[0]}: only `.` or `.[EXTRA]` is checked"
  missing = set((match.group(1) or "").split(",")) - {""} - setup_extras(repo)
  return f"setup.py declares no extra {', '.join(sorted(missing))}" if missing else ""


def check_pytest(check, repo=REPO):
  """'' when `pytest --collect-only` selects a test for the command's args."""
  proc = subprocess.run(
      [sys.executable, "-m", "pytest", "--collect-only", "-q",
       "-p", "no:cacheprovider", *check.argv],
      cwd=repo, capture_output=True, text=True, timeout=300)
  if proc.returncode != 0:  # 5: nothing selected
    return (f"pytest --collect-only exits with {proc.returncode}:\n"
            f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
  return ""


def output_missing(expected, printed):
  """The pieces of the abridged ``expected`` lines that ``printed`` lacks."""
  flat = " ".join(printed.split())
  pieces = [" ".join(p.split()) for line in expected for p in line.split("...")]
  return [p for p in pieces if p and p not in flat]


# --- The Python programs, run in one worker process.


def run_python(checks, repo=REPO, timeout=900):
  """Runs the run/dry_run/parse ``checks`` in one worker: [(ok, printed)]."""
  with tempfile.TemporaryDirectory() as tmp:
    request, reply = pathlib.Path(tmp, "checks.json"), pathlib.Path(tmp, "results.json")
    request.write_text(json.dumps([dataclasses.asdict(c) for c in checks]))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    # Set, even empty, GLIBC_TUNABLES keeps vit_jax.main from re-executing
    # itself, which would replace the worker.
    env.setdefault("GLIBC_TUNABLES", "")
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from scripts import check_docs; "
         "check_docs.worker(sys.argv[1], sys.argv[2])", str(request), str(reply)],
        cwd=repo, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not reply.exists():
      raise RuntimeError(f"the worker failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return [tuple(r) for r in json.loads(reply.read_text())]


class _Parsed(Exception):
  """Raised where a program in parse mode would have called its main."""


def worker(request, reply):
  """Runs the checks of the JSON file ``request``; writes results to ``reply``."""

  def refuse_exec(*args, **kwargs):
    raise RuntimeError(f"the command tried to re-execute itself: {args[:1]}")

  for name in ("execv", "execve", "execvp", "execvpe"):
    setattr(os, name, refuse_exec)
  app.define_help_flags()
  absl_run = app.run
  results = []
  for check in json.loads(pathlib.Path(request).read_text()):
    parse_only = check["rule"] == "parse"

    def run(main, argv=None, flags_parser=app.parse_flags_with_usage):
      if not parse_only:
        return absl_run(main, argv, flags_parser)
      flags_parser(argv or sys.argv)
      raise _Parsed

    app.run = run
    results.append(_execute(check["argv"], dict(check["env"]), flags.FLAGS))
    app.run = absl_run
  pathlib.Path(reply).write_text(json.dumps(results))


def _execute(argv, env, flag_values):
  """Runs one program in this process: (ok, what it printed)."""
  saved_env, saved_argv, saved_path = dict(os.environ), sys.argv, list(sys.path)
  os.environ.update(env)
  before = set(flag_values)
  printed, ok = io.StringIO(), True
  # absl's handler holds the stream it was made with; its log is printed too.
  log_stream = absl_logging.get_absl_handler().python_handler.setStream(printed)
  try:
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
      if argv[0] == "-m":
        sys.argv = ["python", *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
      else:
        sys.argv = list(argv)
        sys.path.insert(0, str(REPO / os.path.dirname(argv[0])))
        runpy.run_path(argv[0], run_name="__main__")
  except _Parsed:
    pass
  except SystemExit as e:
    if e.code not in (0, None):
      ok = False
      # As the interpreter ends: a message is printed, with status 1.
      if not isinstance(e.code, int):
        printed.write(f"\n{e.code}")
      printed.write(f"\nexit status: {e.code if isinstance(e.code, int) else 1}")
  except Exception:  # a failing command is reported, and the next one runs
    ok = False
    printed.write(traceback.format_exc())
  finally:
    absl_logging.get_absl_handler().python_handler.setStream(log_stream)
    os.environ.clear()
    os.environ.update(saved_env)
    sys.argv, sys.path[:] = saved_argv, saved_path
    flag_values.unparse_flags()
    flag_values.verbosity = 0  # INFO, as absl's app.run sets on its first run only
    # The program's own flags (registered under its file path) and config
    # overrides (``config.a.b``, which a script run up to its parsing leaves
    # registered under absl's module) go; flags of libraries it imported stay
    # defined, as their modules stay imported.
    by_module = {f.name: module for module, fs in
                 flag_values.flags_by_module_dict().items() for f in fs}
    for name in set(flag_values) - before:
      if "." in name or os.sep in by_module.get(name, os.sep):
        delattr(flag_values, name)
  return ok, printed.getvalue()


# --- All checks of the docs.


PYTHON_RULES = ("run", "dry_run", "parse")
RULES = PYTHON_RULES + ("make", "pip", "pytest", "shell")


def check_all(paths, repo=REPO, rules=RULES):
  """A Result per check of each command of ``paths`` (of ``rules`` only).

  A check that several commands share (the same command in two documents)
  runs once; the Python programs run in one worker.
  """
  planned = []
  for path in paths:
    for command in doc_commands(path, repo):
      try:
        planned += [(command, check) for check in plan(command)
                    if check.rule in rules]
      except ValueError as e:
        planned.append((command, None, str(e)))
  python = list(dict.fromkeys(
      p[1] for p in planned if p[1] and p[1].rule in PYTHON_RULES))
  printed = dict(zip(python, run_python(python, repo) if python else []))
  done = {}
  results = []
  for command, check, *error in planned:
    if check is None:
      results.append(Result(command, "none", False, error[0]))
      continue
    if check in printed:
      ok, output = printed[check]
      if not ok:
        detail = output or "failed, printing nothing"
      elif missing := output_missing(command.output, output):
        detail = f"prints no {missing}:\n{output}"
      else:
        detail = ""
    else:
      if check not in done:
        done[check] = (check_pytest(check, repo) if check.rule == "pytest"
                       else check_static(check, repo))
      detail = done[check]
    results.append(Result(command, check.rule, not detail, detail[-3000:]))
  return results


def main(argv):
  results = check_all(argv[1:] or doc_paths())
  for r in results:
    text = r.command.text if len(r.command.text) < 90 else r.command.text[:87] + "..."
    print(f"{'ok  ' if r.ok else 'FAIL'} {r.rule:8} {str(r.command):24} {text}")
  for r in results:
    if not r.ok:
      print(f"\n{r.command} ({r.rule}): {r.command.text}\n{r.detail}")
  if not all(r.ok for r in results):
    raise SystemExit(1)


if __name__ == "__main__":
  app.run(main)
