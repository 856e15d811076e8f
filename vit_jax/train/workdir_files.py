"""What a run's workdir holds, and writing its files whole.

``WORKDIR/config.json`` is the resolved config of the run, ``checkpoints/``
its orbax steps (`checkpoints`), ``metrics.jsonl`` and the TensorBoard events
its metrics (`metrics`), ``summary.json`` its result.
"""
import json
import os

import ml_collections

CONFIG_FILE = "config.json"
CHECKPOINT_SUBDIR = "checkpoints"
SUMMARY_FILE = "summary.json"


def run_workdir(path):
  """The workdir ``path`` names: itself, or the run of a checkpoint step
  directory (``WORKDIR/checkpoints/STEP``), whose config and summary sit there."""
  path = os.path.normpath(path)
  parent = os.path.dirname(path)
  if os.path.basename(parent) == CHECKPOINT_SUBDIR:
    return os.path.dirname(parent)
  return path


def write_whole(path, text):
  """Writes ``path`` through a temporary file, so no reader or crash sees half."""
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)


# Fields every run's config.json has; a transfer suite's has `SUITE_FIELD`.
RUN_CONFIG_FIELDS = ("variant", "data", "pp")
SUITE_FIELD = "benchmarks"


def read_json(path, layout):
  """The JSON object in ``path``; a file that is not one is named, with ``layout``."""
  with open(path) as f:
    try:
      value = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} is not valid JSON ({e}): {layout}") from None
  if not isinstance(value, dict):
    raise ValueError(f"{path} holds a JSON {type(value).__name__}, not an object: {layout}")
  return value


def read_config(path):
  """The resolved config a run wrote, from its workdir or the .json itself.

  Another config.json (a transfer suite's, a timm or Hugging Face export's)
  is refused, naming what it is, rather than failing later on a missing field.
  """
  if os.path.isdir(path):
    path = os.path.join(path, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: is it a run's workdir, "
                            f"or its {CONFIG_FILE}?")
  layout = (f"a run's {CONFIG_FILE} is its resolved config, with "
            f"{', '.join(RUN_CONFIG_FIELDS)}")
  fields = read_json(path, layout)
  if SUITE_FIELD in fields:
    raise ValueError(f"{path} is a transfer suite's config, not a run's: give one of "
                     f"its runs, the workdir SUITE_DIR/BENCHMARK/seed0")
  missing = [field for field in RUN_CONFIG_FIELDS if field not in fields]
  if missing:
    raise ValueError(f"{path} lacks {', '.join(missing)}, so it is not a vit_jax "
                     f"run's config (a timm or Hugging Face export's?): {layout}")
  return ml_collections.ConfigDict(fields)


def read_summary(workdir, fields=()):
  """The summary a finished run wrote in ``workdir``, or None if it has not finished.

  A summary.json that is not a JSON object, or lacks one of ``fields``, is
  named in a one-line error, not a KeyError later.
  """
  path = os.path.join(workdir, SUMMARY_FILE)
  if not os.path.exists(path):
    return None
  listed = ", ".join(fields)
  summary = read_json(path, f"a run's {SUMMARY_FILE} is one object with {listed}")
  missing = [field for field in fields if field not in summary]
  if missing:
    raise ValueError(f"{path} lacks {', '.join(missing)}: a finished run's "
                     f"{SUMMARY_FILE} has {listed}")
  return summary
