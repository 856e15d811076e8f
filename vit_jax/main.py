r"""Runs one job from a config file; flags only, the work is in `train`.

  python -m vit_jax.main --config=configs/pretrain.py:variant=B/16,data=imagenet21k \
      --workdir=runs/b16_i21k [--config.global_batch=1024 ...]

Re-running the same command on the same workdir resumes the run. On several
hosts, run the same command on every host; the distributed runtime is set up
before anything touches the devices.
"""
import logging as python_logging
import os

from absl import app, flags, logging
from ml_collections import config_flags

# TensorFlow only reads input here; its C++ start-up chatter is noise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file and its arguments, e.g. "
    "configs/finetune.py:variant=B/16,data=cifar10,res=384,init=PATH.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Where the run keeps everything.")
flags.DEFINE_string("coordinator_address", None,
                    "host:port of process 0, for multi-host runs outside "
                    "Cloud TPU and SLURM (which are detected).")
flags.DEFINE_integer("num_processes", None, "Processes of a multi-host run.")
flags.DEFINE_integer("process_id", None, "This process's index in the run.")
flags.mark_flags_as_required(["config", "workdir"])


class _OnlyLibraryWarnings(python_logging.Filter):
  """Keeps orbax's and tfds's per-save, per-read INFO lines off the console."""

  QUIET = ("/orbax/", "/tensorflow_datasets/", "/etils/")

  def filter(self, record):
    return (record.levelno >= python_logging.WARNING
            or not any(part in record.pathname for part in self.QUIET))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_OnlyLibraryWarnings())
  import jax  # after flag parsing, so --help is fast

  if FLAGS.coordinator_address or FLAGS.num_processes:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                               FLAGS.process_id)
  logging.info("JAX %s: process %d of %d, %d local / %d global devices",
               jax.__version__, jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  from vit_jax import train

  summary = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  if jax.process_index() == 0:
    results = ", ".join(f"{split} {name}={value:.4f}"
                        for split, split_metrics in summary["eval"].items()
                        for name, value in split_metrics.items()
                        if name in ("top1", "prec@1"))
    print(f"done: step {summary['step']}, {results}, "
          f"{summary['wall_s']:.0f}s, {summary['core_days']:.4g} core-days, "
          f"{summary['tpuv3_core_days']:.4g} TPUv3-core-days")


if __name__ == "__main__":
  app.run(main)
