"""The inference commands on a tiny finished run: predict and evaluate."""
import json
import os
import types

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

import fake_data
from conftest import NUM_TEST, tiny_config
from vit_jax import evaluate, predict, train
from vit_jax.data.builders import fashion_mnist_local
from vit_jax.inference import predict as inference_predict
from vit_jax.runtime import cli

CLASS_NAMES = fashion_mnist_local.CLASS_NAMES


@pytest.fixture(scope="module")
def tiny_run(fashion_data_dir, tmp_path_factory):
  """A finished run that learned the data (>= 90% in test_train) and its summary."""
  workdir = str(tmp_path_factory.mktemp("tiny_run"))
  summary = train.train_and_evaluate(
      tiny_config(fashion_data_dir, total_steps=40, eval_every=40), workdir)
  return workdir, summary


@pytest.fixture
def bar_images(tmp_path):
  """PNG files of the dataset's kind: class 1 (Trouser) and 7 (Sneaker)."""
  images = fake_data.bar_images([1, 7], np.random.RandomState(1))
  paths = []
  for label, image in zip([1, 7], images):
    path = str(tmp_path / f"class_{label}.png")
    tf.io.write_file(path, tf.io.encode_png(image[..., None]))
    paths.append(path)
  return paths


def run_predict(*argv):
  """`python -m vit_jax.predict` with ``argv``, run in this process."""
  cli.call(predict.main, predict.FLAGS, ["predict", *argv])


def run_evaluate(*argv):
  """`python -m vit_jax.evaluate` with ``argv``, run in this process."""
  cli.call(evaluate.main, evaluate.FLAGS, ["evaluate", *argv])


def parse_top5(output):
  """{image path: [(class name, percent)]} from predict's printout."""
  results, path = {}, None
  for line in output.splitlines():
    if not line.startswith(" "):
      path = line
      results[path] = []
    else:
      percent, name = line.split("%", 1)
      results[path].append((name.strip(), float(percent)))
  return results


@pytest.mark.slow
def test_predict_prints_the_top5_class_names(tiny_run, bar_images, capsys):
  workdir, _ = tiny_run
  run_predict(f"--workdir={workdir}", *bar_images)
  results = parse_top5(capsys.readouterr().out)
  assert list(results) == bar_images
  for path, top5 in results.items():
    names = [name for name, _ in top5]
    percents = [percent for _, percent in top5]
    assert len(set(names)) == 5 and set(names) <= set(CLASS_NAMES), names
    assert percents == sorted(percents, reverse=True) and sum(percents) <= 100.01
  assert results[bar_images[0]][0][0] == "Trouser"
  assert results[bar_images[1]][0][0] == "Sneaker"


@pytest.mark.slow
def test_predict_from_a_checkpoint_and_config_file_matches_the_workdir(
    tiny_run, bar_images, capsys):
  workdir, _ = tiny_run
  run_predict(f"--workdir={workdir}", *bar_images)
  from_workdir = capsys.readouterr().out
  run_predict(f"--checkpoint={workdir}", f"--config={os.path.join(workdir, 'config.json')}",
              *bar_images)
  assert capsys.readouterr().out == from_workdir
  with pytest.raises(SystemExit, match="^error: --config needs --checkpoint$"):
    run_predict(f"--config={os.path.join(workdir, 'config.json')}", *bar_images)


@pytest.mark.slow
def test_evaluate_command_reproduces_the_run_summary(tiny_run, capsys):
  workdir, summary = tiny_run
  run_evaluate(f"--workdir={workdir}")
  printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert list(summary["eval"]) == ["test"]  # every eval split, one line each
  assert printed == [{"checkpoint": workdir, "split": "test", **summary["eval"]["test"]}]
  assert printed[0]["num_examples"] == NUM_TEST


@pytest.mark.slow
def test_evaluate_command_on_a_slice_of_a_split(tiny_run, capsys):
  workdir, _ = tiny_run
  run_evaluate(f"--workdir={workdir}", "--split=test[:40]")
  printed, = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert printed["split"] == "test[:40]" and printed["num_examples"] == 40


@pytest.mark.slow
def test_predict_names_a_file_that_is_not_an_image(tiny_run, bar_images, tmp_path):
  workdir, _ = tiny_run
  text = tmp_path / "notes.png"
  text.write_text("not an image")
  for bad in (str(text), str(tmp_path / "missing.png")):
    with pytest.raises(SystemExit) as exit_info:
      run_predict(f"--workdir={workdir}", bar_images[0], bad)
    error = str(exit_info.value)
    assert error.startswith(f"error: {bad}: cannot read it as an image"), error


def test_a_config_that_is_neither_a_config_file_nor_a_runs_json_is_named(tmp_path):
  notes = tmp_path / "notes.txt"
  notes.write_text("variant=B/16")
  with pytest.raises(ValueError) as error:
    inference_predict.config_from_file(f"{notes}:variant=B/16")
  assert str(error.value) == (
      f"--config={notes}:variant=B/16: {notes} is neither a config file "
      f"(configs/X.py[:args]) nor a run's config.json")


def test_top_classes_name_by_index_the_classes_a_source_does_not_name():
  """An image-folder source may name fewer classes than config.data.num_classes."""
  probabilities = np.array([0.1, 0.05, 0.5, 0.3, 0.05])
  assert inference_predict.top_classes(probabilities, ["a", "b", "c"], k=3) == [
      ("c", 0.5), ("3", 0.3), ("a", 0.1)]


def test_class_probabilities_are_those_of_the_runs_loss(tmp_path):
  """A white and a black PNG through value_range(-1, 1) into a model whose
  logits are (mean pixel, -mean pixel, 0): a sigmoid run scores each class
  on its own (rows need not sum to 1), a softmax run over the classes."""
  paths = []
  for name, value in (("white", 255), ("black", 0)):
    paths.append(str(tmp_path / f"{name}.png"))
    tf.io.write_file(paths[-1], tf.io.encode_png(np.full((8, 8, 3), value, np.uint8)))

  def apply(variables, images, train):
    assert not train
    mean = images.mean(axis=(1, 2, 3)) * variables["params"]["scale"]
    return jnp.stack([mean, -mean, 0 * mean], axis=1)

  model = types.SimpleNamespace(apply=apply)
  logits = np.array([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0]])
  expected = {"sigmoid_xent": 1 / (1 + np.exp(-logits)),
              "softmax_xent": np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)}
  for loss, probabilities in expected.items():
    config = ml_collections.ConfigDict(
        {"loss": loss, "pp": {"eval": "decode|resize(4)|value_range(-1,1)|onehot(3)"}})
    np.testing.assert_allclose(
        inference_predict.class_probabilities(config, model, {"scale": 1.0}, paths),
        probabilities, rtol=1e-6)


def test_a_tfds_datasets_class_names_are_its_labels_in_index_order(tmp_path):
  """Read from the builder's metadata, with no data prepared: class i is
  label i (Fashion-MNIST's 0 is T-shirt/top, not the alphabet's first)."""
  data = ml_collections.ConfigDict({"name": "fashion_mnist_local", "data_dir": str(tmp_path)})
  assert inference_predict.class_names(data) == list(CLASS_NAMES)
  assert CLASS_NAMES[:2] == ("T-shirt/top", "Trouser")
  data.name = "no_such_dataset"
  assert inference_predict.class_names(data) is None
