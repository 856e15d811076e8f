r"""Runs a transfer suite and prints its table; flags only, the work is in `evaluators.transfer`.

  python -m vit_jax.transfer --workdir=runs/b16_i21k/transfer \
      --config=configs/transfer.py:suite=paper,init=runs/b16_i21k

Re-running the same command on the same workdir skips the fine-tunes that
finished and resumes the one that did not. `scripts/summarize.py WORKDIR`
prints the table again. On several hosts, run the same command on every
host, as for `vit_jax.main`.

The fine-tunes share JAX's persistent compilation cache (in the workdir by
default): a benchmark's runs differ only in learning rate, seed and split,
so the programs other than the train step (parameter init, state set-up,
evaluation, checkpointing) compile once per benchmark, not once per run, and
a resumed suite compiles nothing it compiled before.
"""
import os

from absl import app, flags
from ml_collections import config_flags

from vit_jax.runtime import cli, cpu_devices, distributed, host_malloc

# TensorFlow only reads input here; its C++ start-up chatter is noise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Suite config and its arguments, e.g. "
    "configs/transfer.py:suite=paper,init=runs/b16_i21k.", lock_config=True)
flags.DEFINE_string("workdir", None, "Where the suite keeps its runs and table.")
flags.DEFINE_string("compilation_cache", None,
                    "JAX's persistent compilation cache, which the fine-tunes share; "
                    "default WORKDIR/compilation_cache, 'none' turns it off.")
cli.define_distributed_flags(FLAGS)
flags.mark_flags_as_required(["config", "workdir"])
cli.refuse_empty_flag("workdir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.quiet_library_logs()
  cli.check_config_kind(FLAGS.config, suite=True)
  cli.check_no_file_in_the_way("workdir", FLAGS.workdir,
                               "it is the directory the suite keeps its runs and table "
                               "in (made if need be)")
  import jax  # after flag parsing, so --help is fast

  distributed.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                     FLAGS.process_id)
  config = FLAGS.config
  cache = FLAGS.compilation_cache or os.path.join(FLAGS.workdir, "compilation_cache")
  if cache != "none":
    jax.config.update("jax_compilation_cache_dir", cache)
    # The programs a run repeats are small ones too: every one is kept.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  cpu_devices.use_one_device_per_core(tuple(
      size for bench in config.benchmarks.values()
      for size in (bench.finetune.global_batch // max(bench.finetune.accum_steps, 1),
                   bench.finetune.eval_batch)))
  from vit_jax.evaluators import transfer, transfer_table

  results = transfer.run_suite(config, FLAGS.workdir)
  if jax.process_index() == 0:
    print(transfer_table.markdown(results))


if __name__ == "__main__":
  host_malloc.reexec_with_tunables()
  cli.run(main)
