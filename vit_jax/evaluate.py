r"""Evaluates a checkpoint without training; prints one JSON line per split.

  python -m vit_jax.evaluate --workdir=runs/demo/transfer/fashion_mnist_last5/seed0 \
      [--checkpoint=PATH] [--split=NAME]

Flags only; `evaluators.classification.evaluate_checkpoint` runs on the
mesh, batches and preprocessing of the run's config, so the numbers are those
the run itself reports.
"""
import json
import os

# TensorFlow only reads input here; its C++ start-up chatter is noise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from vit_jax.runtime import cli, cpu_devices  # noqa: E402

FLAGS = cli.command_flags(__name__)
_WORKDIR, _CHECKPOINT = cli.define_checkpoint_flags(FLAGS, use="evaluate")
_SPLIT = flags.DEFINE_string(
    "split", None, "One split: a name of config.data.eval_splits or a tfds "
    "split such as 'test[:1000]' (default: all eval splits).", flag_values=FLAGS)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from vit_jax.evaluators import classification  # after flag parsing: --help is fast
  from vit_jax.train import workdir_files

  config = workdir_files.read_config(_WORKDIR.value)
  cpu_devices.use_one_device_per_core((config.eval_batch,))
  splits = dict(config.data.eval_splits)
  if _SPLIT.value:
    splits = {_SPLIT.value: splits.get(_SPLIT.value, _SPLIT.value)}
  path = _CHECKPOINT.value or _WORKDIR.value
  results = classification.evaluate_checkpoint(config, path, splits)
  for name, metrics in results.items():
    print(json.dumps({"checkpoint": path, "split": name, **metrics}))


if __name__ == "__main__":
  cli.run(main)
