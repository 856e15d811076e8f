"""Few-shot probes: the closed form, the protocol, and exact features on any mesh."""
import jax
import numpy as np
import pytest

from conftest import tiny_config
from vit_jax.data import input_pipeline, sources
from vit_jax.evaluators import fewshot
from vit_jax.models import build
from vit_jax.train import sharding


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


def test_accuracy_does_not_change_when_features_are_rescaled_per_dimension():
  rng = np.random.RandomState(1)
  features, labels = clustered(rng, 4, 60, 24, 8.0)
  order = rng.permutation(len(labels))
  features, labels = features[order], labels[order]
  train, test = (features[:120], labels[:120]), (features[120:], labels[120:])
  scale = rng.uniform(0.01, 100, size=24).astype(np.float32)
  accuracies = [fewshot.probe_accuracy((x_train, train[1]), (x_test, test[1]), shots=10,
                                       seed=0, num_classes=4)
                for x_train, x_test in ((train[0], test[0]),
                                        (train[0] * scale, test[0] * scale))]
  assert 0.3 < accuracies[0] < 1.0  # a probe that can err, so a change would show
  assert accuracies[0] == accuracies[1]


def test_the_same_seed_gives_the_same_shots_and_k_of_each_class():
  labels = np.random.RandomState(0).randint(0, 7, 500)
  first, again, other = (fewshot.sample_shots(labels, 5, seed) for seed in (0, 0, 1))
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)
  assert np.bincount(labels[first], minlength=7).tolist() == [5] * 7


def features_on(devices, config, params, source):
  mesh = sharding.make_mesh(config.mesh, devices)
  eval_data = input_pipeline.EvalData(source, config.pp.eval, "test",
                                      global_batch=config.eval_batch, keyed=True)
  model = build.model_from_config(config)
  return fewshot.extract_features(fewshot.make_feature_step(model), params, eval_data,
                                  sharding.batch_sharding(mesh))


def test_features_on_eight_devices_equal_those_on_one(fashion_data_dir):
  from conftest import NUM_TEST
  config = tiny_config(fashion_data_dir, **{"model.representation_size": 24})
  model = build.model_from_config(config)
  params = build.init_params(model, config.image_size, seed=0)
  source = sources.get_source(config.data)
  one = features_on(jax.devices()[:1], config, params, source)
  eight = features_on(jax.devices()[:8], config, params, source)
  assert one[0].shape == (NUM_TEST, 24)  # the representation layer's output, every example once
  np.testing.assert_allclose(eight[0], one[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(eight[1], one[1])


def test_the_command_probes_a_saved_model_and_prints_a_row_per_shot_count(
    fashion_data_dir, tmp_path, capsys):
  from vit_jax import fewshot as fewshot_command
  from vit_jax.models import npz
  from vit_jax.runtime import cli
  from vit_jax.train import workdir_files
  config = tiny_config(fashion_data_dir)
  (tmp_path / workdir_files.CONFIG_FILE).write_text(config.to_json_best_effort())
  model = build.model_from_config(config)
  params = build.init_params(model, config.image_size, seed=0)
  npz.save_npz(params, tmp_path / "params.npz")
  cli.call(fewshot_command.main, fewshot_command.FLAGS, [
      "fewshot", f"--workdir={tmp_path}", f"--checkpoint={tmp_path / 'params.npz'}",
      "--shots=1,5", "--seeds=0,1"])
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].startswith("fashion_mnist_local: shots from train (512 images), "
                             "scored on test (103); features in ")
  source = sources.get_source(config.data)
  features = {}
  for split in ("train", "test"):
    eval_data = input_pipeline.EvalData(source, config.pp.eval, split,
                                        global_batch=config.eval_batch, keyed=True)
    features[split] = fewshot.extract_features(
        fewshot.make_feature_step(model), params, eval_data,
        sharding.batch_sharding(sharding.make_mesh(config.mesh)))
  for line, shots in zip(lines[2:], (1, 5)):
    accuracies = [fewshot.probe_accuracy(features["train"], features["test"], shots=shots,
                                         seed=seed, num_classes=10) for seed in (0, 1)]
    assert line.split() == [str(shots), f"{np.mean(accuracies):.2%}",
                            f"{np.std(accuracies):.2%}", "0,1"]
  assert len(lines) == 4
