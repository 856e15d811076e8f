"""Resuming is decided from the checkpoint's own arrays, not from config fields.

A run whose config predates a model field resumes under a config that has
it; a config whose model has other arrays is refused before anything is
compiled, naming the first of them, and leaves the workdir as it was.
"""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import pytest

from conftest import tiny_config
from vit_jax import train
from vit_jax.train import checkpoints, resume


@pytest.fixture(scope="module")
def four_steps(fashion_data_dir, tmp_path_factory):
  """The workdir of a 4-step run, checkpointed at step 4."""
  workdir = str(tmp_path_factory.mktemp("four_steps"))
  train.train_and_evaluate(tiny_config(fashion_data_dir, total_steps=4, eval_every=4),
                           workdir)
  return workdir


def copy_of(workdir, tmp_path):
  return shutil.copytree(workdir, str(tmp_path / "run"))


def read_config_json(workdir):
  with open(os.path.join(workdir, "config.json")) as f:
    return json.load(f)


@pytest.mark.slow
def test_a_run_saved_before_a_model_field_existed_resumes_and_finishes(
    fashion_data_dir, tmp_path, four_steps):
  workdir = copy_of(four_steps, tmp_path)
  saved = read_config_json(workdir)
  del saved["model"]["param_dtype"]  # as a run saved before the field came
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(saved, f)
  summary = train.train_and_evaluate(tiny_config(fashion_data_dir, total_steps=8), workdir)
  assert summary["step"] == 8
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    train_steps = [r["step"] for r in map(json.loads, f) if r["split"] == "train"]
  assert train_steps == [4, 8]  # resumed at step 4, not started over
  assert read_config_json(workdir)["model"]["param_dtype"] == "float32"


@pytest.mark.slow
def test_a_field_that_changes_a_parameter_shape_is_refused_naming_it(
    fashion_data_dir, tmp_path, four_steps):
  workdir = copy_of(four_steps, tmp_path)
  with open(os.path.join(workdir, "config.json"), "rb") as f:
    config_before = f.read()
  config = tiny_config(fashion_data_dir, total_steps=8, **{"model.mlp_dim": 128})
  with pytest.raises(ValueError) as e:
    train.train_and_evaluate(config, workdir)
  message = str(e.value)
  assert message.startswith(
      f"{os.path.join(workdir, 'checkpoints', '4')}: parameter "
      f"Transformer/encoderblock_0/MlpBlock_3/Dense_0/bias has shape (64,) in the "
      f"checkpoint but (128,) in the model"), message
  assert f"resume it with the model and optimizer of {workdir}/config.json" in message
  assert f"config.init={workdir!r}" in message and "\n" not in message
  with open(os.path.join(workdir, "config.json"), "rb") as f:
    assert f.read() == config_before  # nothing already written is lost


@pytest.mark.slow
def test_a_field_that_changes_a_parameter_dtype_is_refused_naming_it(
    fashion_data_dir, tmp_path, four_steps):
  workdir = copy_of(four_steps, tmp_path)
  config = tiny_config(fashion_data_dir, total_steps=8, **{"model.param_dtype": "bfloat16"})
  with pytest.raises(ValueError) as e:
    train.train_and_evaluate(config, workdir)
  assert str(e.value).startswith(
      f"{os.path.join(workdir, 'checkpoints', '4')}: parameter "
      f"Transformer/encoder_norm/bias is float32 in the checkpoint but "
      f"bfloat16 in the model"), str(e.value)


def test_a_run_resumes_up_to_its_last_step_and_is_refused_past_its_new_length(tmp_path):
  """A checkpoint at the config's last step resumes (the finished run is
  evaluated again); one a step past it is refused, as the summary would
  report a step beyond the run's length."""
  workdir = str(tmp_path)
  resume.check_length(8, 8, workdir=workdir)
  with pytest.raises(ValueError) as e:
    resume.check_length(9, 8, workdir=workdir)
  assert str(e.value).startswith(
      f"{workdir} holds a checkpoint at step 9, past this config's 8 steps"), str(e.value)


def small_state(param_dtype=jnp.float32, kernel_shape=(4, 2), moments=("mu",)):
  """A train state of one kernel and its optimizer moments, made of zeros."""
  params = {"kernel": jnp.zeros(kernel_shape, param_dtype)}
  return {"params": params, "step": jnp.zeros((), jnp.int32),
          "opt_state": {moment: {"kernel": jnp.zeros((4, 2), jnp.float32)}
                        for moment in moments}}


def test_resuming_checks_the_optimizer_state_and_the_dtypes_parameters_first(
    tmp_path, request):
  """Same parameters but another optimizer (a second moment more), or
  parameters of another dtype, are refused by name; where parameters and
  optimizer state both differ, the error names the parameter, the config
  field a user changed."""
  manager = checkpoints.make_manager(str(tmp_path))
  request.addfinalizer(manager.close)  # orbax's threads
  checkpoints.save(manager, 4, small_state(), {"examples_seen": 64, "train_seconds": 1.0})
  checkpoints.wait(manager)
  source = str(tmp_path / "checkpoints" / "4")

  def refusal(**changes):
    with pytest.raises(ValueError) as e:
      resume.check_resumable(manager, 4, jax.eval_shape(lambda: small_state(**changes)),
                             workdir=str(tmp_path))
    return str(e.value).split(";")[0]

  resume.check_resumable(manager, 4, jax.eval_shape(small_state), workdir=str(tmp_path))
  assert refusal(moments=("mu", "nu")) == (
      f"{source}: array opt_state/nu/kernel of the model is missing in the checkpoint "
      f"(1 mismatching in all)")
  assert refusal(param_dtype=jnp.bfloat16) == (
      f"{source}: parameter kernel is float32 in the checkpoint but bfloat16 in the model")
  assert refusal(kernel_shape=(4, 3), moments=("nu",)) == (
      f"{source}: parameter kernel has shape (4, 2) in the checkpoint but (4, 3) in the "
      f"model (1 mismatching in all)")
