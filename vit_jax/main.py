r"""Runs one job from a config file; flags only, the work is in `train`.

  python -m vit_jax.main --config=configs/pretrain.py:variant=B/16,data=imagenet21k \
      --workdir=runs/b16_i21k [--config.global_batch=1024 ...]

Re-running the same command on the same workdir resumes the run. On several
hosts, run the same command on every host; the distributed runtime is set up
before anything touches the devices: detected on Cloud TPU pod slices and in
SLURM job steps of several tasks, from --coordinator_address, --num_processes
and --process_id anywhere else (also N processes on one machine, on CPU).

A user's mistake (a missing dataset or checkpoint, a bad config value) ends
the run with one line naming it; `vit_jax/runtime/cli.py` has the rule.
"""
import os

from absl import app, flags, logging
from ml_collections import config_flags

from vit_jax.runtime import cli, cpu_devices, distributed, host_malloc

# TensorFlow only reads input here; its C++ start-up chatter is noise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# absl's own FLAGS even when imported: tests/fault_injection.py runs this
# main under app.run.
FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Config file and its arguments, e.g. "
    "configs/finetune.py:variant=B/16,data=cifar10,res=384,init=PATH.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Where the run keeps everything.")
cli.define_distributed_flags(FLAGS)
flags.DEFINE_bool("dry_run", False,
                  "Print what the job will cost (parameters, FLOPs, "
                  "TPUv3-core-days at --assumed_mfu, --train_examples; with "
                  "--devices, the plan for them) and exit without running, "
                  "as scripts/estimate_cost.py does.")
_ASSUMED_MFU, _TRAIN_EXAMPLES, _DEVICES = cli.define_estimate_flags(FLAGS)
flags.DEFINE_integer("distributed_timeout", 300,
                     "Seconds to wait for the coordinator and for every "
                     "process to join before failing.", lower_bound=1)
flags.mark_flags_as_required(["config", "workdir"])
cli.refuse_empty_flag("workdir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.quiet_library_logs()
  cli.check_config_kind(FLAGS.config, suite=False)
  if not FLAGS.dry_run:
    cli.check_no_file_in_the_way("workdir", FLAGS.workdir,
                                 "it is the directory the run keeps everything in "
                                 "(made if need be)")
  import jax  # after flag parsing, so --help is fast

  if FLAGS.dry_run:
    from vit_jax.cost import estimate

    estimate.print_report(FLAGS.config, train_examples=_TRAIN_EXAMPLES.value,
                          mfu=_ASSUMED_MFU.value, devices=_DEVICES.value)
    return
  distributed.initialize_distributed(
      FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
      timeout_s=FLAGS.distributed_timeout)
  config = FLAGS.config
  cpu_devices.use_one_device_per_core(
      (config.global_batch // max(config.accum_steps, 1), config.eval_batch))
  logging.info("JAX %s: process %d of %d, %d local / %d global devices",
               jax.__version__, jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())
  from vit_jax.train import config_checks

  # The trainer checks the config too; checking here, before TensorFlow and
  # orbax are imported, makes a bad value fail in about two seconds.
  config_checks.check_config(config, num_devices=jax.device_count(),
                             process_count=jax.process_count())
  from vit_jax import train
  from vit_jax.train import metrics, preemption

  try:
    summary = train.train_and_evaluate(config, FLAGS.workdir)
  except preemption.Preempted as e:  # not a failure: the same command resumes
    logging.warning("%s", e)
    raise SystemExit(preemption.EXIT_CODE) from None
  if jax.process_index() == 0:
    print(f"done in {summary['wall_s']:.0f}s:")
    print(metrics.summary_table({FLAGS.workdir: summary}))


if __name__ == "__main__":
  host_malloc.reexec_with_tunables()
  cli.run(main)
