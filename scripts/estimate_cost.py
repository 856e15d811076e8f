r"""Prints what a config will cost to train, without allocating the model.

  python scripts/estimate_cost.py --config=configs/pretrain.py:variant=L/16,data=imagenet21k \
      --train_examples=13_900_000 --assumed_mfu=0.4 [--devices=tpu_v4:256]

Parameters, FLOPs per example (analytic, and XLA's count of the lowered
program), total training FLOPs and TPUv3-core-days at the assumed MFU; see
`vit_jax/cost/estimate.py` for the formula. With --devices, the plan for
that hardware: per-device bytes of parameters, optimizer state, batch and
activations, whether they fit, the step's FLOPs and time; a layout that does
not fit is refused, naming the setting that would make it fit
(docs/scaling.md). `python -m vit_jax.main --dry_run` takes the same flags,
prints the same for a job and exits.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vit_jax.runtime import cli  # noqa: E402

FLAGS = cli.command_flags(__name__)
_CONFIG = config_flags.DEFINE_config_file("config", None, "Config to estimate.",
                                          flag_values=FLAGS, lock_config=True)
_ASSUMED_MFU, _TRAIN_EXAMPLES, _DEVICES = cli.define_estimate_flags(FLAGS)
flags.mark_flag_as_required("config", flag_values=FLAGS)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  cli.check_config_kind(_CONFIG.value, suite=False)
  from vit_jax.cost import estimate  # after flag parsing: --help is fast

  estimate.print_report(_CONFIG.value, train_examples=_TRAIN_EXAMPLES.value,
                        mfu=_ASSUMED_MFU.value, devices=_DEVICES.value)


if __name__ == "__main__":
  cli.run(main)
