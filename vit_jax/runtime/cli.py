"""What every command line shares: absl flags, and a user's mistake as one line.

A command module defines its flags in ``FLAGS = cli.command_flags(__name__)``
and ends with ``cli.run(main)``; ``main(argv)`` is an absl main (``argv`` is
the program and the positional arguments). Tests run the real command in
their own process with ``cli.call(module.main, module.FLAGS, argv)``.

The rule for errors (`exit_on_user_error`): a ValueError, FileNotFoundError
(`DatasetNotPreparedError` is one) or ConnectionError (a coordinator that
never answers) that the project's own code raises, i.e.
whose traceback ends in vit_jax/, configs/ or scripts/, is the user's mistake:
the project raises these after checking what it was given (a config value,
a dataset, a checkpoint path, a file), with a message that names the thing
and what would be valid. The command exits with status 1 and that message
on one line, ``error: MESSAGE``, without a traceback. So does an
`app.UsageError`. Any other exception, and these types raised inside a
library (numpy's ValueError is a bug of ours, not the user's), keeps its
traceback. A bad flag value is absl's one line: ``FATAL Flags parsing error``;
a ``--config.KEY=VALUE`` override of a field the config does not have is one
line naming it, the valid fields at that level and the closest of them, and
a bad argument of ``--config=FILE:ARGS`` is the config file's own message,
``error: MESSAGE``.
"""
import difflib
import functools
import importlib.util
import logging as python_logging
import os

from absl import app, flags, logging

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PROJECT_DIRS = tuple(os.path.join(_REPO, name) + os.sep
                      for name in ("vit_jax", "configs", "scripts"))
USER_ERRORS = (ValueError, FileNotFoundError, ConnectionError)

class _OnlyLibraryWarnings(python_logging.Filter):
  """Keeps orbax's and tfds's per-save, per-read INFO lines off the console."""

  QUIET = ("/orbax/", "/tensorflow_datasets/", "/etils/")

  def filter(self, record):
    return (record.levelno >= python_logging.WARNING
            or not any(part in record.pathname for part in self.QUIET))


def quiet_library_logs():
  """Leaves orbax's, tfds's and etils's INFO lines out of a training command's log."""
  logging.get_absl_handler().addFilter(_OnlyLibraryWarnings())


# The flags defined below belong to the command that asks for them, so its
# --help lists them with its own.
flags.disclaim_key_flags()


def command_flags(module_name):
  """The FlagValues a command module defines its flags in.

  absl's global FLAGS when the module is the program (``__main__``), so that
  `app.run` parses them with absl's own (--help, --flagfile, --verbosity).
  A FlagValues of its own when it is imported: tests run several commands in
  one process, and commands share flag names (--workdir, --config, --out).
  """
  return flags.FLAGS if module_name == "__main__" else flags.FlagValues()


def define_estimate_flags(flag_values):
  """--assumed_mfu, --train_examples and --devices, which `vit_jax.main
  --dry_run` and scripts/estimate_cost.py both take, and so define here once.

  Returns their flag holders.
  """
  assumed_mfu = flags.DEFINE_float(
      "assumed_mfu", 0.4, "The model FLOPs utilisation that the estimate "
      "assumes, on TPU v3 for the TPUv3-core-days and on --devices for the "
      "step time.", flag_values=flag_values)
  flags.register_validator("assumed_mfu", lambda mfu: 0 < mfu <= 1,
                           "must be in (0, 1], a fraction of TPU v3's peak",
                           flag_values=flag_values)
  train_examples = flags.DEFINE_integer(
      "train_examples", None, "Size of the training split, for configs counted "
      "in epochs (default: read from the prepared dataset, else its published "
      "size).", lower_bound=1, flag_values=flag_values)  # 0 would price 1 step
  devices = flags.DEFINE_string(
      "devices", None, "Target hardware as KIND:CHIPS (tpu_v4:1024, h100:256; "
      "vit_jax/cost/estimate.py's DEVICE_KINDS): adds the plan for it, per-device "
      "memory from the train step compiled for as many emulated CPU devices, and "
      "refuses a layout that does not fit.", flag_values=flag_values)
  return assumed_mfu, train_examples, devices


def define_distributed_flags(flag_values):
  """--coordinator_address, --num_processes and --process_id, for the commands
  that join a multi-host run (`distributed.initialize_distributed`)."""
  flags.DEFINE_string("coordinator_address", None,
                      "host:port of process 0, for multi-host runs outside "
                      "Cloud TPU and SLURM (which are detected).",
                      flag_values=flag_values)
  flags.DEFINE_integer("num_processes", None, "Processes of a multi-host run.",
                       flag_values=flag_values)
  flags.DEFINE_integer("process_id", None, "This process's index in the run.",
                       flag_values=flag_values)


def define_checkpoint_flags(flag_values, *, use):
  """--workdir (required) and --checkpoint, which the commands that load a
  finished run's model (evaluate, fewshot) share. ``use`` completes "Parameters
  to ... instead". Returns their flag holders."""
  workdir = flags.DEFINE_string(
      "workdir", None, "The run: its config.json, and its latest checkpoint.",
      flag_values=flag_values, required=True)
  checkpoint = flags.DEFINE_string(
      "checkpoint", None, f"Parameters to {use} instead: a .npz, another "
      "workdir, a checkpoint step directory, or a timm or Hugging Face ViT "
      "(state dict file or directory).", flag_values=flag_values)
  return workdir, checkpoint


def refuse_empty_flag(name, flag_values=flags.FLAGS):
  """Makes ``--name=`` (empty) absl's one-line flag error: a run given an
  empty --workdir wrote its checkpoints in the current directory."""
  flags.register_validator(name, lambda value: value != "",
                           message=f"--{name} is empty; give a directory",
                           flag_values=flag_values)


def check_config_kind(config, *, suite):
  """Refuses a transfer suite's ``--config`` where one run's is wanted, or
  the reverse (``suite``), naming the command that takes it."""
  is_suite = "benchmarks" in config
  if is_suite and not suite:
    raise app.UsageError(
        "--config is a transfer suite's (configs/transfer.py): run it with python -m "
        "vit_jax.transfer; this command takes one run's config (configs/pretrain.py, "
        "finetune.py, bit.py, demo.py, benchmark.py)")
  if suite and not is_suite:
    raise app.UsageError(
        "--config is one run's config: run it with python -m vit_jax.main; this "
        "command takes a transfer suite's, configs/transfer.py")


def check_no_file_in_the_way(flag, path, purpose):
  """Refuses ``--flag=path`` where a file stands in the way of the directories
  it needs made: ``path`` itself (a directory to make) or one above it.
  ``purpose`` says what the flag is for."""
  blocking = file_in_the_way(path)
  if blocking:
    where = ("is a file" if blocking == os.path.abspath(path)
             else f"lies under {blocking}, a file")
    raise app.UsageError(f"--{flag}={path} {where}; {purpose}")


def file_in_the_way(path):
  """The file that keeps a directory from being made at ``path``: ``path``
  itself, or the nearest of its parents that exists; None where there is none."""
  existing = os.path.abspath(path)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  return None if os.path.isdir(existing) else existing


def _raised_by_project(error):
  """Whether the innermost frame of ``error``'s traceback is the project's code."""
  traceback = error.__traceback__
  while traceback.tb_next is not None:
    traceback = traceback.tb_next
  path = os.path.abspath(traceback.tb_frame.f_code.co_filename)
  return path.startswith(_PROJECT_DIRS)


def exit_on_user_error(main):
  """``main``, ending with ``SystemExit("error: MESSAGE")`` on a user's mistake.

  The rule is in the module docstring.
  """

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except app.UsageError as error:
      raise SystemExit(f"error: {error}") from None
    except USER_ERRORS as error:
      if not _raised_by_project(error):
        raise
      raise SystemExit(f"error: {error}") from None

  return wrapped


def _config_files(argv):
  """(FILE, ARGS) of every ``--config=FILE[:ARGS]`` (or ``--config FILE[:ARGS]``,
  which absl takes too) in ``argv``, in order."""
  files = []
  for i, arg in enumerate(argv[1:], start=1):
    if arg.startswith("--config="):
      files.append(arg.split("=", 1)[1].partition(":")[::2])
    elif arg == "--config" and i + 1 < len(argv):
      files.append(argv[i + 1].partition(":")[::2])
  return files


def _unknown_config_field(argv, flag_values):
  """What names no field in the first ``--config.a.b=v`` of ``argv`` that does so.

  None where every override names a field. The config file is loaded afresh
  (``get_config(ARGS)`` of ``--config=FILE:ARGS``), without the overrides,
  which ml_collections applies as it loads it.
  """
  files = _config_files(argv)
  if "config" not in flag_values or not files:
    return None
  path, config_args = files[-1]
  spec = importlib.util.spec_from_file_location("config_file", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(config_args or None)
  for arg in argv[1:]:
    if not arg.startswith("--config."):
      continue
    node, walked = config, "config"
    for part in arg[len("--config."):].split("=", 1)[0].split("."):
      if not hasattr(node, "keys"):
        return (f"--{walked}.{part}: {walked} is a {type(node).__name__} "
                f"field, with no fields of its own")
      if part not in node:
        valid = sorted(node.keys())
        close = difflib.get_close_matches(part, valid, n=1)
        hint = f" (did you mean {walked}.{close[0]}?)" if close else ""
        return (f"--{walked}.{part}: {walked} has no field {part!r}{hint}; "
                f"valid: {', '.join(valid)}")
      node, walked = node[part], f"{walked}.{part}"
  return None


def _config_file_error(error):
  """The user's mistake behind a bad ``--config=FILE:ARGS``, or None.

  ml_collections re-raises what ``get_config`` raised as a new error whose
  text is the whole traceback, and absl wraps that in its own; the first
  error of the chain is the config's, and if it is a user error of the
  project's code (the module docstring's rule), its message is all a user
  needs.
  """
  while error is not None:
    if isinstance(error, USER_ERRORS) and _raised_by_project(error):
      return error
    error = error.__cause__ or error.__context__
  return None


def _missing_config_file(argv):
  """A one-line error for a ``--config=FILE[:ARGS]`` whose FILE is not there, or None.

  ml_collections defers that error to the config's first use, as a
  traceback from deep inside the command.
  """
  for path, _ in _config_files(argv):
    if not os.path.isfile(path):
      return (f"--config={path}: no such file; the configs are the files of "
              f"{os.path.join(_REPO, 'configs')} (docs/configs.md)")
  return None


def _parse(parse, argv, flag_values):
  """``parse(argv)``, every mistake in the flags one line.

  A bad flag value is absl's ``FATAL Flags parsing error: ...``. A mistake
  in the config comes through absl's parsing with ml_collections'
  traceback, so it is reduced to its message: an override of a field the
  config lacks (an AttributeError or KeyError), a bad argument of the config
  file (the config's own error, inside absl's flag error), a missing file.
  """
  missing = _missing_config_file(argv)
  if missing:
    raise SystemExit(f"error: {missing}")
  try:
    return parse(argv)
  except (AttributeError, KeyError):
    message = _unknown_config_field(argv, flag_values)
    if message is None:
      raise
    raise SystemExit(f"error: {message}") from None
  except flags.Error as error:
    config_error = _config_file_error(error)
    if config_error is not None:
      raise SystemExit(f"error: {config_error}") from None
    raise SystemExit(f"FATAL Flags parsing error: {error}\n"
                     f"Pass --helpshort or --helpfull to see help on flags.") from None


def run(main):
  """Runs ``main`` as the program: absl parses the flags, then the error rule."""
  app.run(exit_on_user_error(main),
          flags_parser=lambda argv: _parse(flags.FLAGS, argv, flags.FLAGS))


def call(main, flag_values, argv):
  """Runs a command in this process as ``run`` would from the command line ``argv``.

  ``argv[0]`` is the program's name. The flags are parsed afresh into
  ``flag_values`` (the command's ``FLAGS``), so one process can call a
  command many times. Returns what ``main`` returns.
  """
  flag_values.unparse_flags()
  return exit_on_user_error(main)(_parse(flag_values, argv, flag_values))
