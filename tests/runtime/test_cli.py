"""The commands' error rule: a user's mistake is one line, a bug a traceback."""
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from vit_jax import evaluate
from vit_jax.data import preprocess, sources, tfrecords
from vit_jax.runtime import cli
from vit_jax.train import workdir_files

import fake_data
from repo_root import REPO


def run_main(workdir, *flags, timeout=300):
  """`python -m vit_jax.main` on the demo config, in its own process."""
  return subprocess.run(
      [sys.executable, "-m", "vit_jax.main", "--config=configs/demo.py",
       f"--workdir={workdir}", *flags],
      cwd=REPO, capture_output=True, text=True, timeout=timeout)


def refused_run_of_main(tmp_path, *flags):
  """The one line `python -m vit_jax.main` ended with on the demo config,
  which must come before the train step is compiled (the loop logs "compiled
  in" once it is)."""
  process = run_main(tmp_path / "run", *flags)
  assert process.returncode == 1, process.stderr
  assert "Traceback" not in process.stderr, process.stderr
  assert "compiled in" not in process.stderr, process.stderr
  return process.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("flags, message", [
    (["--config.data.data_dir=/nonexistent"],
     "error: dataset 'fashion_mnist_local' (config.data.name) is not prepared in "
     "data_dir '/nonexistent' (config.data.data_dir)"),
    (["--config.ema_decay=2"], "error: config.ema_decay=2.0 must be in [0, 1)"),
    (["--config.init=/nonexistent/vit.npz"],
     "error: checkpoint file /nonexistent/vit.npz does not exist"),
    (["--config.optim.grad_clip_norm=-1"],
     "error: config.optim.grad_clip_norm=-1.0 must be >= 0 (0 turns clipping off"),
    (["--config.foo=1"],
     "error: --config.foo: config has no field 'foo'; valid: accum_steps, "),
    (["--config.optim.wieght_decay=0.1"],
     "error: --config.optim.wieght_decay: config.optim has no field 'wieght_decay' "
     "(did you mean config.optim.weight_decay?); valid: adafactor_decay_rate, "
     "adafactor_min_dim_to_factor, b1, b2, "),
    (["--config.label_smoothing=1.5"],
     "error: config.label_smoothing=1.5 must be in [0, 1) (1 would make every target "
     "uniform, more would invert them)"),
    (["--config.total_steps=0"], "error: config.total_steps=0 must be >= 1 or None"),
    (["--config.pp.train=decode|resize(21)|value_range(-1,1)|onehot(5)"],
     "error: config.pp.train='decode|resize(21)|value_range(-1,1)|onehot(5)' gives 5 "
     "classes but config.data.num_classes=10, the size of the model's head"),
    (["--config.model.dtype=bf16"],
     "error: config.model.dtype='bf16'; valid: float32, bfloat16, float16"),
    (["--config.data.train_split=train[:150%]"],
     "error: config.data.train_split: split 'train[:150%]': 150% lies outside the "
     "split of 512 records; valid bounds: -100% to 100%"),
    (["--config.data.eval_splits.test=validation"],
     "error: config.data.eval_splits.test: dataset 'fashion_mnist_local' has no split "
     "'validation'; valid: test, train"),
], ids=["missing_dataset", "bad_config_value", "missing_checkpoint",
        "negative_clip_norm", "unknown_field", "misspelt_nested_field",
        "label_smoothing_above_one", "no_steps", "onehot_of_other_class_count",
        "unknown_dtype", "slice_past_the_split", "split_not_in_dataset"])
def test_main_ends_a_users_mistake_with_one_line_naming_it(
    fashion_data_dir, tmp_path, flags, message):
  line = refused_run_of_main(tmp_path, f"--config.data.data_dir={fashion_data_dir}",
                             *flags)
  assert line.startswith(message), line


TINY_RUN = ["--config.data.source=tfrecord", "--config.data.name=tiny",
            "--config.data.pattern={split}-*.tfrecord", "--config.total_steps=2",
            "--config.global_batch=16", "--config.eval_batch=16",
            "--config.lr.warmup_steps=1", "--config.data.shuffle_buffer=64"]


def write_bar_images(data_dir, *, encoded=True):
  """Fashion-MNIST-like TFRecords, classes 0-9: train 64 and test 20 records in 4 shards.

  Without ``encoded``, ``image/encoded`` holds raw pixels.
  """
  rng = np.random.RandomState(0)
  for split, count in (("train", 64), ("test", 20)):
    labels = rng.randint(0, 10, count)
    images = fake_data.bar_images(labels, rng)
    if encoded:
      examples = tfrecords.array_examples(images, labels)
    else:
      examples = [(image.tobytes(), [int(label)]) for image, label in zip(images, labels)]
    tfrecords.write_split(str(data_dir), split, examples, num_shards=4)
  return str(data_dir)


@pytest.fixture(scope="module")
def tfrecord_data_dir(tmp_path_factory):
  return write_bar_images(tmp_path_factory.mktemp("bars"))


def test_a_label_past_num_classes_stops_the_run_naming_the_record(tfrecord_data_dir, tmp_path):
  line = refused_run_of_main(tmp_path, f"--config.data.data_dir={tfrecord_data_dir}",
                             *TINY_RUN, "--config.data.num_classes=5")
  assert re.fullmatch(
      rf"error: label [5-9] of {tfrecord_data_dir}/train-0000[0-3]-of-00004\.tfrecord:\d+ "
      r"is outside \[0, 5\) \(config\.data\.num_classes\); fix the data or the class "
      r"count", line), line


def test_a_pattern_that_lets_eval_read_the_train_shards_is_refused(tfrecord_data_dir, tmp_path):
  line = refused_run_of_main(tmp_path, f"--config.data.data_dir={tfrecord_data_dir}",
                             *TINY_RUN, "--config.data.pattern=*.tfrecord")
  assert line == (
      f"error: config.data.eval_splits.test shares records with config.data.train_split: "
      f"both read records [0, 5) of {tfrecord_data_dir}/test-00000-of-00004.tfrecord, "
      f"so the evaluation would score examples the model trained on "
      f"(config.data.pattern='*.tfrecord' has no {{split}}, so every split reads the "
      f"same files)")


def test_a_manifest_counting_more_records_than_a_shard_holds_is_named(
    tfrecord_data_dir, tmp_path):
  data_dir = tmp_path / "data"
  shutil.copytree(tfrecord_data_dir, data_dir)
  with open(data_dir / sources.MANIFEST) as f:
    manifest = json.load(f)
  manifest["files"]["test-00003-of-00004.tfrecord"] += 10
  with open(data_dir / sources.MANIFEST, "w") as f:
    json.dump(manifest, f)
  line = refused_run_of_main(tmp_path, f"--config.data.data_dir={data_dir}", *TINY_RUN)
  assert line == (
      f"error: {data_dir / sources.MANIFEST} lists 15 records for "
      f"{data_dir}/test-00003-of-00004.tfrecord ('test') but it holds 5; re-index "
      f"it with scripts/make_tfrecords.py --index_only --out_dir={data_dir}")


def test_shards_of_raw_pixels_end_the_run_before_training(tmp_path):
  data_dir = write_bar_images(tmp_path / "raw", encoded=False)
  line = refused_run_of_main(tmp_path, f"--config.data.data_dir={data_dir}", *TINY_RUN)
  assert re.fullmatch(
      r"error: the last 1000 images read were all corrupt or undecodable, the last of "
      rf"them {data_dir}/train-0000[0-3]-of-00004\.tfrecord:\d+; the training stream "
      r"would skip them forever\. .*", line), line


@pytest.mark.slow
def test_resuming_a_finished_run_with_fewer_steps_is_refused_and_keeps_it(
    tfrecord_data_dir, tmp_path):
  workdir = tmp_path / "run"
  flags = [f"--config.data.data_dir={tfrecord_data_dir}", *TINY_RUN]
  assert run_main(workdir, *flags, "--config.total_steps=3").returncode == 0
  kept = {name: (workdir / name).read_bytes() for name in ("summary.json", "config.json")}
  line = refused_run_of_main(tmp_path, *flags)  # 2 steps
  assert line == (
      f"error: {workdir} holds a checkpoint at step 3, past this config's 2 steps "
      f"(config.total_steps or config.total_epochs): the run is longer than that "
      f"already. Resume it with its own length ({workdir}/config.json), evaluate it "
      f"with python -m vit_jax.evaluate --workdir={workdir}, or start a new workdir")
  assert {name: (workdir / name).read_bytes() for name in kept} == kept


@pytest.mark.parametrize("config, message", [
    ("configs/demo.py:stage=pretrain,bogus=1",
     "error: unknown config argument 'bogus'; valid keys: data, data_dir, init, stage, "
     "variant"),
    ("configs/transfer.py:suite=demo",
     "error: configs/transfer.py: init= is needed: the pre-trained run's workdir"),
    ("configs/nothere.py",
     f"error: --config=configs/nothere.py: no such file; the configs are the files "
     f"of {REPO}/configs"),
], ids=["unknown_argument", "missing_argument", "missing_file"])
def test_a_mistake_in_the_config_file_or_its_arguments_is_one_line(tmp_path, config, message):
  # The last --config= wins: demo.py, which run_main gives first, is replaced.
  line = refused_run_of_main(tmp_path, f"--config={config}")
  assert line.startswith(message), line


@pytest.mark.parametrize("flags, message", [
    (["--config", "configs/nothere.py"], "error: --config=configs/nothere.py: no such file"),
    (["--config", "configs/demo.py:stage=pretrain", "--config.optim.wieght_decay=0.1"],
     "error: --config.optim.wieght_decay: config.optim has no field 'wieght_decay' "
     "(did you mean config.optim.weight_decay?)"),
], ids=["missing_file", "misspelt_field"])
def test_the_config_flag_spelt_with_a_space_is_read_as_with_an_equals_sign(
    tmp_path, flags, message):
  """absl takes `--config FILE` as `--config=FILE`, and so do the one-line errors."""
  assert refused_run_of_main(tmp_path, *flags).startswith(message)


def test_a_bad_flag_is_absls_one_line(tmp_path):
  process = subprocess.run(
      [sys.executable, "-m", "vit_jax.evaluate", f"--workdir={tmp_path}", "--nosuch=1"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert process.returncode == 1 and "Traceback" not in process.stderr, process.stderr
  assert "FATAL Flags parsing error: Unknown command line flag 'nosuch'" in process.stderr


def test_evaluate_in_process_names_a_missing_workdir_in_one_line(tmp_path):
  message = f"error: {tmp_path / 'nothing'} does not exist: is it a run's workdir"
  with pytest.raises(SystemExit, match="^" + re.escape(message)):
    cli.call(evaluate.main, evaluate.FLAGS,
             ["evaluate", f"--workdir={tmp_path / 'nothing'}"])


@pytest.mark.parametrize("split, message", [
    ("test[:150%]", "error: split 'test[:150%]': 150% lies outside the split of 103 "
     "records; valid bounds: -100% to 100%"),
    ("validation", "error: dataset 'fashion_mnist_local' has no split 'validation'; "
     "valid: test, train"),
])
def test_evaluate_names_a_split_that_is_not_there_before_restoring(
    fashion_data_dir, tmp_path, split, message):
  from configs import demo
  config = demo.get_config(f"data_dir={fashion_data_dir}")
  (tmp_path / workdir_files.CONFIG_FILE).write_text(config.to_json_best_effort())
  with pytest.raises(SystemExit) as exit_info:  # the workdir has no checkpoint
    cli.call(evaluate.main, evaluate.FLAGS,
             ["evaluate", f"--workdir={tmp_path}", f"--split={split}"])
  assert str(exit_info.value) == message


def test_a_bug_in_our_code_keeps_its_traceback(tmp_path, monkeypatch):
  def read_config(workdir):
    return {}["variant"]  # a KeyError: no user's mistake raises one

  monkeypatch.setattr(workdir_files, "read_config", read_config)
  with pytest.raises(KeyError, match="variant"):
    cli.call(evaluate.main, evaluate.FLAGS, ["evaluate", f"--workdir={tmp_path}"])


def test_a_value_error_from_a_library_is_a_bug_not_a_users_mistake():
  def main(argv):
    np.reshape(np.zeros(3), (2, 2))  # numpy raises the ValueError

  with pytest.raises(ValueError, match="cannot reshape"):
    cli.exit_on_user_error(main)(["program"])


def test_a_value_error_our_code_raises_is_a_users_mistake():
  def main(argv):
    preprocess.parse("resize(")

  with pytest.raises(SystemExit, match=r"^error: Malformed preprocessing op 'resize\('"):
    cli.exit_on_user_error(main)(["program"])


def test_a_flag_of_one_call_does_not_leak_into_the_next(tmp_path, monkeypatch):
  splits = []

  def read_config(workdir):
    splits.append(evaluate.FLAGS.split)
    raise KeyError("stops the command here")

  monkeypatch.setattr(workdir_files, "read_config", read_config)
  for flags in (["--split=test"], []):
    with pytest.raises(KeyError):
      cli.call(evaluate.main, evaluate.FLAGS, ["evaluate", f"--workdir={tmp_path}", *flags])
  assert splits == ["test", None]
