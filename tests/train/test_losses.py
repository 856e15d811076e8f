"""Losses and the top-1 / precision@1 hit test, against hand computations."""
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax.train import losses


def test_softmax_xent_matches_the_formula():
  logits = jnp.array([[2.0, 1.0, 0.0]])
  labels = jnp.array([[0.0, 1.0, 0.0]])
  expected = -np.log(np.exp(1.0) / np.exp([2.0, 1.0, 0.0]).sum())
  np.testing.assert_allclose(losses.softmax_xent(logits, labels), [expected], rtol=1e-6)


def test_sigmoid_xent_sums_over_classes():
  logits = jnp.array([[0.0, 2.0]])
  labels = jnp.array([[1.0, 0.0]])
  expected = np.log(2.0) + np.log1p(np.exp(2.0))  # -log s(0) - log(1 - s(2))
  np.testing.assert_allclose(losses.sigmoid_xent(logits, labels), [expected], rtol=1e-6)


def test_sigmoid_xent_with_head_bias_minus_ten_starts_small():
  # The i21k/JFT head: zero kernel, bias -10 -> logits -10 for every class.
  logits = jnp.full((1, 21843), -10.0)
  labels = jnp.zeros((1, 21843)).at[0, 3].set(1.0)
  loss = float(losses.sigmoid_xent(logits, labels)[0])
  expected = 10.0 + 21843 * np.log1p(np.exp(-10.0))
  assert loss == pytest.approx(expected, rel=1e-4)
  assert loss < 12.0  # versus ln(21843) = 10 per class for a uniform softmax start


def test_label_smoothing_mixes_with_uniform():
  labels = jnp.array([[0.0, 1.0, 0.0, 0.0]])
  np.testing.assert_allclose(losses.smooth_labels(labels, 0.1),
                             [[0.025, 0.925, 0.025, 0.025]], rtol=1e-6)
  assert losses.smooth_labels(labels, 0.0) is labels


def test_top1_hits_is_accuracy_for_one_hot_and_precision_at_1_for_multi_hot():
  logits = jnp.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.0, 0.2, 0.7]])
  one_hot = jnp.array([[0, 1, 0], [0, 1, 0], [0, 0, 1]], jnp.float32)
  multi_hot = jnp.array([[1, 1, 0], [0, 1, 1], [1, 0, 1]], jnp.float32)
  np.testing.assert_array_equal(losses.top1_hits(logits, one_hot), [True, False, True])
  np.testing.assert_array_equal(losses.top1_hits(logits, multi_hot), [True, False, True])


def test_top1_hits_with_smoothed_targets_counts_only_the_true_class():
  # big_vision's onehot(3, on=0.9, off=1e-4): every class has a target above 0.
  logits = jnp.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.0, 0.2, 0.7]])
  smoothed = jnp.array([[1e-4, 0.9, 1e-4], [1e-4, 0.9, 1e-4], [1e-4, 1e-4, 0.9]])
  np.testing.assert_array_equal(losses.top1_hits(logits, smoothed), [True, False, True])


def test_a_row_without_a_label_is_no_hit_whatever_its_off_value():
  logits = jnp.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
  for off in (0.0, 1e-4):
    unlabelled = jnp.full((2, 3), off)
    np.testing.assert_array_equal(losses.labelled(unlabelled), [False, False])
    np.testing.assert_array_equal(losses.top1_hits(logits, unlabelled), [False, False])
  # One class: a row is its label's target alone.
  np.testing.assert_array_equal(losses.labelled(jnp.array([[1.0], [0.0]])), [True, False])


def test_unknown_loss_is_named():
  with pytest.raises(ValueError, match=r"config.loss='l2'.*sigmoid_xent, softmax_xent"):
    losses.get_loss("l2")
