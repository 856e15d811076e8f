"""Few-shot linear probes of frozen features: the ViT paper's cheap measure of a representation.

The paper compares pre-training runs by how well a linear classifier on the
frozen ``pre_logits`` (the pooled vector, through the representation layer
where there is one) does from a few examples a class, because a fine-tune
per checkpoint costs too much. The protocol is big_vision's:

- the k shots of a class are its first k examples after a seeded
  permutation of the training split (`sample_shots`);
- features are standardised with the k-shot set's own mean and standard
  deviation (+1e-5), and a constant bias feature is added;
- targets are ``2 * onehot - 1``; the weights solve ridge regression with a
  fixed regulariser in closed form (`ridge_weights`), in float32 on the host;
- the accuracy is that of the argmax over the whole test split.

Features are computed on the devices with the run's sharding, exactly: the
eval batches are padded and masked, so every example counts once.

A run probes its own dataset, or the dataset presets `config.fewshot.datasets`
names (`probe_sets`): each with its preset's training split for the shots
and its 'test' eval split for the score, through the run's eval
preprocessing with the preset's class count. Each is logged as its own
split: ``fewshot`` for the run's own data, ``fewshot/<preset>`` for another.
"""
import ast
import copy
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from vit_jax.data import input_pipeline, sources

DEFAULT_REGULARISER = 2.0 ** 10
_STD_FLOOR = 1e-5
# The metrics split of the probes of the run's own data; another dataset's
# are logged as f"{SPLIT}/{its preset's name}".
SPLIT = "fewshot"


class ProbeSet(NamedTuple):
  """One dataset's probes: where they are logged, their data, their classes."""
  split: str  # the metrics split: SPLIT, or SPLIT/<preset>
  data: dict  # {"train": EvalData of the shots' split, "test": of the scored one}
  num_classes: int


def probe_splits(config):
  """``{"train": split the shots come from, "test": split they are scored on}``.

  ``config.fewshot``'s splits where set, else the run's training split and
  its eval split named 'test' (else its last one).
  """
  chosen = config.get("fewshot") or {}  # a run from before the probes has none
  default = _preset_splits(config.data)
  return {"train": chosen.get("train_split") or default["train"],
          "test": chosen.get("test_split") or default["test"]}


def _preset_splits(data_config):
  """A dataset's training split and its eval split named 'test' (else its last)."""
  eval_splits = dict(data_config.eval_splits)
  return {"train": data_config.train_split,
          "test": eval_splits.get("test", list(eval_splits.values())[-1])}


def probe_datasets(config):
  """The preset names of ``config.fewshot.datasets``; empty: the run's own data."""
  return tuple((config.get("fewshot") or {}).get("datasets") or ())


def probe_sets(config, *, source=None, datasets=None, splits=None):
  """``{metrics split: ProbeSet}`` of every dataset the run probes, all found now.

  ``datasets`` (default `probe_datasets`) are preset names of
  `configs.common.DATASETS`, read from the run's ``config.data.data_dir``;
  none: the run's own data (``source``, its `sources.get_source`, if built),
  on ``splits`` (default `probe_splits`). Every dataset that is not
  prepared, or lacks a split, is named in one error with how to prepare it,
  before anything is trained.
  """
  datasets = probe_datasets(config) if datasets is None else tuple(datasets)
  if not datasets:
    source = source or sources.get_source(config.data)
    splits = splits or probe_splits(config)
    _check_splits(source, splits, "the few-shot {0} split (config.fewshot.{0}_split)")
    return {SPLIT: ProbeSet(SPLIT, _eval_data(source, config.pp.eval, splits, config),
                            config.data.num_classes)}
  chosen = splits or {k: (config.get("fewshot") or {}).get(f"{k}_split")
                      for k in ("train", "test")}
  chosen = [f"{k}_split={v!r}" for k, v in chosen.items() if v]
  if chosen:
    raise ValueError(f"config.fewshot.{', '.join(chosen)} chooses a split of the run's "
                     f"own data, but config.fewshot.datasets={datasets!r} probes other "
                     f"datasets, each on its preset's splits; unset one of them")
  found, problems = {}, []
  for name in datasets:
    try:
      data_config = probe_data_config(config, name)
      source = sources.get_source(data_config)
      splits = _preset_splits(data_config)
      _check_splits(source, splits, "its {} split")
    except (FileNotFoundError, ValueError) as e:
      problems.append((name, e))
      continue
    pp_spec = with_num_classes(config.pp.eval, data_config.num_classes)
    found[name] = ProbeSet(f"{SPLIT}/{name}", _eval_data(source, pp_spec, splits, config),
                           data_config.num_classes)
  if problems:
    error = (sources.DatasetNotPreparedError
             if all(isinstance(e, FileNotFoundError) for _, e in problems) else ValueError)
    raise error(f"config.fewshot.datasets: {len(problems)} of {len(datasets)} few-shot "
                f"dataset(s) cannot be read:\n  "
                + "\n  ".join(f"{name}: {e}" for name, e in problems))
  return {probe.split: probe for probe in found.values()}


def probe_data_config(config, name):
  """The `config.data` block of the preset ``name``, read as the run reads its own.

  The run's ``data_dir``, ``strict`` and ``cache``; a multi-label preset is
  refused (a probe scores one class an image).
  """
  from configs import common  # the presets; configs import vit_jax, not back

  data_config = common.dataset_config(name, data_dir=config.data.data_dir)
  if data_config.multi_label:
    raise ValueError(f"dataset {name!r} is multi-label; a few-shot probe needs "
                     f"one class an image")
  for field in ("strict", "cache"):
    data_config[field] = config.data.get(field, data_config[field])
  return data_config


def with_num_classes(pp_spec, num_classes):
  """``pp_spec`` with its ``onehot`` op's class count set to ``num_classes``.

  A probe dataset is read through the run's eval preprocessing; only the
  label count is its own. A spec without ``onehot`` is refused: the probes
  take each example's class from it.
  """
  pieces, found = pp_spec.split("|"), False
  for i, piece in enumerate(pieces):
    try:
      node = ast.parse(piece.strip(), mode="eval").body
    except SyntaxError:
      continue  # `preprocess.parse` names it
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        and node.func.id == "onehot"):
      node = copy.deepcopy(node)
      if node.args:
        node.args[0] = ast.Constant(int(num_classes))
      else:
        node.keywords = [k for k in node.keywords if k.arg != "num_classes"]
        node.args = [ast.Constant(int(num_classes))]
      pieces[i], found = ast.unparse(node), True
  if not found:
    raise ValueError(f"config.pp.eval={pp_spec!r} has no onehot op; the few-shot "
                     f"probes read each example's class from it")
  return "|".join(pieces)


def _check_splits(source, splits, field):
  """Fails naming ``field`` (formatted with 'train' or 'test') where a split is missing."""
  for name, split in splits.items():
    try:
      source.regions(split)
    except ValueError as e:
      raise ValueError(f"{field.format(name)}: {e}") from None


def _eval_data(source, pp_spec, splits, config):
  """The keyed `input_pipeline.EvalData` of each of ``splits``."""
  return {name: input_pipeline.EvalData(source, pp_spec, split,
                                        global_batch=config.eval_batch, keyed=True)
          for name, split in splits.items()}


def run_probes(feature_step, params, data, batch_sharding, *, shots, seeds,
               num_classes, regulariser=DEFAULT_REGULARISER):
  """The metrics of one round of probes: ``{"10shot": mean accuracy, ...}``.

  With ``seconds``, the round's time (features and solves), which the
  trainer leaves out of training's time and core-days.
  """
  start = time.monotonic()
  features = {name: extract_features(feature_step, params, split_data, batch_sharding)
              for name, split_data in data.items()}
  accuracies = probe_accuracies(features["train"], features["test"], shots=shots,
                                seeds=seeds, num_classes=num_classes,
                                regulariser=regulariser)
  return {**{f"{k}shot": float(np.mean(values)) for k, values in accuracies.items()},
          "seconds": time.monotonic() - start}


def make_feature_step(model):
  """A jitted (params, batch) -> (pre_logits, class id, key, mask) of every row.

  The model sows its ``pre_logits`` as an intermediate; asking for that
  collection returns it beside the logits, which are left unused.
  """

  @jax.jit
  def feature_step(params, batch):
    _, state = model.apply({"params": params}, batch["image"], train=False,
                           mutable=["intermediates"])
    features, = state["intermediates"]["features"]
    return (features.astype(jnp.float32), jnp.argmax(batch["labels"], axis=-1),
            batch[input_pipeline.KEY], batch["mask"])

  return feature_step


def extract_features(feature_step, params, eval_data, batch_sharding):
  """(features, class ids) of every example of ``eval_data``, on every process.

  ``eval_data`` is an `input_pipeline.EvalData` made with ``keyed=True``.
  Each batch's rows are gathered from all processes
  (`multihost_utils.process_allgather`) and the padding rows dropped; the
  rows are then sorted by their example's key, so that the shots drawn from
  them are the same on any number of processes and devices. The host holds
  one float32 row per example and nothing per example besides.
  """
  features, labels, keys = [], [], []
  for host_batch in eval_data:
    batch = input_pipeline.to_global(
        {k: host_batch[k] for k in ("image", "labels", input_pipeline.KEY, "mask")},
        batch_sharding)
    rows, ids, key, mask = multihost_utils.process_allgather(
        feature_step(params, batch), tiled=True)
    features.append(rows[mask])
    labels.append(ids[mask])
    keys.append(key[mask])
  order = np.argsort(np.concatenate(keys), kind="stable")
  return np.concatenate(features)[order], np.concatenate(labels)[order]


def sample_shots(labels, shots, seed):
  """Indices of the first ``shots`` examples of each class in a seeded permutation.

  A class with fewer examples gives all it has.
  """
  order = np.random.RandomState(seed).permutation(len(labels))
  picked = [order[labels[order] == c][:shots] for c in np.unique(labels)]
  return np.sort(np.concatenate(picked))


def ridge_weights(x, y, regulariser):
  """``W`` minimising ``|XW - Y|^2 + regulariser |W|^2``, in closed form.

  Through the eigendecomposition of the smaller of ``X^T X`` (d x d) and
  ``X X^T`` (n x n): a few shots of high-dimensional features make the
  second far smaller. Both equal ``(X^T X + r I)^-1 X^T Y``.
  """
  n, d = x.shape
  if n < d:  # W = X^T (X X^T + r I)^-1 Y
    values, vectors = np.linalg.eigh(x @ x.T)
    return x.T @ ((vectors / (values + regulariser)) @ (vectors.T @ y))
  values, vectors = np.linalg.eigh(x.T @ x)
  return (vectors / (values + regulariser)) @ (vectors.T @ (x.T @ y))


def probe_accuracies(train, test, *, shots, seeds, num_classes,
                     regulariser=DEFAULT_REGULARISER):
  """``{k: [accuracy of each seed]}`` for each k of ``shots``."""
  return {k: [probe_accuracy(train, test, shots=k, seed=seed, num_classes=num_classes,
                             regulariser=regulariser) for seed in seeds]
          for k in shots}


def probe_accuracy(train, test, *, shots, seed, num_classes,
                   regulariser=DEFAULT_REGULARISER):
  """Test accuracy of a ridge probe on ``shots`` examples a class of ``train``.

  ``train`` and ``test`` are (features, class ids) pairs, as
  `extract_features` returns them.
  """
  train_x, train_y = train
  test_x, test_y = test
  picked = sample_shots(train_y, shots, seed)
  x = train_x[picked].astype(np.float32)
  mean, std = x.mean(axis=0), x.std(axis=0) + _STD_FLOOR

  def standardised(features):
    features = (features.astype(np.float32) - mean) / std
    return np.concatenate([features, np.ones((len(features), 1), np.float32)], axis=1)

  targets = 2.0 * np.eye(num_classes, dtype=np.float32)[train_y[picked]] - 1.0
  weights = ridge_weights(standardised(x), targets, regulariser)
  predicted = np.argmax(standardised(test_x) @ weights, axis=1)
  return float(np.mean(predicted == test_y))
