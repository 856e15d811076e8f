"""The mean and spread over seeds (vit_jax.evaluators.over_seeds)."""
import pytest

from vit_jax.evaluators import over_seeds


def test_the_spread_is_the_sample_std_and_zero_for_one_seed():
  mean, std = over_seeds.mean_and_std([0.8, 0.9, 1.0])
  assert mean == pytest.approx(0.9) and std == pytest.approx(0.1)  # ddof=1; ddof=0: 0.0816
  assert over_seeds.mean_and_std([0.75]) == (0.75, 0.0)


def test_no_scores_is_an_error_not_a_nan():
  with pytest.raises(ValueError, match="at least one seed, got none"):
    over_seeds.mean_and_std([])
