r"""Few-shot linear probes of a saved model; prints a row per dataset and shot count.

  python -m vit_jax.fewshot --workdir=runs/demo/pretrain \
      [--checkpoint=PATH] [--shots=1,5,10,25] [--seeds=0,1,2] \
      [--datasets=digits,imagenet2012:10 | --train_split=train --test_split=test] \
      [--regulariser=1024]

Flags only; `evaluators.fewshot` holds the protocol (big_vision's). The
features are the run's model's frozen pre_logits, on its mesh, batches and
eval preprocessing; the probes use the datasets and splits the run's own
probes use (`evaluators.fewshot.probe_sets`) unless told.
"""
import os
import time

# TensorFlow only reads input here; its C++ start-up chatter is noise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from vit_jax.runtime import cli, cpu_devices  # noqa: E402

FLAGS = cli.command_flags(__name__)
_WORKDIR, _CHECKPOINT = cli.define_checkpoint_flags(FLAGS, use="probe")
_SHOTS = flags.DEFINE_list("shots", ["1", "5", "10", "25"], "Examples a class, for "
                           "every dataset without its own ('name:10').", flag_values=FLAGS)
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of the shots' draw; "
                           "the table gives the mean and spread over them.",
                           flag_values=FLAGS)
_DATASETS = flags.DEFINE_list(
    "datasets", None, "Dataset presets (configs/common.py) to probe, each on its "
    "few-shot splits; 'name:10' (or 'name:5/10') probes one at its own shot "
    "counts instead of --shots; empty "
    "(--datasets=): the run's own data (default: config.fewshot.datasets, "
    "else the run's own data).", flag_values=FLAGS)
_TRAIN_SPLIT = flags.DEFINE_string(
    "train_split", None, "Where the shots of the run's own data come from "
    "(default: config.fewshot.train_split, else config.data.train_split).",
    flag_values=FLAGS)
_TEST_SPLIT = flags.DEFINE_string(
    "test_split", None, "What the probes of the run's own data are scored on "
    "(default: config.fewshot.test_split, else the eval split named 'test', "
    "else the last of config.data.eval_splits).", flag_values=FLAGS)
_REGULARISER = flags.DEFINE_float(
    "regulariser", None, "The ridge regression's regulariser, > 0 (default: "
    "config.fewshot.regulariser, else 2^10).", flag_values=FLAGS)


def _integers(values, flag, low):
  """The integers of a list flag; an error naming it unless there are some, all >= low.

  ``low`` is `config.fewshot`'s bound of the same field
  (`config_checks.PROBE_COUNT_LOWS`).
  """
  try:
    integers = [int(v) for v in values]
  except ValueError:
    integers = []
  if not integers or min(integers) < low:
    raise app.UsageError(f"--{flag}={','.join(values)}: expected one or more "
                         f"integers >= {low}")
  return integers


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  import jax

  from vit_jax.evaluators import fewshot, over_seeds
  from vit_jax.inference import restore
  from vit_jax.train import config_checks, sharding, workdir_files

  shots, seeds = (_integers(flag.value, flag.name, config_checks.PROBE_COUNT_LOWS[flag.name])
                  for flag in (_SHOTS, _SEEDS))
  # config.fewshot.regulariser's bound, so that the command probes what a
  # run may: at 0 the ridge solve is no longer ridge, and fewer shots than
  # features leave it singular.
  valid = config_checks.NUMERIC_FIELDS["fewshot.regulariser"]
  if _REGULARISER.value is not None and not valid.admits(_REGULARISER.value):
    raise app.UsageError(f"--regulariser={_REGULARISER.value:g} must be "
                         f"{valid.describe()}")
  config = workdir_files.read_config(_WORKDIR.value)
  cpu_devices.use_one_device_per_core((config.eval_batch,))
  datasets = fewshot.probe_datasets(config) if _DATASETS.value is None else _DATASETS.value
  splits = {name: flag.value for name, flag in
            (("train", _TRAIN_SPLIT), ("test", _TEST_SPLIT)) if flag.value}
  if datasets and splits:
    raise app.UsageError(f"--{'_split, --'.join(splits)}_split choose splits of the "
                         f"run's own data, but the probes are of {','.join(datasets)}; "
                         f"add --datasets= to probe the run's own data")
  if not datasets:
    splits = {**fewshot.probe_splits(config), **splits}
  regulariser = _REGULARISER.value
  if regulariser is None:
    regulariser = (config.get("fewshot") or {}).get("regulariser",
                                                    fewshot.DEFAULT_REGULARISER)
  # Every dataset is found, and its shots' split sized, before the restore.
  probes = fewshot.probe_sets(
      config, datasets=datasets, splits=splits, shots=shots,
      datasets_field="config.fewshot.datasets" if _DATASETS.value is None else "--datasets",
      shots_field="--shots")
  model, params = restore.restore_model(config, _CHECKPOINT.value or _WORKDIR.value)
  mesh = sharding.make_mesh(config.mesh)
  params = jax.device_put(params, sharding.param_shardings(mesh, params, config.mesh))
  feature_step = fewshot.make_feature_step(model, mesh)
  rows = []
  for split, probe in probes.items():
    name = split.partition("/")[2] or config.data.name
    start = time.monotonic()
    features = {part: fewshot.extract_features(feature_step, params, data,
                                               sharding.batch_sharding(mesh))
                for part, data in probe.data.items()}
    print(f"{name}: shots from {probe.data['train'].split} "
          f"({len(features['train'][1])} images), scored on {probe.data['test'].split} "
          f"({len(features['test'][1])}); features in {time.monotonic() - start:.1f}s")
    fewshot.check_shots(features["train"][1], probe.shots, probe.num_classes,
                        where=fewshot.shots_from(probe.data["train"]))
    accuracies = fewshot.probe_accuracies(
        features["train"], features["test"], shots=probe.shots, seeds=seeds,
        num_classes=probe.num_classes, regulariser=regulariser)
    rows += [(name, k, values) for k, values in accuracies.items()]
  width = max(len("dataset"), *(len(name) for name, _, _ in rows))
  print(f"{'dataset':<{width}}  {'shots':>5}  {'accuracy':>8}  {'std':>6}  seeds")
  for name, k, values in rows:
    mean, std = over_seeds.mean_and_std(values)
    print(f"{name:<{width}}  {k:>5}  {mean:>8.2%}  {std:>6.2%}  "
          f"{','.join(map(str, seeds))}")


if __name__ == "__main__":
  cli.run(main)
