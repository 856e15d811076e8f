"""How configs state their data, importable without TensorFlow.

The config files and the cost estimate read these without importing
TensorFlow (seconds of start-up); the pipeline reads them too, so each
default and each reading of a field is written once.
"""
from collections.abc import Sequence

# `config.data.source` where a config has none (runs from before sources existed).
DEFAULT_SOURCE = "tfds"
# What `config.data.source` may name (`vit_jax.data.sources.get_source`).
SOURCES = ("tfds", "tfrecord", "folder")


def height_width(size: int | Sequence[int]) -> tuple[int, int]:
  """(height, width) of an image or patch size given as an int (square) or a pair."""
  if isinstance(size, int):
    return size, size
  try:
    if isinstance(size, str):
      raise ValueError
    height, width = size
    return int(height), int(width)
  except (TypeError, ValueError):
    # A TypeError, as for any argument of the wrong kind: the preprocessing
    # registry names the op it was given to.
    raise TypeError(f"size {size!r} is neither an int (a square) nor a "
                    f"(height, width) pair, e.g. 224 or (224, 160)") from None
