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


def read_config(path):
  """The resolved config a run wrote, from its workdir or the .json itself."""
  if os.path.isdir(path):
    path = os.path.join(path, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: is it a run's workdir, "
                            f"or its {CONFIG_FILE}?")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def read_summary(workdir):
  """The summary a finished run wrote in ``workdir``, or None if it has not finished."""
  path = os.path.join(workdir, SUMMARY_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)
