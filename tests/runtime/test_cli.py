"""The commands' error rule: a user's mistake is one line, a bug a traceback."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scripts import check_docs
from vit_jax import evaluate
from vit_jax.data import preprocess, sources, tfrecords
from vit_jax.runtime import cli
from vit_jax.train import workdir_files

import fake_data
from repo_root import REPO


def main_command(workdir, *flags):
  """`python -m vit_jax.main` on the demo config (a later --config= replaces it)."""
  return ("-m", "vit_jax.main", "--config=configs/demo.py", f"--workdir={workdir}",
          *flags)


def refusal_line(output):
  """The one line a refused `python -m vit_jax.main` ended with (its exit
  status 1), which must come before the train step is compiled (the loop logs
  "compiled in" once it is)."""
  ok, printed = output
  lines = printed.strip().splitlines()
  assert not ok and lines[-1] == "exit status: 1", printed
  assert "Traceback" not in printed, printed
  assert "compiled in" not in printed, printed
  return lines[-2]


MISTAKES = {  # case: (flags, the start of the line that refuses them)
    "missing_dataset": (
        ["--config.data.data_dir=/nonexistent"],
        "error: dataset 'fashion_mnist_local' (config.data.name) is not prepared in "
        "data_dir '/nonexistent' (config.data.data_dir)"),
    "bad_config_value": (["--config.ema_decay=2"],
                         "error: config.ema_decay=2.0 must be in [0, 1)"),
    "missing_checkpoint": (["--config.init=/nonexistent/vit.npz"],
                           "error: checkpoint file /nonexistent/vit.npz does not exist"),
    "negative_clip_norm": (
        ["--config.optim.grad_clip_norm=-1"],
        "error: config.optim.grad_clip_norm=-1.0 must be >= 0 (0 turns clipping off"),
    "unknown_field": (["--config.foo=1"],
                      "error: --config.foo: config has no field 'foo'; valid: accum_steps, "),
    "misspelt_nested_field": (
        ["--config.optim.wieght_decay=0.1"],
        "error: --config.optim.wieght_decay: config.optim has no field 'wieght_decay' "
        "(did you mean config.optim.weight_decay?); valid: adafactor_decay_rate, "
        "adafactor_min_dim_to_factor, b1, b2, "),
    "label_smoothing_above_one": (
        ["--config.label_smoothing=1.5"],
        "error: config.label_smoothing=1.5 must be in [0, 1) (1 would make every target "
        "uniform, more would invert them)"),
    "no_steps": (["--config.total_steps=0"],
                 "error: config.total_steps=0 must be >= 1 or None"),
    "onehot_of_other_class_count": (
        ["--config.pp.train=decode|resize(21)|value_range(-1,1)|onehot(5)"],
        "error: config.pp.train='decode|resize(21)|value_range(-1,1)|onehot(5)' gives 5 "
        "classes but config.data.num_classes=10, the size of the model's head"),
    "pp_without_decode": (
        ["--config.pp.train=resize(21)|value_range(-1,1)|onehot(10)"],
        "error: config.pp.train='resize(21)|value_range(-1,1)|onehot(10)' has no decode "
        "op, and the dataset's images are encoded files; start it with decode or "
        "decode_jpeg_and_inception_crop"),
    "random_op_in_eval": (
        ["--config.pp.eval=decode|inception_crop(21)|value_range(-1,1)|onehot(10)"],
        "error: config.pp.eval='decode|inception_crop(21)|value_range(-1,1)|onehot(10)' "
        "has the random op 'inception_crop'; evaluation scores each example as it is, the "
        "same every time: take its deterministic counterpart (resize, resize_small, "
        "central_crop)"),
    "heads_not_dividing_width": (
        ["--config.model.num_heads=3"],
        "error: the width 128 (config.model.hidden_size, else Ti/7's) is not divisible "
        "by its 3 heads (config.model.num_heads, else Ti/7's): each head takes an equal "
        "share of the width"),
    "probe_at_start_that_never_probes": (
        ["--config.fewshot.at_start=True"],
        "error: config.fewshot.at_start=True probes when config.fewshot.every is set, "
        "and it is 0: no probe would run; set every=N as well"),
    "unknown_dtype": (["--config.model.dtype=bf16"],
                      "error: config.model.dtype='bf16'; valid: float32, bfloat16, float16"),
    "slice_past_the_split": (
        ["--config.data.train_split=train[:150%]"],
        "error: config.data.train_split: split 'train[:150%]': 150% lies outside the "
        "split of 512 records; valid bounds: -100% to 100%"),
    "split_not_in_dataset": (
        ["--config.data.eval_splits.test=validation"],
        "error: config.data.eval_splits.test: dataset 'fashion_mnist_local' has no "
        "split 'validation'; valid: test, train"),
}
CONFIG_FILE_MISTAKES = {  # case: (flags, the start of the line that refuses them)
    "unknown_argument": (
        ["--config=configs/demo.py:stage=pretrain,bogus=1"],
        "error: unknown config argument 'bogus'; valid keys: data, data_dir, init, "
        "stage, variant"),
    "argument_given_twice": (
        ["--config=configs/demo.py:stage=pretrain,stage=finetune"],
        "error: config argument 'stage' is given twice (stage=pretrain and "
        "stage=finetune); give it once"),
    "missing_argument": (
        ["--config=configs/transfer.py:suite=demo"],
        "error: configs/transfer.py: init= is needed: the pre-trained run's workdir"),
    "missing_file": (
        ["--config=configs/nothere.py"],
        f"error: --config=configs/nothere.py: no such file; the configs are the files "
        f"of {REPO}/configs"),
    # absl takes `--config FILE` as `--config=FILE`, and so do the one-line errors.
    "spaced_missing_file": (["--config", "configs/nothere.py"],
                            "error: --config=configs/nothere.py: no such file"),
    "spaced_misspelt_field": (
        ["--config", "configs/demo.py:stage=pretrain", "--config.optim.wieght_decay=0.1"],
        "error: --config.optim.wieght_decay: config.optim has no field 'wieght_decay' "
        "(did you mean config.optim.weight_decay?)"),
}
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


@pytest.fixture(scope="module")
def overcounted_data_dir(tfrecord_data_dir, tmp_path_factory):
  """The TFRecords, with a manifest that counts 10 records too many in one shard."""
  data_dir = tmp_path_factory.mktemp("overcounted") / "data"
  shutil.copytree(tfrecord_data_dir, data_dir)
  with open(data_dir / sources.MANIFEST) as f:
    manifest = json.load(f)
  manifest["files"]["test-00003-of-00004.tfrecord"] += 10
  with open(data_dir / sources.MANIFEST, "w") as f:
    json.dump(manifest, f)
  return str(data_dir)


@pytest.fixture(scope="module")
def raw_pixels_data_dir(tmp_path_factory):
  return write_bar_images(tmp_path_factory.mktemp("raw"), encoded=False)


@pytest.fixture(scope="module")
def refusals(fashion_data_dir, tfrecord_data_dir, overcounted_data_dir,
             raw_pixels_data_dir, tmp_path_factory):
  """What `python -m vit_jax.main` printed for each case, by case: (ok, printed).

  The cases run one after another in one process, each as `python` runs it
  (scripts/check_docs.py's worker): jax and TensorFlow are imported once,
  not in a process a case, which took 5 to 15 s each.
  """
  fashion = f"--config.data.data_dir={fashion_data_dir}"
  cases = {name: [fashion, *flags] for name, (flags, _) in MISTAKES.items()}
  cases.update({name: flags for name, (flags, _) in CONFIG_FILE_MISTAKES.items()})
  cases.update({
      "label_past_num_classes": [f"--config.data.data_dir={tfrecord_data_dir}",
                                 *TINY_RUN, "--config.data.num_classes=5"],
      "pattern_reads_train_shards": [f"--config.data.data_dir={tfrecord_data_dir}",
                                     *TINY_RUN, "--config.data.pattern=*.tfrecord"],
      "overcounting_manifest": [f"--config.data.data_dir={overcounted_data_dir}",
                                *TINY_RUN],
      "raw_pixels": [f"--config.data.data_dir={raw_pixels_data_dir}", *TINY_RUN],
  })
  workdir = tmp_path_factory.mktemp("refused")
  (workdir / "a_file").write_text("kept")
  pretrained_run = workdir / "pretrained"
  pretrained_run.mkdir()
  (pretrained_run / "config.json").write_text(
      json.dumps({"variant": "Ti/7", "data": {}, "pp": {}}))
  cases.update({
      "workdir_is_a_file": [fashion, f"--workdir={workdir / 'a_file'}"],
      "suite_config": [f"--config=configs/transfer.py:suite=demo,init={pretrained_run}"],
  })
  outputs = check_docs.run_python(
      [check_docs.Check("run", main_command(workdir / name, *flags))
       for name, flags in cases.items()])
  return dict(zip(cases, outputs))


@pytest.mark.parametrize("case", MISTAKES)
def test_main_ends_a_users_mistake_with_one_line_naming_it(refusals, case):
  line = refusal_line(refusals[case])
  assert line.startswith(MISTAKES[case][1]), line


@pytest.mark.parametrize("case", CONFIG_FILE_MISTAKES)
def test_a_mistake_in_the_config_file_or_its_arguments_is_one_line(refusals, case):
  line = refusal_line(refusals[case])
  assert line.startswith(CONFIG_FILE_MISTAKES[case][1]), line


def test_a_label_past_num_classes_stops_the_run_naming_the_record(
    refusals, tfrecord_data_dir):
  line = refusal_line(refusals["label_past_num_classes"])
  assert re.fullmatch(
      rf"error: label [5-9] of {tfrecord_data_dir}/train-0000[0-3]-of-00004\.tfrecord:\d+ "
      r"is outside \[0, 5\) \(config\.data\.num_classes\); fix the data or the class "
      r"count", line), line


def test_a_pattern_that_lets_eval_read_the_train_shards_is_refused(
    refusals, tfrecord_data_dir):
  assert refusal_line(refusals["pattern_reads_train_shards"]) == (
      f"error: config.data.eval_splits.test shares records with config.data.train_split: "
      f"both read records [0, 5) of {tfrecord_data_dir}/test-00000-of-00004.tfrecord, "
      f"so the evaluation would score examples the model trained on "
      f"(config.data.pattern='*.tfrecord' has no {{split}}, so every split reads the "
      f"same files)")


def test_a_manifest_counting_more_records_than_a_shard_holds_is_named(
    refusals, overcounted_data_dir):
  data_dir = overcounted_data_dir
  assert refusal_line(refusals["overcounting_manifest"]) == (
      f"error: {data_dir}/{sources.MANIFEST} lists 15 records for "
      f"{data_dir}/test-00003-of-00004.tfrecord ('test') but it holds 5; re-index "
      f"it with scripts/make_tfrecords.py --index_only --out_dir={data_dir}")


def test_shards_of_raw_pixels_end_the_run_before_training(refusals, raw_pixels_data_dir):
  line = refusal_line(refusals["raw_pixels"])
  assert re.fullmatch(
      r"error: the last 1000 images read were all corrupt or undecodable, the last of "
      rf"them {raw_pixels_data_dir}/train-0000[0-3]-of-00004\.tfrecord:\d+; the "
      r"training stream would skip them forever\. .*", line), line


def test_a_workdir_that_is_a_file_is_named_and_kept(refusals, tmp_path_factory):
  line = refusal_line(refusals["workdir_is_a_file"])
  assert re.fullmatch(r"error: --workdir=(\S+)/a_file is a file; it is the directory the "
                      r"run keeps everything in \(made if need be\)", line), line
  assert (Path(line.split("=", 1)[1].split(" ")[0])).read_text() == "kept"


def test_a_suites_config_names_the_command_that_runs_it(refusals):
  assert refusal_line(refusals["suite_config"]) == (
      "error: --config is a transfer suite's (configs/transfer.py): run it with python "
      "-m vit_jax.transfer; this command takes one run's config (configs/pretrain.py, "
      "finetune.py, bit.py, demo.py, benchmark.py)")


@pytest.mark.parametrize("command, problem", [
    (main_command("", "--workdir="), "FATAL Flags parsing error: flag --workdir=: "
     "--workdir is empty; give a directory"),
    (("-m", "vit_jax.transfer", "--config=configs/demo.py", "--workdir=WORKDIR"),
     "error: --config is one run's config: run it with python -m vit_jax.main; this "
     "command takes a transfer suite's, configs/transfer.py"),
], ids=["empty_workdir", "run_config_to_transfer"])
def test_a_command_refuses_an_empty_workdir_or_the_other_kind_of_config(
    tmp_path, command, problem):
  command = [part.replace("WORKDIR", str(tmp_path / "suite"))
             .replace("=configs/", f"={REPO}/configs/") for part in command]
  process = subprocess.run([sys.executable, *command], cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(REPO)},
                           capture_output=True, text=True, timeout=300)
  assert process.returncode == 1 and "Traceback" not in process.stderr, process.stderr
  assert problem in process.stderr.splitlines(), process.stderr
  assert os.listdir(tmp_path) == []  # nothing written where it ran


@pytest.mark.slow
def test_resuming_a_finished_run_with_fewer_steps_is_refused_and_keeps_it(
    tfrecord_data_dir, tmp_path):
  """In processes of their own: the real command's exit status and stderr."""
  workdir = tmp_path / "run"
  command = [sys.executable, *main_command(
      workdir, f"--config.data.data_dir={tfrecord_data_dir}", *TINY_RUN)]

  def run(*flags):
    return subprocess.run([*command, *flags], cwd=REPO, capture_output=True, text=True,
                          timeout=300)

  assert run("--config.total_steps=3").returncode == 0
  kept = {name: (workdir / name).read_bytes() for name in ("summary.json", "config.json")}
  process = run()  # 2 steps
  assert process.returncode == 1, process.stderr
  assert "Traceback" not in process.stderr and "compiled in" not in process.stderr
  assert process.stderr.strip().splitlines()[-1] == (
      f"error: {workdir} holds a checkpoint at step 3, past this config's 2 steps "
      f"(config.total_steps or config.total_epochs): the run is longer than that "
      f"already. Resume it with its own length ({workdir}/config.json), evaluate it "
      f"with python -m vit_jax.evaluate --workdir={workdir}, or start a new workdir")
  assert {name: (workdir / name).read_bytes() for name in kept} == kept
  # A summary.json cut short is named before the run's files are touched.
  (workdir / "summary.json").write_text('{"step": 3,')
  kept = {name: (workdir / name).read_bytes() for name in ("config.json", "metrics.jsonl")}
  process = run("--config.total_steps=4")
  assert process.returncode == 1 and "Traceback" not in process.stderr, process.stderr
  assert process.stderr.strip().splitlines()[-1] == (
      f"error: {workdir}/summary.json is not valid JSON (Expecting property name "
      f"enclosed in double quotes: line 1 column 12 (char 11)): a run's summary.json is "
      f"one object with step")
  assert {name: (workdir / name).read_bytes() for name in kept} == kept


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


@pytest.mark.parametrize("text, problem", [
    ('{"benchmarks": {}, "suite": "demo"}', "is a transfer suite's config, not a run's: "
     "give one of its runs, the workdir SUITE_DIR/BENCHMARK/seed0"),
    ('{"model_type": "vit", "hidden_size": 768}', "lacks variant, data, pp, so it is not "
     "a vit_jax run's config (a timm or Hugging Face export's?): a run's config.json is "
     "its resolved config, with variant, data, pp"),
    ("[1, 2]", "holds a JSON list, not an object: a run's config.json is its resolved "
     "config, with variant, data, pp"),
    ("{", "is not valid JSON (Expecting property name enclosed in double quotes: line 1 "
     "column 2 (char 1)): a run's config.json"),
])
def test_a_workdir_whose_config_json_is_no_runs_is_named(tmp_path, text, problem):
  (tmp_path / workdir_files.CONFIG_FILE).write_text(text)
  with pytest.raises(SystemExit) as exit_info:
    cli.call(evaluate.main, evaluate.FLAGS, ["evaluate", f"--workdir={tmp_path}"])
  assert str(exit_info.value).startswith(
      f"error: {tmp_path / workdir_files.CONFIG_FILE} {problem}"), exit_info.value


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
