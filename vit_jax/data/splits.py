"""Split names with tfds-style slices, and the checks a run's splits get.

``train``, ``train[:98%]``, ``train[1000:2000]``, ``train[-500:]`` name a
whole split or a slice of it; tfds sources also join them with ``+``. A
slice is counted over the split's records in file order. Out-of-range
bounds are errors, not clamps (``train[:150%]``, ``train[600:]`` of a
500-record split), as in tfds: a clamped slice would train or evaluate on
other examples than the config says. Imports no TensorFlow, so cost
estimates use it too.
"""
import re

_SLICE = re.compile(r"\s*(\w+)\s*(?:\[\s*(-?\d*)(%?)\s*:\s*(-?\d*)(%?)\s*\])?\s*")


def parse_split(split):
  """``'train[10%:90%]'`` -> ``('train', start, stop, is_percent)``."""
  match = _SLICE.fullmatch(split)
  if not match or (match[2] and match[4] and match[3] != match[5]):
    raise ValueError(f"split {split!r} is not 'name' or a slice like "
                     f"'name[:98%]' or 'name[1000:2000]'")
  name, start, start_pct, stop, stop_pct = match.groups()
  to_int = lambda s: int(s) if s else None
  return name, to_int(start), to_int(stop), bool(start_pct or stop_pct)


def slice_bounds(split, total):
  """``[start, stop)`` of the one-split slice ``split`` of ``total`` records.

  A bound outside the split (a percentage outside [-100, 100], an index
  beyond ``total`` either way) or an empty slice is a ValueError naming the
  split, its size and the valid bounds.
  """
  _, start, stop, percent = parse_split(split)
  limit, unit = (100, "%") if percent else (total, "")
  for bound in (start, stop):
    if bound is not None and not -limit <= bound <= limit:
      raise ValueError(f"split {split!r}: {bound}{unit} lies outside the split "
                       f"of {total} records; valid bounds: -{limit}{unit} to "
                       f"{limit}{unit}")
  if percent:
    start = None if start is None else round(total * start / 100)
    stop = None if stop is None else round(total * stop / 100)
  start, stop, _ = slice(start, stop).indices(total)
  if start >= stop:
    raise ValueError(f"split {split!r} holds no records of the {total} there "
                     f"(records [{start}, {stop}))")
  return start, stop


def examples_in_split(split, split_sizes):
  """Examples in ``split`` (``'train[:99%]'``, ``'train+validation'``), by size.

  ``split_sizes`` maps whole splits to their sizes: a dataset's published
  sizes, for estimates made before it is prepared. A split it lacks is a
  KeyError naming the split and the sizes known.
  """
  count = 0
  for one in split.split("+"):
    name = parse_split(one)[0]
    if name not in split_sizes:
      raise KeyError(f"no size known for split {name!r}; known: "
                     f"{', '.join(sorted(split_sizes)) or 'none'}")
    start, stop = slice_bounds(one, split_sizes[name])
    count += stop - start
  return count


def run_splits(data_config):
  """``{config field: split}`` of the splits a run reads, training first."""
  named = {"config.data.train_split": data_config.train_split}
  for name, split in data_config.eval_splits.items():
    named[f"config.data.eval_splits.{name}"] = split
  return named


def check_disjoint(train_field, train_regions, eval_field, eval_regions, *, hint=""):
  """Refuses an eval split that shares records with the training split.

  Regions are ``(where, begin, end)``: records ``[begin, end)`` of a file,
  or of a whole tfds split. A shared region means the evaluation scores
  examples the model trained on, so its accuracy would be overstated. The
  error names both fields, the first shared file or split and its records;
  ``hint`` says what may cause it.
  """
  trained = {}
  for where, begin, end in train_regions:
    trained.setdefault(where, []).append((begin, end))
  for where, begin, end in eval_regions:
    for train_begin, train_end in trained.get(where, ()):
      low, high = max(begin, train_begin), min(end, train_end)
      if low < high:
        raise ValueError(
            f"{eval_field} shares records with {train_field}: both read "
            f"records [{low}, {high}) of {where}, so the evaluation would "
            f"score examples the model trained on{hint}")
