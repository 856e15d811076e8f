"""Exact classification evaluation: top-1, and precision@1 over the labelled examples."""
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vit_jax.evaluators import classification
from vit_jax.train import losses, sharding


class LogitsModel:
  """A model whose logits are its input, so each row's prediction is set by hand."""

  def apply(self, variables, images, *, train):
    del variables, train
    return images


@dataclasses.dataclass
class Batches:
  """Eval data as `input_pipeline.EvalData` gives it: padded, masked batches."""
  batches: list
  num_examples: int
  split: str = "val"

  def __iter__(self):
    return iter(self.batches)


def batches_of(logits, labels, num_examples, batch=4):
  """``logits``/``labels`` cut into batches of ``batch``, the last padded."""
  pad = -len(logits) % batch
  mask = np.arange(len(logits) + pad) < len(logits)
  logits = np.pad(np.asarray(logits, np.float32), ((0, pad), (0, 0)))
  labels = np.pad(np.asarray(labels, np.float32), ((0, pad), (0, 0)))
  return Batches([{"image": logits[i:i + batch], "labels": labels[i:i + batch],
                   "mask": mask[i:i + batch]} for i in range(0, len(mask), batch)],
                 num_examples)


def run_eval(data, *, multi_label, loss="sigmoid_xent"):
  mesh = sharding.make_mesh(ml_collections.ConfigDict({"data": 1, "fsdp": 1}),
                            jax.devices()[:1])
  step = classification.make_eval_step(LogitsModel(), losses.get_loss(loss))
  return classification.evaluate(step, {}, data, sharding.batch_sharding(mesh),
                                 multi_label=multi_label)


def one_hot(*classes, num_classes=5):
  return np.isin(np.arange(num_classes), classes).astype(np.float32)


# Predicted class (the hot logit) and true labels of each example.
MULTI_LABEL = [(3, one_hot(1, 3)),      # hit
               (0, one_hot()),          # no label: left out
               (2, one_hot(0)),         # miss
               (4, one_hot(2, 4)),      # hit
               (4, one_hot()),          # no label: left out
               (3, one_hot(0, 1, 2))]   # miss


# Targets as `onehot(5)` and big_vision's smoothed `onehot(5, on=0.9, off=1e-4)`.
@pytest.mark.parametrize("on, off", [(1.0, 0.0), (0.9, 1e-4)])
def test_precision_at_1_leaves_out_examples_without_a_label(on, off):
  logits = [one_hot(predicted) * 5 for predicted, _ in MULTI_LABEL]
  labels = [np.where(row > 0, on, off).astype(np.float32) for _, row in MULTI_LABEL]
  result = run_eval(batches_of(logits, labels, num_examples=6), multi_label=True)
  labelled = [0, 2, 3, 5]
  expected_loss = np.mean(losses.get_loss("sigmoid_xent")(
      jnp.asarray(np.array(logits)[labelled]), jnp.asarray(np.array(labels)[labelled])))
  assert result["prec@1"] == 2 / 4
  assert result["num_examples"] == 4 and result["unlabelled"] == 2
  assert result["loss"] == pytest.approx(float(expected_loss), rel=1e-6)


def test_top1_of_single_label_data_counts_every_example():
  predicted, true = [0, 1, 2, 3, 4], [0, 1, 0, 3, 2]
  logits = [one_hot(p) * 5 for p in predicted]
  labels = [one_hot(t) for t in true]
  result = run_eval(batches_of(logits, labels, num_examples=5), multi_label=False,
                    loss="softmax_xent")
  assert result["top1"] == 3 / 5 and result["num_examples"] == 5
  assert "unlabelled" not in result


def test_an_example_missed_or_counted_twice_is_an_error():
  logits = [one_hot(p) * 5 for p, _ in MULTI_LABEL]
  labels = [row for _, row in MULTI_LABEL]
  with pytest.raises(RuntimeError, match="evaluation saw 6 examples, but the split has 7"):
    run_eval(batches_of(logits, labels, num_examples=7), multi_label=True)


def test_a_split_without_any_label_is_an_error():
  with pytest.raises(ValueError, match="none of the 2 examples of split 'val' has a label"):
    run_eval(batches_of([one_hot(0)] * 2, [one_hot()] * 2, num_examples=2), multi_label=True)


def test_the_eval_step_under_the_runs_fsdp_mesh_keeps_the_batch_split():
  """Traced under the mesh, as the train step is, FSDP's eval scores the same
  with a device's share of the batch, not its fsdp group's whole batch.

  Measured (XLA:CPU, jax 0.10.2, a 4-layer scanned ViT, 8 devices at fsdp=8,
  8 examples a device): 1,268,368 temporary bytes a device under the mesh,
  6,775,136 without it.
  """
  from vit_jax import models

  model = models.get_model(
      "B/4", num_classes=10, hidden_size=64, num_layers=4, mlp_dim=256, num_heads=2,
      scan=True, attention_implementation="dot_product_attention",
      layer_norm_implementation="flax", dense_implementation="flax")
  mesh_config = ml_collections.ConfigDict(
      dict(data=1, fsdp=8, model=1, fsdp_min_size=0, rules=((".*", "fsdp"),)))
  mesh = sharding.make_mesh(mesh_config)
  params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)["params"]
  params = jax.device_put(params, sharding.param_shardings(mesh, params, mesh_config))
  rng = np.random.default_rng(0)
  batch = jax.device_put(
      {"image": rng.normal(size=(64, 32, 32, 3)).astype(np.float32),
       "labels": np.eye(10, dtype=np.float32)[rng.integers(0, 10, 64)],
       "mask": np.ones(64, bool)}, sharding.batch_sharding(mesh))
  results, temp_bytes = [], []
  for run_mesh in (None, mesh):
    step = classification.make_eval_step(model, losses.get_loss("softmax_xent"), run_mesh)
    temp_bytes.append(step.lower(params, batch).compile().memory_analysis().temp_size_in_bytes)
    results.append(jax.device_get(step(params, batch)))
  for key in ("hits", "count", "seen"):
    assert int(results[1][key]) == int(results[0][key]), key
  np.testing.assert_allclose(results[1]["loss_sum"], results[0]["loss_sum"], rtol=1e-5)
  assert temp_bytes[1] < temp_bytes[0] / 2, temp_bytes


@pytest.mark.parametrize("multi_label", [False, True])
def test_a_padding_row_counts_for_nothing_even_when_it_holds_a_real_example(multi_label):
  """The mask alone says which rows are padding. `EvalData` pads with zero
  rows, which hold no label anyway; a pipeline that pads by repeating an
  example (here the first, a hit) must not have it counted: 2 hits of the
  3 real rows, not 3 of 4."""
  predicted, true = [0, 1, 2], [0, 1, 1]
  logits = np.stack([one_hot(p) * 5 for p in predicted + [0]])
  labels = np.stack([one_hot(t) for t in true + [0]])
  data = Batches([{"image": logits, "labels": labels,
                   "mask": np.array([True, True, True, False])}], num_examples=3)
  result = run_eval(data, multi_label=multi_label, loss="softmax_xent")
  expected_loss = np.mean(losses.get_loss("softmax_xent")(jnp.asarray(logits[:3]),
                                                          jnp.asarray(labels[:3])))
  assert result["prec@1" if multi_label else "top1"] == 2 / 3
  assert result["num_examples"] == 3 and result.get("unlabelled", 0) == 0
  assert result["loss"] == pytest.approx(float(expected_loss), rel=1e-6)
