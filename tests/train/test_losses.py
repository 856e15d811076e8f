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


def test_both_losses_are_computed_in_float32_from_bfloat16_logits():
  """A model that returns bfloat16 logits (a head in the compute dtype) must
  not get a loss rounded to bfloat16's 8 bits: computed in bfloat16, the
  softmax loss below came out 1.40625 instead of 1.40761, and the sigmoid
  loss of 1000 classes at -10 (the i21k head's start) 10.0625 instead of
  10.0454, an error larger than a late run's loss changes in a step."""
  logits = jnp.array([[2.0, 1.0, 0.0]], jnp.bfloat16)  # exact in bfloat16
  labels = jnp.array([[0.0, 1.0, 0.0]])
  softmax = losses.softmax_xent(logits, labels)
  assert softmax.dtype == jnp.float32
  np.testing.assert_allclose(softmax, [1.0 + np.log(np.exp([0.0, -1.0, -2.0]).sum())],
                             rtol=1e-6)
  logits = jnp.full((1, 1000), -10.0, jnp.bfloat16)
  labels = jnp.zeros((1, 1000)).at[0, 3].set(1.0)
  sigmoid = losses.sigmoid_xent(logits, labels)
  assert sigmoid.dtype == jnp.float32
  np.testing.assert_allclose(sigmoid, [np.log1p(np.exp(10.0)) + 999 * np.log1p(np.exp(-10.0))],
                             rtol=1e-6)

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


def test_a_multi_hot_row_of_every_class_is_labelled_and_any_prediction_hits():
  """A row `on` everywhere, plain or smoothed, holds every class: it counts
  in prec@1 as a hit, not as a row without a label left out of the score."""
  logits = jnp.array([[0.3, 0.7], [0.9, 0.1], [0.5, 0.2]])
  for on, off in ((1.0, 0.0), (1.0 - 1e-4 + 5e-5, 5e-5)):
    labels = jnp.array([[on, on], [on, off], [off, off]])
    np.testing.assert_array_equal(losses.labelled(labels), [True, True, False])
    np.testing.assert_array_equal(losses.top1_hits(logits, labels), [True, True, False])


def test_each_losss_probabilities_are_those_it_trains():
  """`predict` and the serving contract turn logits into probabilities with
  PROBABILITIES[config.loss]: a softmax-trained model's rows sum to 1, a
  sigmoid-trained model's classes are independent. Swapped, a sigmoid
  model's scores would be renormalised into a distribution it never learnt."""
  logits = jnp.array([[2.0, 0.0, -1.0]])
  exp = np.exp([2.0, 0.0, -1.0])
  np.testing.assert_allclose(losses.PROBABILITIES["softmax_xent"](logits), [exp / exp.sum()],
                             rtol=1e-6)
  np.testing.assert_allclose(losses.PROBABILITIES["sigmoid_xent"](logits),
                             [1.0 / (1.0 + 1.0 / exp)], rtol=1e-6)


def test_unknown_loss_is_named():
  with pytest.raises(ValueError, match=r"config.loss='l2'.*sigmoid_xent, softmax_xent"):
    losses.get_loss("l2")
