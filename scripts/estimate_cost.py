r"""Prints what a config will cost to train, without allocating the model.

  python scripts/estimate_cost.py --config=configs/pretrain.py:variant=L/16,data=imagenet21k \
      --train_examples=13_900_000 --mfu=0.4

Parameters, FLOPs per example (analytic, and XLA's count of the lowered
program), total training FLOPs and TPUv3-core-days at the assumed MFU; see
`vit_jax/estimate.py` for the formula. `python -m vit_jax.main
--dry_run` prints the same for a job and exits.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config to estimate.",
                                lock_config=True)
flags.DEFINE_float("mfu", 0.4, "Assumed model FLOPs utilisation on TPU v3.")
flags.register_validator("mfu", lambda mfu: 0 < mfu <= 1,
                         "must be in (0, 1], a fraction of TPU v3's peak")
flags.DEFINE_integer("train_examples", None,
                     "Size of the training split, for configs counted in "
                     "epochs (default: read from the prepared dataset).")
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from vit_jax.cost import estimate

  try:
    print(estimate.report(FLAGS.config, train_examples=FLAGS.train_examples,
                               mfu=FLAGS.mfu))
  except ValueError as e:  # a config that cannot be estimated, named
    raise SystemExit(str(e)) from None


if __name__ == "__main__":
  app.run(main)
