"""Few-shot linear probes of frozen features: the ViT paper's cheap measure of a representation.

The paper compares pre-training runs by how well a linear classifier on the
frozen ``pre_logits`` (the pooled vector, through the representation layer
where there is one) does from a few examples a class, because a fine-tune
per checkpoint costs too much. The protocol is big_vision's:

- the k shots of a class are its first k examples after a seeded
  permutation of the training split (`sample_shots`). A split of fewer
  examples than k times the classes is refused before a run trains
  (`probe_sets`); a class with fewer than k, known once the labels are
  read, is refused by the `vit_jax.fewshot` command (`check_shots`) and
  logged by a run's probes, which take the fewer as big_vision's do;
- features are standardised with the k-shot set's own mean and standard
  deviation (+1e-5), and a constant bias feature of 100 is added (large, so
  the regulariser barely shrinks the bias);
- targets are ``2 * onehot - 1``; the weights solve ridge regression with a
  fixed regulariser in closed form (`ridge_weights`), in float32 on the host;
- the accuracy is that of the argmax over the whole test split.

Features are computed on the devices with the run's sharding, exactly: the
eval batches are padded and masked, so every example counts once.

The host holds one float32 row of features an example and nothing per
example besides (`extract_features`); the solves add the shots' rows and a
(test examples x classes) score matrix, never a copy of the test features.

A run probes its own dataset, or the dataset presets `config.fewshot.datasets`
names (`probe_sets`): each with its preset's few-shot splits (its
``fewshot_splits``, big_vision's, where it has them; else its training
split for the shots and its 'test' eval split for the score), through the
run's eval preprocessing with the preset's class count. An entry
``'name:10'`` probes that preset at its own shot counts (``'name:5/10'``:
several) instead of `config.fewshot.shots`, as big_vision probes ImageNet
at 10 shots only. Each is logged as its own split: ``fewshot`` for the
run's own data, ``fewshot/<preset>`` for another.
"""
import ast
import copy
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
from absl import logging
import numpy as np
from jax.experimental import multihost_utils

from vit_jax.data import input_pipeline, sources
from vit_jax.models import activation_sharding

DEFAULT_REGULARISER = 2.0 ** 10
_STD_FLOOR = 1e-5
# The constant feature whose weight is each class's bias: big_vision's 100,
# so that the regulariser (1024) shrinks the bias 10^4 times less than a
# standardised feature's weight; it matters where classes have unequal shots.
_BIAS_FEATURE = 100.0
# The metrics split of the probes of the run's own data; another dataset's
# are logged as f"{SPLIT}/{its preset's name}".
SPLIT = "fewshot"


class ProbeSet(NamedTuple):
  """One dataset's probes: where they are logged, their data, classes and shots."""
  split: str  # the metrics split: SPLIT, or SPLIT/<preset>
  data: dict  # {"train": ProbeData of the shots' split, "test": of the scored one}
  num_classes: int
  shots: tuple  # the shot counts probed: the entry's own, else config.fewshot.shots


class ProbeData(input_pipeline.EvalData):
  """A probe's split, which knows the name of its dataset (the preset's, else
  ``config.data.name``) for the errors about its shots (`shots_from`)."""

  def __init__(self, dataset, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.dataset = dataset


def shots_from(probe_data):
  """"dataset 'digits', split 'train'": where a probe's shots are drawn, for errors."""
  return f"dataset {probe_data.dataset!r}, split {probe_data.split!r}"


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
  """A dataset's training split and its eval split named 'test' (else the last by
  name: a ConfigDict keeps its keys sorted, not in the order written)."""
  eval_splits = dict(data_config.eval_splits)
  return {"train": data_config.train_split,
          "test": eval_splits.get("test", list(eval_splits.values())[-1])}


def probe_datasets(config):
  """The entries of ``config.fewshot.datasets``; empty: the run's own data."""
  return tuple((config.get("fewshot") or {}).get("datasets") or ())


def parse_entry(entry, field="config.fewshot.datasets"):
  """``(preset name, its own shot counts or None)`` of a `config.fewshot.datasets` entry.

  ``'cifar100'`` takes `config.fewshot.shots`; ``'imagenet2012:10'`` 10 shots
  only; ``'imagenet2012:5/10'`` 5 and 10. Anything else is an error naming
  the entry, the ``field`` it was given in, and the forms.
  """
  name, sep, counts = str(entry).partition(":")
  if not sep:
    return name, None
  try:
    shots = tuple(int(k) for k in counts.split("/"))
  except ValueError:
    shots = ()
  if not name or not shots or min(shots) < 1:
    raise ValueError(f"{field} entry {entry!r}: expected a preset "
                     f"name, or 'name:K' with its own shot counts K >= 1 joined by '/' "
                     f"(e.g. 'imagenet2012:10', 'imagenet2012:5/10')")
  return name, shots


def probe_sets(config, *, source=None, datasets=None, splits=None, shots=None,
               datasets_field="config.fewshot.datasets", shots_field="config.fewshot.shots"):
  """``{metrics split: ProbeSet}`` of every dataset the run probes, all found now.

  ``datasets`` (default `probe_datasets`) are entries (`parse_entry`) naming
  presets of `configs.common.DATASETS`, read from the run's
  ``config.data.data_dir``; none: the run's own data (``source``, its
  `sources.get_source`, if built), on ``splits`` (default `probe_splits`).
  ``shots`` (default ``config.fewshot.shots``) serve every entry without
  its own. Every dataset that is not prepared, or lacks a split, is named
  in one error with how to prepare it, before anything is trained; so is
  one whose shots' split is too small for its shots (`check_split_size`).
  Errors about the entries name ``datasets_field``, and about the shots
  ``shots_field``, where the user gave them (the `fewshot` command's
  `--datasets`, `--shots`).
  """
  datasets = probe_datasets(config) if datasets is None else tuple(datasets)
  shots = tuple(config.fewshot.shots if shots is None else shots)
  if not datasets:
    if config.data.multi_label:  # argmax would make up one class an image
      raise ValueError(f"{datasets_field}=() probes the run's own data, and "
                       f"{config.data.name!r} is multi-label (config.data.multi_label); a "
                       f"few-shot probe needs one class an image: name single-label "
                       f"presets there, e.g. ('imagenet2012', 'cifar100')")
    source = source or sources.get_source(config.data)
    splits = splits or probe_splits(config)
    _check_splits(source, splits, "the few-shot {0} split (config.fewshot.{0}_split)")
    probe = ProbeSet(SPLIT, _eval_data(config.data.name, source, config.pp.eval, splits,
                                       config), config.data.num_classes, shots)
    check_split_size(probe, shots_field)
    return {SPLIT: probe}
  parsed = [parse_entry(entry, datasets_field) for entry in datasets]
  names = [name for name, _ in parsed]
  twice = sorted({name for name in names if names.count(name) > 1})
  if twice:  # each would be logged as the same split
    raise ValueError(f"{datasets_field}={datasets!r} names {', '.join(twice)} "
                     f"more than once; give each dataset one entry")
  if splits is None:  # a caller's own (the command's flags) replace the config's
    splits = {k: (config.get("fewshot") or {}).get(f"{k}_split") for k in ("train", "test")}
  chosen = [f"{k}_split={v!r}" for k, v in splits.items() if v]
  if chosen:
    raise ValueError(f"config.fewshot.{', '.join(chosen)} chooses a split of the run's "
                     f"own data, but {datasets_field}={datasets!r} probes other "
                     f"datasets, each on its preset's splits; unset one of them")
  found, problems = {}, []
  for name, own_shots in parsed:
    try:
      data_config = probe_data_config(config, name)
      source = sources.get_source(data_config)
      splits = _preset_splits(data_config)
      _check_splits(source, splits, "its {} split")
    except (FileNotFoundError, ValueError) as e:
      problems.append((name, e))
      continue
    pp_spec = with_num_classes(config.pp.eval, data_config.num_classes)
    found[name] = ProbeSet(f"{SPLIT}/{name}",
                           _eval_data(name, source, pp_spec, splits, config),
                           data_config.num_classes, own_shots or shots)
  if problems:
    error = (sources.DatasetNotPreparedError
             if all(isinstance(e, FileNotFoundError) for _, e in problems) else ValueError)
    raise error(f"{datasets_field}: {len(problems)} of {len(datasets)} few-shot "
                f"dataset(s) cannot be read:\n  "
                + "\n  ".join(f"{name}: {e}" for name, e in problems))
  for (name, own_shots), entry in zip(parsed, datasets):
    if name in found:
      check_split_size(found[name], f"{datasets_field} entry {entry!r}" if own_shots
                       else shots_field)
  return {probe.split: probe for probe in found.values()}


def check_split_size(probe, shots_field):
  """Refuses, before any feature is computed, a `ProbeSet` whose shots' split
  has fewer examples than its most shots times its classes: then some class
  has fewer than those shots (`check_shots` finds which, once the labels
  are read). ``shots_field`` is where the shots were given."""
  data, most = probe.data["train"], max(probe.shots)
  if data.num_examples >= most * probe.num_classes:
    return
  fit = data.num_examples // probe.num_classes
  raise ValueError(
      f"few-shot probes of {shots_from(data)}: {most} shots ({shots_field}) of each of "
      f"its {probe.num_classes} classes need {most * probe.num_classes} examples, and "
      f"the split has {data.num_examples}, so some class has fewer than {most}; a "
      f"probe never reports a shot count it did not use: "
      + (f"ask for {fit} shots or fewer, or " if fit else "")
      + "draw the shots from a larger split")


def probe_data_config(config, name):
  """The `config.data` block of the preset ``name``, as its probes read it.

  The run's ``data_dir``, ``strict`` and ``cache``; the preset's
  ``fewshot_splits`` (big_vision's few-shot splits: CIFAR-100's whole
  training split where the preset holds out a minival slice, ImageNet's
  first 65,000 training images) as its training split and 'test' eval
  split, where it has them. A multi-label preset is refused (a probe scores
  one class an image).
  """
  from configs import common  # the presets; configs import vit_jax, not back

  data_config = common.dataset_config(name, data_dir=config.data.data_dir)
  if data_config.multi_label:
    raise ValueError(f"dataset {name!r} is multi-label; a few-shot probe needs "
                     f"one class an image")
  for field in ("strict", "cache"):
    data_config[field] = config.data.get(field, data_config[field])
  fewshot_splits = common.DATASETS[name].get("fewshot_splits")
  if fewshot_splits:
    data_config.train_split = fewshot_splits["train"]
    data_config.eval_splits = {"test": fewshot_splits["test"]}
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


def _eval_data(dataset, source, pp_spec, splits, config):
  """The keyed `ProbeData` of each of ``splits`` of the dataset named ``dataset``."""
  return {name: ProbeData(dataset, source, pp_spec, split, global_batch=config.eval_batch,
                          image_size=config.image_size, keyed=True)
          for name, split in splits.items()}


def run_probes(feature_step, params, data, batch_sharding, *, shots, seeds,
               num_classes, regulariser=DEFAULT_REGULARISER):
  """The metrics of one round of probes: ``{"10shot": mean accuracy, ...}``.

  ``data`` is a `ProbeSet`'s; a class of its shots' split with fewer
  examples than ``shots`` ask is logged (`short_classes`) and probed with
  what it has, as big_vision's probes are: a run is not stopped at its
  first probe because a preset's smallest class falls short of 25 shots.

  With ``seconds``, the round's time (features and solves), which the
  trainer leaves out of training's time and core-days.
  """
  start = time.monotonic()
  features = {name: extract_features(feature_step, params, split_data, batch_sharding)
              for name, split_data in data.items()}
  short = short_classes(features["train"][1], shots, num_classes,
                        where=shots_from(data["train"]))
  if short:  # a run probes on: its other probes, and its training, stand
    logging.warning("%s; its %d-shot probes use what that class has, as big_vision's "
                    "do", short, max(shots))
  accuracies = probe_accuracies(features["train"], features["test"], shots=shots,
                                seeds=seeds, num_classes=num_classes,
                                regulariser=regulariser)
  return {**{f"{k}shot": float(np.mean(values)) for k, values in accuracies.items()},
          "seconds": time.monotonic() - start}


def make_feature_step(model, mesh=None):
  """A jitted (params, batch) -> (pre_logits, class id, key, mask) of every row.

  The model sows its ``pre_logits`` as an intermediate; asking for that
  collection returns it beside the logits, which are left unused. With the
  run's ``mesh`` the model is traced under it, as the train step traces it.
  """

  @jax.jit
  def feature_step(params, batch):
    with activation_sharding.under(mesh):
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
  them are the same on any number of processes and devices.

  The host holds one float32 row per example and nothing per example
  besides: the rows go into one array of the split's size as they arrive,
  so its peak is two such arrays (the sort's copy), a batch beside.
  """
  features = labels = keys = None
  count = 0
  for host_batch in eval_data:
    batch = input_pipeline.to_global(
        {k: host_batch[k] for k in ("image", "labels", input_pipeline.KEY, "mask")},
        batch_sharding)
    rows, ids, key, mask = multihost_utils.process_allgather(
        feature_step(params, batch), tiled=True)
    if features is None:  # the feature size is known from the first batch
      features = np.empty((eval_data.num_examples, rows.shape[1]), np.float32)
      labels = np.empty(eval_data.num_examples, ids.dtype)
      keys = np.empty((eval_data.num_examples, *key.shape[1:]), key.dtype)
    real = int(mask.sum())
    if count + real > eval_data.num_examples:
      raise ValueError(f"eval split {eval_data.split!r} gave more than its "
                       f"{eval_data.num_examples} examples")
    features[count:count + real] = rows[mask]
    labels[count:count + real] = ids[mask]
    keys[count:count + real] = key[mask]
    count += real
  if count != eval_data.num_examples:
    raise ValueError(f"eval split {eval_data.split!r} gave {count} of its "
                     f"{eval_data.num_examples} examples")
  order = np.lexsort(keys.T[::-1])  # by the high column, then the low one
  return features[order], labels[order]


def sample_shots(labels, shots, seed):
  """Indices of the first ``shots`` examples of each class in a seeded permutation.

  A class with fewer examples gives all it has (`short_classes`).
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


def short_classes(labels, shots, num_classes, *, where):
  """What a class of ``labels`` (class ids, the shots' split's) with fewer
  examples than the most of ``shots`` says (naming ``where`` the shots come
  from, `shots_from`, the class, its examples and the shots), or None.
  A class the split lacks has 0 examples."""
  counts = np.bincount(labels, minlength=num_classes)
  most = max(shots)
  short = np.flatnonzero(counts < most)
  if not short.size:
    return None
  fewest = int(short[np.argmin(counts[short])])
  others = (f" ({len(short)} of its {num_classes} classes have fewer than {most})"
            if len(short) > 1 else "")
  return (f"few-shot probes of {where}: class {fewest} has {counts[fewest]} example(s), "
          f"fewer than the {most} shots asked{others}")


def check_shots(labels, shots, num_classes, *, where):
  """Raises ValueError where `short_classes` finds a class short of the shots.

  A probe of k shots on a class with fewer uses what there is and is
  reported as k shots (big_vision's is): the `vit_jax.fewshot` command,
  whose table is what the user asked for, refuses that before it solves.
  """
  short = short_classes(labels, shots, num_classes, where=where)
  if short:
    fewest = np.bincount(labels, minlength=num_classes).min()
    advice = (f"ask for {fewest} shots or fewer, or draw them from a larger split"
              if fewest else "draw the shots from a split that holds every class")
    raise ValueError(f"{short}; a probe never reports a shot count it did not use: "
                     f"{advice}")


def probe_accuracies(train, test, *, shots, seeds, num_classes,
                     regulariser=DEFAULT_REGULARISER):
  """``{k: [accuracy of each seed]}`` for each k of ``shots``.

  What reports them as k-shot accuracies checks the shots first
  (`short_classes`): `run_probes`, the `vit_jax.fewshot` command.
  """
  return {k: [probe_accuracy(train, test, shots=k, seed=seed, num_classes=num_classes,
                             regulariser=regulariser) for seed in seeds]
          for k in shots}


def probe_accuracy(train, test, *, shots, seed, num_classes,
                   regulariser=DEFAULT_REGULARISER):
  """Test accuracy of a ridge probe on ``shots`` examples a class of ``train``.

  ``train`` and ``test`` are (features, class ids) pairs, as
  `extract_features` returns them. The test features are scored as they
  are: the standardisation and the bias feature are folded into the
  weights, ``((x - mean) / std) W + b W_b = x (W / std) + (b W_b - (mean /
  std) W)``, so no standardised copy of them is made.
  """
  train_x, train_y = train
  test_x, test_y = test
  picked = sample_shots(train_y, shots, seed)
  x = train_x[picked].astype(np.float32)
  mean, std = x.mean(axis=0), x.std(axis=0) + _STD_FLOOR
  x = np.concatenate([(x - mean) / std, np.full((len(x), 1), _BIAS_FEATURE, np.float32)],
                     axis=1)
  targets = 2.0 * np.eye(num_classes, dtype=np.float32)[train_y[picked]] - 1.0
  weights = ridge_weights(x, targets, regulariser)
  scaled = weights[:-1] / std[:, None]
  offset = _BIAS_FEATURE * weights[-1] - mean @ scaled
  predicted = np.argmax(test_x @ scaled + offset, axis=1)
  return float(np.mean(predicted == test_y))
