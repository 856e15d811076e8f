"""What every command line shares: absl flags, and a user's mistake as one line.

A command module defines its flags in ``FLAGS = cli.command_flags(__name__)``
and ends with ``cli.run(main)``; ``main(argv)`` is an absl main (``argv`` is
the program and the positional arguments). Tests run the real command in
their own process with ``cli.call(module.main, module.FLAGS, argv)``.

The rule for errors (`exit_on_user_error`): a ValueError or FileNotFoundError
(`DatasetNotPreparedError` is one) that the project's own code raises, i.e.
whose traceback ends in vit_jax/, configs/ or scripts/, is the user's mistake:
the project raises these after checking what it was given (a config value,
a dataset, a checkpoint path, a file), with a message that names the thing
and what would be valid. The command exits with status 1 and that message
on one line, ``error: MESSAGE``, without a traceback. So does an
`app.UsageError`. Any other exception, and these types raised inside a
library (numpy's ValueError is a bug of ours, not the user's), keeps its
traceback. A bad flag value is absl's one line: ``FATAL Flags parsing error``.
"""
import functools
import os

from absl import app, flags

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PROJECT_DIRS = tuple(os.path.join(_REPO, name) + os.sep
                      for name in ("vit_jax", "configs", "scripts"))
USER_ERRORS = (ValueError, FileNotFoundError)

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
  """--assumed_mfu and --train_examples, which `vit_jax.main --dry_run` and
  scripts/estimate_cost.py both take, and so define here once.

  Returns their flag holders.
  """
  assumed_mfu = flags.DEFINE_float(
      "assumed_mfu", 0.4, "The model FLOPs utilisation on TPU v3 that the "
      "TPUv3-core-days estimate assumes.", flag_values=flag_values)
  flags.register_validator("assumed_mfu", lambda mfu: 0 < mfu <= 1,
                           "must be in (0, 1], a fraction of TPU v3's peak",
                           flag_values=flag_values)
  train_examples = flags.DEFINE_integer(
      "train_examples", None, "Size of the training split, for configs counted "
      "in epochs (default: read from the prepared dataset, else its published "
      "size).", flag_values=flag_values)
  return assumed_mfu, train_examples


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


def run(main):
  """Runs ``main`` as the program: absl parses the flags, then the error rule."""
  app.run(exit_on_user_error(main))


def call(main, flag_values, argv):
  """Runs a command in this process as ``run`` would from the command line ``argv``.

  ``argv[0]`` is the program's name. The flags are parsed afresh into
  ``flag_values`` (the command's ``FLAGS``), so one process can call a
  command many times. Returns what ``main`` returns.
  """
  flag_values.unparse_flags()
  try:
    positional = flag_values(argv)
  except flags.Error as error:
    raise SystemExit(f"FATAL Flags parsing error: {error}") from None
  return exit_on_user_error(main)(positional)
