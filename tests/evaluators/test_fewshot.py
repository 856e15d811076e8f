"""Few-shot probes: the closed form, the protocol, exact features on any mesh, the
host memory they take, big_vision's default datasets and per-dataset shots, and
the probes a run makes: of other datasets, at its start, on resuming."""
import json
import os
import subprocess
import sys
import tracemalloc
import types

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import fake_data
from conftest import NUM_TEST, NUM_TRAIN, tiny_config
from configs import common, pretrain, transfer_datasets
from repo_root import REPO
from vit_jax import train
from vit_jax.data import input_pipeline, sources, splits
from vit_jax.evaluators import fewshot
from vit_jax.models import build, pretrained
from vit_jax.train import sharding


def saved_run(config, directory):
  """A run the probe command reads: ``config.json`` and fresh parameters as ``params.npz``."""
  from vit_jax.models import npz
  from vit_jax.train import workdir_files
  (directory / workdir_files.CONFIG_FILE).write_text(config.to_json_best_effort())
  params = build.init_params(build.model_from_config(config), config.image_size, seed=0)
  npz.save_npz(params, directory / "params.npz")
  return params


@pytest.mark.parametrize("n, d", [(12, 40), (40, 12)], ids=["fewer_shots", "fewer_dims"])
def test_both_eigendecomposition_branches_solve_the_ridge_normal_equations(n, d):
  rng = np.random.RandomState(0)
  x = rng.randn(n, d).astype(np.float64)
  y = rng.randn(n, 3)
  regulariser = 3.0
  expected = np.linalg.solve(x.T @ x + regulariser * np.eye(d), x.T @ y)
  weights = fewshot.ridge_weights(x.astype(np.float32), y.astype(np.float32), regulariser)
  np.testing.assert_allclose(weights, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def clustered(rng, num_classes, per_class, dims, spread):
  """Features of ``num_classes`` Gaussian clusters, and their class ids."""
  centres = rng.randn(num_classes, dims) * 3
  labels = np.repeat(np.arange(num_classes), per_class)
  return (centres[labels] + spread * rng.randn(len(labels), dims)).astype(np.float32), labels


def test_separable_features_reach_full_accuracy():
  rng = np.random.RandomState(0)
  train = clustered(rng, 5, 30, 16, 0.0)
  test = (train[0][::-1].copy(), train[1][::-1].copy())  # the same clusters, reordered
  assert fewshot.probe_accuracy(train, test, shots=5, seed=0, num_classes=5) == 1.0


def accuracies_before_and_after(change, regulariser=fewshot.DEFAULT_REGULARISER):
  """A probe's accuracy on 4 shuffled clusters of 24-d features, then on the
  same features after ``change(features, rng)``, of train and test alike."""
  rng = np.random.RandomState(1)
  features, labels = clustered(rng, 4, 60, 24, 8.0)
  order = rng.permutation(len(labels))
  features, labels = features[order], labels[order]
  changed = change(features, rng)
  accuracies = [fewshot.probe_accuracy((x[:120], labels[:120]), (x[120:], labels[120:]),
                                       shots=10, seed=0, num_classes=4,
                                       regulariser=regulariser)
                for x in (features, changed)]
  assert 0.3 < accuracies[0] < 1.0  # a probe that can err, so a change would show
  return accuracies


def test_accuracy_does_not_change_when_features_are_rescaled_per_dimension():
  before, after = accuracies_before_and_after(
      lambda x, rng: x * rng.uniform(0.01, 100, size=24).astype(np.float32))
  assert before == after


@pytest.mark.parametrize("regulariser", [fewshot.DEFAULT_REGULARISER, 2.0 ** 20])
def test_accuracy_does_not_change_when_features_are_shifted_per_dimension(regulariser):
  """The shots' own mean is taken off before the solve, and the test features,
  scored as they are, get ``- mean @ W / std`` back in the offset: a shift of
  every feature changes nothing. Uncentred, the shift s would act on the
  scores through the shots' class sums: under a strong regulariser (W ~
  A^T Y / r) each class c gains a constant ~ (s / std) . (sum of its shots /
  std), which at |s| ~ 100 outweighs the features (measured: 0.65 -> 0.25, and
  0.25 too with the mean's sign flipped in the offset)."""
  before, after = accuracies_before_and_after(
      lambda x, rng: x + rng.uniform(-100, 100, size=24).astype(np.float32), regulariser)
  assert before == after


def test_a_probe_is_ridge_on_features_standardised_on_the_shots_and_a_bias_feature_of_100():
  rng = np.random.RandomState(2)
  features, labels = clustered(rng, 3, 40, 8, 6.0)
  features += rng.uniform(-5, 5, size=8).astype(np.float32)  # far from standardised
  few = (labels[::2] != 2) | (np.cumsum(labels[::2] == 2) <= 6)
  # 10 shots of classes 0 and 1, 6 of class 2: the bias feature's value matters
  train, test = (features[::2][few], labels[::2][few]), (features[1::2], labels[1::2])
  picked = fewshot.sample_shots(train[1], 10, seed=3)
  assert np.bincount(train[1][picked]).tolist() == [10, 10, 6]
  x = train[0][picked].astype(np.float64)
  mean, std = x.mean(axis=0), x.std(axis=0) + 1e-5

  def standardised(v):
    return np.concatenate([(v - mean) / std, np.full((len(v), 1), 100.0)], axis=1)

  targets = 2.0 * np.eye(3)[train[1][picked]] - 1.0
  a = standardised(x)
  weights = np.linalg.solve(a.T @ a + 1024 * np.eye(9), a.T @ targets)
  expected = np.mean(np.argmax(standardised(test[0]) @ weights, axis=1) == test[1])
  assert 0.3 < expected < 1.0
  assert fewshot.probe_accuracy(train, test, shots=10, seed=3, num_classes=3) == expected


def test_the_same_seed_gives_the_same_shots_and_k_of_each_class():
  labels = np.random.RandomState(0).randint(0, 7, 500)
  first, again, other = (fewshot.sample_shots(labels, 5, seed) for seed in (0, 0, 1))
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)
  assert np.bincount(labels[first], minlength=7).tolist() == [5] * 7


def test_a_class_with_fewer_examples_than_the_shots_is_named_not_probed_with_fewer():
  """big_vision probes such a class on what it has and reports k shots; a
  probe here never reports a shot count it did not use."""
  where = "dataset 'd', split 'train[:33]'"
  fewshot.check_shots(np.repeat(np.arange(4), 5), (1, 5), 4, where=where)  # enough
  for counts, message in (
      ([10, 10, 3, 10], "class 2 has 3 example(s), fewer than the 5 shots asked; a probe "
                        "never reports a shot count it did not use: ask for 3 shots or "
                        "fewer, or draw them from a larger split"),
      ([10, 4, 3, 10], "class 2 has 3 example(s), fewer than the 5 shots asked (2 of its 4 "
                       "classes have fewer than 5); a probe never reports a shot count it "
                       "did not use: ask for 3 shots or fewer, or draw them from a larger "
                       "split"),
      ([10, 10, 10, 0], "class 3 has 0 example(s), fewer than the 5 shots asked; a probe "
                        "never reports a shot count it did not use: draw the shots from a "
                        "split that holds every class")):
    with pytest.raises(ValueError) as error:
      fewshot.check_shots(np.repeat(np.arange(4), counts), (1, 5), 4, where=where)
    assert str(error.value) == f"few-shot probes of {where}: {message}"


def test_a_runs_probe_logs_a_class_with_fewer_examples_than_its_shots_and_probes_on(
    fashion_data_dir, caplog):
  """The split's size allows the shots (10 classes x k <= its 512 images), so
  only its labels show the class that lacks them: a run's probe names it in
  the log and probes with what it has, as big_vision's does."""
  config = tiny_config(fashion_data_dir, **{"fewshot.every": 4})
  labels = np.array([example["label"] for example in tfds.as_numpy(
      sources.get_builder(config.data).as_dataset(split="train"))])
  counts = np.bincount(labels, minlength=10)
  shots = int(counts.min()) + 1
  assert 10 * shots <= NUM_TRAIN
  probe, = fewshot.probe_sets(config, shots=(1, shots)).values()
  model = build.model_from_config(config)
  with caplog.at_level("WARNING"):
    metrics = fewshot.run_probes(
        fewshot.make_feature_step(model), build.init_params(model, config.image_size, seed=0),
        probe.data, sharding.batch_sharding(sharding.make_mesh(config.mesh)),
        shots=probe.shots, seeds=(0,), num_classes=10)
  assert f"{shots}shot" in metrics
  assert (f"few-shot probes of dataset 'fashion_mnist_local', split 'train': class "
          f"{np.argmin(counts)} has {counts.min()} example(s), fewer than the {shots} shots "
          f"asked; its {shots}-shot probes use what that class has") in caplog.text


def test_a_runs_probe_draws_shots_from_train_scores_test_and_averages_the_seeds(monkeypatch):
  """`run_probes`'s wiring, the features given: each k-shot figure is the mean
  over the seeds of `probe_accuracy` (pinned above) with the shots drawn from
  the "train" split, scored on the "test" one, at the regulariser asked. The
  splits differ in size and the seeds in accuracy, so shots drawn from the
  test split, one seed reported, or the default regulariser would show."""
  rng = np.random.RandomState(4)
  features, labels = clustered(rng, 4, 40, 16, 7.0)
  order = rng.permutation(len(labels))
  features, labels = features[order], labels[order]
  splits = {"train": (features[:60], labels[:60]), "test": (features[60:], labels[60:])}
  monkeypatch.setattr(fewshot, "extract_features",
                      lambda step, params, data, batch_sharding: splits[data.split])
  data = {name: types.SimpleNamespace(dataset="d", split=name) for name in splits}
  metrics = fewshot.run_probes(None, None, data, None, shots=(1, 5), seeds=(0, 1, 2),
                               num_classes=4, regulariser=4.0)

  def by_seed(train, test, k, regulariser=4.0):
    return [fewshot.probe_accuracy(train, test, shots=k, seed=seed, num_classes=4,
                                   regulariser=regulariser) for seed in (0, 1, 2)]

  expected = {k: by_seed(splits["train"], splits["test"], k) for k in (1, 5)}
  assert set(metrics) == {"1shot", "5shot", "seconds"} and metrics["seconds"] >= 0
  for k in (1, 5):
    assert len(set(expected[k])) > 1  # the seeds disagree: their mean is not one of them
    assert metrics[f"{k}shot"] == np.mean(expected[k])
    assert metrics[f"{k}shot"] != np.mean(by_seed(splits["test"], splits["train"], k))
  assert metrics["1shot"] != np.mean(by_seed(splits["train"], splits["test"], 1,
                                             fewshot.DEFAULT_REGULARISER))


@pytest.mark.parametrize("split, shots, advice", [
    ("train[:200]", 10000, "ask for 20 shots or fewer, or draw the shots from a larger split"),
    ("train[:3]", 5, "draw the shots from a larger split")])
def test_the_command_refuses_more_shots_than_its_split_holds_before_it_probes(
    fashion_data_dir, tmp_path, capsys, split, shots, advice):
  from vit_jax import fewshot as fewshot_command
  from vit_jax.runtime import cli
  saved_run(tiny_config(fashion_data_dir), tmp_path)
  with pytest.raises(SystemExit) as error:
    cli.call(fewshot_command.main, fewshot_command.FLAGS, [
        "fewshot", f"--workdir={tmp_path}", f"--checkpoint={tmp_path / 'params.npz'}",
        "--datasets=", f"--train_split={split}", f"--shots={shots}", "--seeds=0"])
  examples = int(split[len("train[:"):-1])
  assert str(error.value) == (
      f"error: few-shot probes of dataset 'fashion_mnist_local', split {split!r}: {shots} "
      f"shots (--shots) of each of its 10 classes need {10 * shots} examples, and the "
      f"split has {examples}, so some class has fewer than {shots}; a probe never reports "
      f"a shot count it did not use: {advice}")
  assert capsys.readouterr().out == ""  # no row of shots that were not used


def test_a_shots_split_of_exactly_the_shots_times_the_classes_is_not_refused():
  """5 shots of 10 classes need 50 examples: a split of 50 may hold them all
  (`check_shots` tells once the labels are read); one of 49 cannot."""
  def probe(num_examples):
    train = types.SimpleNamespace(dataset="d", split="train[:N]", num_examples=num_examples)
    return fewshot.ProbeSet(fewshot.SPLIT, {"train": train}, 10, (1, 5))

  fewshot.check_split_size(probe(50), "config.fewshot.shots")
  with pytest.raises(ValueError, match=r"need 50 examples, and the split has 49, so some "
                                       r"class has fewer than 5; .* ask for 4 shots or fewer"):
    fewshot.check_split_size(probe(49), "config.fewshot.shots")


def test_a_runs_own_probes_are_scored_on_its_eval_split_named_test_not_its_last():
  """Of eval splits {test, val} (a ConfigDict orders them by name, so val is
  last) the probes score 'test'; without one named 'test', the last; the
  shots come from the training split unless config.fewshot names others."""
  config = tiny_config("/nowhere", **{"data.eval_splits": {"test": "test",
                                                           "val": "train[90%:]"}})
  assert fewshot.probe_splits(config) == {"train": "train", "test": "test"}
  config = tiny_config("/nowhere", **{"data.eval_splits": {"minival": "train[90%:]",
                                                           "val": "train[:5%]"}})
  assert fewshot.probe_splits(config) == {"train": "train", "test": "train[:5%]"}
  config = tiny_config("/nowhere", **{"fewshot.train_split": "train[5%:]",
                                      "fewshot.test_split": "train[:5%]"})
  assert fewshot.probe_splits(config) == {"train": "train[5%:]", "test": "train[:5%]"}


def test_a_run_whose_shots_outnumber_its_probe_split_stops_before_anything_is_written(
    fashion_data_dir, tmp_path):
  workdir = tmp_path / "run"
  config = tiny_config(fashion_data_dir, **{"fewshot.every": 4, "fewshot.shots": (1, 5),
                                            "fewshot.train_split": "train[:30]"})
  with pytest.raises(ValueError) as error:
    train.train_and_evaluate(config, str(workdir))
  assert str(error.value) == (
      "few-shot probes of dataset 'fashion_mnist_local', split 'train[:30]': 5 shots "
      "(config.fewshot.shots) of each of its 10 classes need 50 examples, and the split "
      "has 30, so some class has fewer than 5; a probe never reports a shot count it did "
      "not use: ask for 3 shots or fewer, or draw the shots from a larger split")
  assert not workdir.exists()


def features_on(devices, config, params, source):
  mesh = sharding.make_mesh(config.mesh, devices)
  eval_data = input_pipeline.EvalData(source, config.pp.eval, "test",
                                      image_size=config.image_size, global_batch=config.eval_batch, keyed=True)
  model = build.model_from_config(config)
  return fewshot.extract_features(fewshot.make_feature_step(model), params, eval_data,
                                  sharding.batch_sharding(mesh))


def test_features_on_eight_devices_equal_those_on_one(fashion_data_dir):
  config = tiny_config(fashion_data_dir, **{"model.representation_size": 24})
  model = build.model_from_config(config)
  params = build.init_params(model, config.image_size, seed=0)
  source = sources.get_source(config.data)
  one = features_on(jax.devices()[:1], config, params, source)
  eight = features_on(jax.devices()[:8], config, params, source)
  assert one[0].shape == (NUM_TEST, 24)  # the representation layer's output, every example once
  np.testing.assert_allclose(eight[0], one[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(eight[1], one[1])


def test_the_keys_that_order_the_features_keep_their_62_bits_through_the_devices(
    fashion_data_dir):
  """JAX keeps integers in 32 bits: a 62-bit key cut to 32 would collide in
  a split of 65,000 examples once in two, and the order of the colliding
  ones would depend on the process count."""
  config = tiny_config(fashion_data_dir)
  source = sources.get_source(config.data)
  eval_data = input_pipeline.EvalData(source, config.pp.eval, "test",
                                      image_size=config.image_size, global_batch=config.eval_batch, keyed=True)
  batch_sharding = sharding.batch_sharding(sharding.make_mesh(config.mesh))
  feature_step = fewshot.make_feature_step(build.model_from_config(config))
  params = build.init_params(build.model_from_config(config), config.image_size, seed=0)
  host_keys, device_keys = [], []
  for host_batch in eval_data:
    host_keys.append(host_batch[input_pipeline.KEY][host_batch["mask"]])
    batch = input_pipeline.to_global(host_batch, batch_sharding)
    _, _, key, mask = jax.device_get(feature_step(params, batch))
    device_keys.append(key[mask])
  host_keys, device_keys = np.concatenate(host_keys), np.concatenate(device_keys)
  np.testing.assert_array_equal(device_keys, host_keys)
  assert host_keys.dtype == np.int32 and host_keys.min() >= 0
  full = host_keys[:, 0].astype(np.int64) * 2 ** 31 + host_keys[:, 1]
  assert len(set(full)) == NUM_TEST and full.max() > 2 ** 40  # 62 bits, not 32
  _, labels = fewshot.extract_features(feature_step, params, eval_data, batch_sharding)
  all_labels = np.concatenate([np.argmax(b["labels"][b["mask"]], -1) for b in eval_data])
  np.testing.assert_array_equal(labels, all_labels[np.argsort(full)])


def test_features_are_one_array_and_hold_the_host_to_two_rows_an_example(fashion_data_dir):
  """The features, their sorted copy and a few ints an example: a list of
  per-example rows (an object each) measures 370 bytes an example, over the bound."""
  config = tiny_config(fashion_data_dir, **{"model.representation_size": 32})
  model = build.model_from_config(config)
  params = build.init_params(model, config.image_size, seed=0)
  source = sources.get_source(config.data)
  feature_step = fewshot.make_feature_step(model)
  # One device: what the host holds does not depend on the mesh (tested above).
  batch_sharding = sharding.batch_sharding(sharding.make_mesh(config.mesh,
                                                              jax.devices()[:1]))

  def traced_peak(split):
    eval_data = input_pipeline.EvalData(source, config.pp.eval, split,
                                        image_size=config.image_size, global_batch=config.eval_batch, keyed=True)
    tracemalloc.start()
    try:
      before = tracemalloc.get_traced_memory()[0]
      features, labels = fewshot.extract_features(feature_step, params, eval_data,
                                                  batch_sharding)
      return tracemalloc.get_traced_memory()[1] - before, features, labels
    finally:
      tracemalloc.stop()

  traced_peak("train[:40]")  # compiled outside the measurement
  # The least of three peaks each: what other threads allocate meanwhile
  # (those an earlier test of the suite left running) only ever adds to one;
  # with two, a CI run once measured 344 bytes an example.
  small = min(traced_peak("train[:64]")[0] for _ in range(3))
  large_peak, features, labels = traced_peak("train[:512]")
  large_peak = min(large_peak, *(traced_peak("train[:512]")[0] for _ in range(2)))
  assert type(features) is np.ndarray and features.flags.c_contiguous
  assert features.shape == (512, 32) and features.dtype == np.float32
  assert type(labels) is np.ndarray and labels.shape == (512,)
  row = 32 * 4
  per_example = (large_peak - small) / (512 - 64)
  # Below: the features are there (tracemalloc's peaks jitter by a few
  # hundred bytes a run, so not a whole row); above: nothing per example
  # beyond them and their sorted copy.
  assert row / 2 <= per_example <= 2 * row + 64, per_example


def test_the_command_probes_a_saved_model_and_prints_a_row_per_shot_count(
    fashion_data_dir, tmp_path, capsys):
  from vit_jax import fewshot as fewshot_command
  from vit_jax.runtime import cli
  config = tiny_config(fashion_data_dir)
  params = saved_run(config, tmp_path)
  cli.call(fewshot_command.main, fewshot_command.FLAGS, [
      "fewshot", f"--workdir={tmp_path}", f"--checkpoint={tmp_path / 'params.npz'}",
      "--shots=1,5", "--seeds=0,1"])
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].startswith("fashion_mnist_local: shots from train (512 images), "
                             "scored on test (103); features in ")
  assert lines[1].split() == ["dataset", "shots", "accuracy", "std", "seeds"]
  source = sources.get_source(config.data)
  features = {}
  for split in ("train", "test"):
    eval_data = input_pipeline.EvalData(source, config.pp.eval, split,
                                        image_size=config.image_size, global_batch=config.eval_batch, keyed=True)
    features[split] = fewshot.extract_features(
        fewshot.make_feature_step(build.model_from_config(config)), params, eval_data,
        sharding.batch_sharding(sharding.make_mesh(config.mesh)))
  for line, shots in zip(lines[2:], (1, 5)):
    accuracies = [fewshot.probe_accuracy(features["train"], features["test"], shots=shots,
                                         seed=seed, num_classes=10) for seed in (0, 1)]
    # The sample std over seeds, as the transfer table's (ddof=1).
    assert line.split() == ["fashion_mnist_local", str(shots), f"{np.mean(accuracies):.2%}",
                            f"{np.std(accuracies, ddof=1):.2%}", "0,1"]
  assert len(lines) == 4


@pytest.mark.parametrize("flag, value, message", [
    ("shots", "0,5", "--shots=0,5: expected one or more integers >= 1"),
    ("shots", "", "--shots=: expected one or more integers >= 1"),
    ("shots", "five", "--shots=five: expected one or more integers >= 1"),
    ("seeds", "-1", "--seeds=-1: expected one or more integers >= 0"),
])
def test_the_command_refuses_shots_below_1_and_seeds_below_0_naming_the_flag(
    flag, value, message, tmp_path):
  from vit_jax import fewshot as fewshot_command
  from vit_jax.runtime import cli
  with pytest.raises(SystemExit) as error:
    cli.call(fewshot_command.main, fewshot_command.FLAGS,
             ["fewshot", f"--workdir={tmp_path}", f"--{flag}={value}"])
  assert str(error.value) == f"error: {message}"


def test_a_probe_dataset_is_read_with_the_runs_eval_ops_and_its_own_class_count():
  assert fewshot.with_num_classes(
      "decode|resize(16)|value_range(-1,1)|onehot(10)", 5) == (
          "decode|resize(16)|value_range(-1,1)|onehot(5)")
  assert fewshot.with_num_classes("decode|onehot(num_classes=3, on=0.9)", 37) == (
      "decode|onehot(37, on=0.9)")
  with pytest.raises(ValueError, match=r"config.pp.eval='decode\|resize\(16\)' has no "
                     r"onehot op; the few-shot probes read each example's class from it"):
    fewshot.with_num_classes("decode|resize(16)", 5)


def test_an_entry_may_name_its_own_shots_and_a_bad_one_names_the_forms():
  assert fewshot.parse_entry("cifar100") == ("cifar100", None)
  assert fewshot.parse_entry("imagenet2012:10") == ("imagenet2012", (10,))
  assert fewshot.parse_entry("imagenet2012:5/10") == ("imagenet2012", (5, 10))
  for bad in ("imagenet2012:", "imagenet2012:ten", "imagenet2012:0", ":10", "a:5,10"):
    with pytest.raises(ValueError) as e:
      fewshot.parse_entry(bad)
    assert str(e.value) == (
        f"config.fewshot.datasets entry {bad!r}: expected a preset name, or 'name:K' "
        f"with its own shot counts K >= 1 joined by '/' (e.g. 'imagenet2012:10', "
        f"'imagenet2012:5/10')")
  config = tiny_config("/nowhere", **{"fewshot.datasets": ("digits", "digits:5")})
  with pytest.raises(ValueError, match=r"config.fewshot.datasets=\('digits', 'digits:5'\) "
                     r"names digits more than once; give each dataset one entry"):
    fewshot.probe_sets(config)


# big_vision's few-shot splits (configs/common_fewshot.py there), in examples.
BIG_VISION_SPLITS = {
    "caltech101": (3_060, 6_084), "cars196": (8_144, 8_041), "cifar100": (50_000, 10_000),
    "dtd": (1_880, 1_880), "oxford_iiit_pet": (3_680, 3_669), "uc_merced": (1_000, 1_100),
    "imagenet2012": (65_000, 50_000)}


def test_pretraining_probes_big_visions_datasets_on_its_splits_imagenet_at_10_shots():
  config = pretrain.get_config("variant=Ti/16")
  assert config.fewshot.every == 0  # off unless asked: the datasets need preparing
  assert config.fewshot.datasets == transfer_datasets.FEWSHOT_DATASETS
  config = pretrain.get_config("variant=Ti/16,fewshot_imagenet=True")
  assert config.fewshot.datasets[-1] == transfer_datasets.FEWSHOT_IMAGENET
  entries = dict(map(fewshot.parse_entry, config.fewshot.datasets))
  assert entries == {**dict.fromkeys(BIG_VISION_SPLITS), "imagenet2012": (10,)}
  for name, expected in BIG_VISION_SPLITS.items():
    data = fewshot.probe_data_config(config, name)
    probed = [data.train_split, dict(data.eval_splits)["test"]]
    sizes = common.DATASETS[name]["published_sizes"]
    assert tuple(splits.examples_in_split(s, sizes) for s in probed) == expected, name
  assert probed == ["train[:65000]", "validation"]  # ImageNet's, the last


def test_big_visions_datasets_missing_are_named_at_start_with_their_prepare_commands(
    tmp_path):
  config = pretrain.get_config(f"variant=Ti/16,data_dir={tmp_path},fewshot_imagenet=True")
  with pytest.raises(sources.DatasetNotPreparedError) as e:
    fewshot.probe_sets(config)
  message = str(e.value)
  assert message.startswith("config.fewshot.datasets: 7 of 7 few-shot dataset(s) "
                            "cannot be read:\n"), message
  for name in BIG_VISION_SPLITS:
    preset = common.DATASETS[name]
    # A registered builder of that version, found not prepared:
    assert (f"\n  {name}: dataset {preset['tfds_name']!r} (config.data.name) is not "
            f"prepared in data_dir {str(tmp_path)!r}") in message
    assert preset["prepare"] in message


PROBED = ("fashion_mnist_last5", "digits")


@pytest.fixture(scope="module")
def probe_data_dir(tmp_path_factory):
  """A data_dir with the tiny run's Fashion-MNIST and two datasets it does not
  train on: the fake files' classes 5-9 (`fashion_mnist_halves/last5`) and
  sklearn's digits (its bundled file, as users build it)."""
  manual_dir = tmp_path_factory.mktemp("probe_manual")
  data_dir = tmp_path_factory.mktemp("probe_tfds")
  fake_data.write_fashion_mnist_files(manual_dir, num_train=NUM_TRAIN, num_test=NUM_TEST)
  fake_data.build_fashion_mnist(manual_dir, data_dir)
  for name in ("fashion_mnist_halves/last5", "sklearn_digits"):
    tfds.builder(name, data_dir=str(data_dir)).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return str(data_dir)


def probe_config(data_dir, **overrides):
  return tiny_config(data_dir, **{"fewshot.every": 4, "fewshot.at_start": True,
                                  "fewshot.datasets": PROBED, "fewshot.shots": (1, 5),
                                  "fewshot.seeds": (0, 1), **overrides})


def by_hand(config, params, name, *, shots, seeds, regulariser=fewshot.DEFAULT_REGULARISER,
            feature_step=None):
  """{k: mean accuracy} of the preset ``name``, its features made with an eval
  spec written out here (its own class count), on its few-shot splits
  (``fewshot_splits``, else train and test)."""
  preset = common.DATASETS[name]
  splits = preset.get("fewshot_splits") or {"train": "train", "test": "test"}
  source = sources.get_source(common.dataset_config(name, data_dir=config.data.data_dir))
  spec = f"decode|resize(16)|value_range(-1,1)|onehot({preset['num_classes']})"
  feature_step = feature_step or fewshot.make_feature_step(build.model_from_config(config))
  features = {split: fewshot.extract_features(
      feature_step, params,
      input_pipeline.EvalData(source, spec, splits[split], image_size=config.image_size, global_batch=40, keyed=True),
      sharding.batch_sharding(sharding.make_mesh(config.mesh)))
      for split in ("train", "test")}
  return {k: np.mean([fewshot.probe_accuracy(
      features["train"], features["test"], shots=k, seed=seed,
      num_classes=preset["num_classes"], regulariser=regulariser) for seed in seeds])
      for k in shots}


def probe_records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"].startswith("fewshot")]


@pytest.mark.slow
def test_a_run_probes_other_datasets_from_step_0_at_their_shots_as_done_by_hand(
    probe_data_dir, tmp_path):
  config = probe_config(probe_data_dir, total_steps=4,
                        **{"fewshot.datasets": ("fashion_mnist_last5", "digits:5")})
  workdir = str(tmp_path / "run")
  summary = train.train_and_evaluate(config, workdir)
  records = probe_records(workdir)
  assert [(r["step"], r["split"]) for r in records] == [
      (0, "fewshot/fashion_mnist_last5"), (0, "fewshot/digits"),
      (4, "fewshot/fashion_mnist_last5"), (4, "fewshot/digits")]
  for record in records[:2]:  # before training: no cost yet
    assert record["examples_seen"] == 0 and record["tpuv3_core_days"] == 0
    assert record["core_days"] == 0 and record["seconds"] > 0
  assert records[2]["examples_seen"] == 4 * 32
  model = build.model_from_config(config)
  feature_step = fewshot.make_feature_step(model)  # compiled once for the four
  initial = build.init_params(model, config.image_size, seed=config.seed)
  shots = {"fashion_mnist_last5": (1, 5), "digits": (5,)}  # config.fewshot.shots, its own
  for step, params in ((0, initial), (4, pretrained.read_params(workdir))):
    for record in (r for r in records if r["step"] == step):
      name = record["split"].partition("/")[2]
      expected = by_hand(config, params, name, shots=shots[name], seeds=(0, 1),
                         feature_step=feature_step)
      assert {k: v for k, v in record.items() if k.endswith("shot")} == {
          f"{k}shot": expected[k] for k in shots[name]}, name
  assert summary["fewshot/digits"]["5shot"] == records[3]["5shot"]
  assert 0.15 < records[1]["5shot"] < 1.0  # a probe of 10 classes that can err


def test_a_missing_probe_dataset_stops_the_run_before_anything_is_written(
    fashion_data_dir, tmp_path):
  workdir = tmp_path / "run"
  with pytest.raises(sources.DatasetNotPreparedError) as e:
    train.train_and_evaluate(probe_config(fashion_data_dir), str(workdir))
  message = str(e.value)
  assert message.startswith("config.fewshot.datasets: 2 of 2 few-shot dataset(s) "
                            "cannot be read:\n  fashion_mnist_last5: dataset "
                            "'fashion_mnist_halves/last5'"), message
  assert "\n  digits: dataset 'sklearn_digits'" in message
  assert "python scripts/prepare_data.py --dataset=sklearn_digits" in message
  assert not workdir.exists()


class Stopped(Exception):
  pass


@pytest.mark.slow
def test_a_resumed_run_probes_the_steps_an_uninterrupted_run_probes_once_each(
    probe_data_dir, tmp_path, monkeypatch):
  config = probe_config(probe_data_dir, total_steps=12,
                        **{"fewshot.datasets": PROBED[:1], "fewshot.seeds": (0,)})
  workdir = str(tmp_path / "run")
  real_batches = input_pipeline.train_batches

  def dying_batches(*args, **kwargs):
    for index, batch in enumerate(real_batches(*args, **kwargs)):
      if index == 7:  # the step-6 batch: probed at 0 and 4, checkpointed at 4
        raise Stopped()
      yield batch

  monkeypatch.setattr(input_pipeline, "train_batches", dying_batches)
  with pytest.raises(Stopped):
    train.train_and_evaluate(config, workdir)
  assert [r["step"] for r in probe_records(workdir)] == [0, 4]
  monkeypatch.setattr(input_pipeline, "train_batches", real_batches)
  train.train_and_evaluate(config, workdir)  # resumes at 4, a probe step
  assert [r["step"] for r in probe_records(workdir)] == [0, 4, 8, 12]
  last = probe_records(workdir)[-1]
  summary = train.train_and_evaluate(config, workdir)  # a finished run
  assert [r["step"] for r in probe_records(workdir)] == [0, 4, 8, 12]
  assert summary["fewshot/fashion_mnist_last5"]["5shot"] == last["5shot"]


def test_the_command_probes_the_datasets_named_at_their_shots_with_the_runs_regulariser(
    probe_data_dir, tmp_path, capsys):
  from vit_jax import fewshot as fewshot_command
  from vit_jax.runtime import cli
  config = probe_config(probe_data_dir, **{"fewshot.regulariser": 4.0})
  params = saved_run(config, tmp_path)
  cli.call(fewshot_command.main, fewshot_command.FLAGS, [
      "fewshot", f"--workdir={tmp_path}", f"--checkpoint={tmp_path / 'params.npz'}",
      "--datasets=digits:5", "--shots=1,10", "--seeds=0,1"])
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].startswith("digits: shots from train (1297 images), scored on test "
                             "(500); features in ")
  expected = by_hand(config, params, "digits", shots=(5,), seeds=(0, 1), regulariser=4.0)
  assert lines[2].split()[:3] == ["digits", "5", f"{expected[5]:.2%}"]
  assert len(lines) == 3


def test_a_preset_entrys_own_shots_are_named_where_its_split_cannot_hold_them(
    probe_data_dir):
  with pytest.raises(ValueError) as error:
    fewshot.probe_sets(probe_config(probe_data_dir), datasets=("digits:200",),
                       datasets_field="--datasets")
  assert str(error.value) == (
      "few-shot probes of dataset 'digits', split 'train': 200 shots (--datasets entry "
      "'digits:200') of each of its 10 classes need 2000 examples, and the split has "
      "1297, so some class has fewer than 200; a probe never reports a shot count it did "
      "not use: ask for 129 shots or fewer, or draw the shots from a larger split")


def test_plot_metrics_draws_a_few_shot_line_per_probed_dataset(tmp_path):
  from scripts import plot_metrics
  records = [{"step": s, "split": f"fewshot/{name}", "10shot": accuracy,
              "tpuv3_core_days": s * 1e-6}
             for s, digits in ((0, 0.3), (600, 0.9))
             for name, accuracy in (("digits", digits), ("fashion_mnist_last5", 0.4))]
  (tmp_path / "metrics.jsonl").write_text("\n".join(map(json.dumps, records)))
  loaded = plot_metrics.read_metrics(str(tmp_path))
  title, split, keys = plot_metrics.ROWS[2]
  assert title == "few-shot accuracy"
  assert plot_metrics.series(loaded, split, keys, "tpuv3_core_days") == {
      "digits 10shot": ([0.0, 6e-4], [0.3, 0.9]),
      "fashion_mnist_last5 10shot": ([0.0, 6e-4], [0.4, 0.4])}
  assert plot_metrics.series(loaded, "eval", ("top1", "prec@1"), "step") == {}
  plot_metrics.plot([str(tmp_path)], str(tmp_path / "m.png"))
  assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("value", ["0", "-1"])
def test_the_command_refuses_a_regulariser_the_config_refuses_naming_the_flag(
    value, tmp_path):
  from vit_jax import fewshot as fewshot_command
  from vit_jax.runtime import cli
  with pytest.raises(SystemExit) as error:
    cli.call(fewshot_command.main, fewshot_command.FLAGS,
             ["fewshot", f"--workdir={tmp_path}", f"--regulariser={value}"])
  assert str(error.value) == (f"error: --regulariser={float(value):g} must be > 0 "
                              f"(the ridge regulariser)")


@pytest.mark.parametrize("entries, message", [
    ("digits:x", "--datasets entry 'digits:x': expected a preset name, or 'name:K' with "
     "its own shot counts K >= 1 joined by '/' (e.g. 'imagenet2012:10', "
     "'imagenet2012:5/10')"),
    ("digits,digits:5", "--datasets=('digits', 'digits:5') names digits more than once; "
     "give each dataset one entry"),
])
def test_the_command_names_its_datasets_flag_in_an_entrys_error(entries, message, tmp_path):
  from vit_jax import fewshot as fewshot_command
  from vit_jax.runtime import cli
  from vit_jax.train import workdir_files
  config = tiny_config(str(tmp_path / "no_data"))
  (tmp_path / workdir_files.CONFIG_FILE).write_text(config.to_json_best_effort())
  with pytest.raises(SystemExit) as error:
    cli.call(fewshot_command.main, fewshot_command.FLAGS,
             ["fewshot", f"--workdir={tmp_path}", f"--datasets={entries}"])
  assert str(error.value) == f"error: {message}"


def test_datasets_given_by_hand_probe_their_presets_whatever_splits_the_run_probed(
    probe_data_dir):
  """The command's --datasets on a run that probed a slice of its own data:
  the run's splits do not apply to other datasets, and are no error there."""
  config = probe_config(probe_data_dir, **{"fewshot.datasets": (),
                                           "fewshot.train_split": "train[:50%]"})
  probes = fewshot.probe_sets(config, datasets=("digits",), splits={},
                              datasets_field="--datasets")
  assert list(probes) == ["fewshot/digits"]
  assert probes["fewshot/digits"].data["train"].split == "train"
  with pytest.raises(ValueError, match=r"^config.fewshot.train_split='train\[:50%\]' chooses "
                                       r"a split of the run's own data, but "
                                       r"--datasets=\('digits',\) probes other datasets"):
    fewshot.probe_sets(config, datasets=("digits",), datasets_field="--datasets")


def test_a_multi_label_runs_own_data_is_refused_for_probes_naming_the_field(tmp_path):
  config = tiny_config(str(tmp_path / "no_data"), **{"fewshot.every": 4,
                                                     "data.multi_label": True})
  with pytest.raises(ValueError) as error:
    fewshot.probe_sets(config)
  assert str(error.value) == (
      "config.fewshot.datasets=() probes the run's own data, and 'fashion_mnist_local' is "
      "multi-label (config.data.multi_label); a few-shot probe needs one class an image: "
      "name single-label presets there, e.g. ('imagenet2012', 'cifar100')")


@pytest.mark.slow
def test_the_probe_benchmark_runs_and_refuses_counts_below_one(fashion_data_dir):
  """scripts/benchmark_fewshot.py, tiny: one JSON line per --num_train and the
  per-example line; its own code, run in a fresh process as a user runs it."""
  command = [sys.executable, os.path.join(REPO, "scripts", "benchmark_fewshot.py"),
             "--variant=Ti/16", "--image_size=16", "--num_train=16,32", "--num_test=8",
             "--devices=2", "--batch=8", f"--data_dir={fashion_data_dir}"]
  result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)
  assert result.returncode == 0, result.stderr[-2000:]
  rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
  assert [row.get("num_train") for row in rows] == [16, 32, None]
  assert [row["examples"] for row in rows[:2]] == [24, 40]
  assert set(rows[0]["accuracy"]) == {"1shot", "5shot", "10shot", "25shot"}
  refused = subprocess.run(command[:4] + ["--num_train=-5"], capture_output=True, text=True,
                           timeout=120, cwd=REPO)
  assert refused.returncode != 0
  assert refused.stderr.strip().splitlines()[-1] == (
      "error: --num_train=-5: expected counts of 1 or more")
