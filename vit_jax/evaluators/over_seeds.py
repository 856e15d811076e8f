"""The spread of a score over seeds, as the ViT paper's tables give it.

One definition for every table that prints "mean ± std" over seeds (the
transfer suite's and the few-shot command's), so the two agree: the sample
standard deviation (ddof=1) of a handful of seeds, and 0 for a single seed,
where there is no spread to estimate.
"""
import numpy as np


def mean_and_std(scores) -> tuple[float, float]:
  """(mean, sample std) of per-seed scores; std 0 for one seed."""
  scores = np.asarray(scores, np.float64)
  if scores.size == 0:
    raise ValueError("mean_and_std needs the score of at least one seed, got none.")
  std = float(np.std(scores, ddof=1)) if scores.size > 1 else 0.0
  return float(np.mean(scores)), std
