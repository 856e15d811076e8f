"""`python -m vit_jax.main` with one fault injected at a chosen moment.

  python tests/fault_injection.py FAULT:STEP --config=... --workdir=...

FAULT is one of
  sigkill      the process SIGKILLs itself when it logs training step STEP;
  sigkill_save ... while orbax commits the checkpoint of step STEP (every
               file written, the step directory not yet renamed into place:
               the last moment a crash can hit an asynchronous save);
  sigterm      the process gets SIGTERM when it logs step STEP (a preemption).

The signals are real, so what follows is what a crash or a preemption does;
the hooks only choose the moment, which makes the tests deterministic. The
production code has no hook of its own.
"""
import asyncio
import os
import signal
import sys

from absl import app
from orbax.checkpoint._src.path import atomicity

from vit_jax import main
from vit_jax.train import metrics

SIGNALS = {"sigkill": signal.SIGKILL, "sigterm": signal.SIGTERM}


def signal_at_log(signum, at_step):
  write = metrics.MetricWriter.write

  def write_then_signal(self, step, scalars, *, split="train"):
    write(self, step, scalars, split=split)
    if split == "train" and step == at_step:
      os.kill(os.getpid(), signum)

  metrics.MetricWriter.write = write_then_signal


def sigkill_in_commit(at_step):
  finalize = atomicity.AtomicRenameTemporaryPath.finalize

  async def finalize_or_die(self):
    if self._final_path.name == str(at_step):  # the step dir, not its items
      sys.stderr.flush()
      os.kill(os.getpid(), signal.SIGKILL)
      await asyncio.sleep(60)  # SIGKILL is not handled; this never returns
    return await finalize(self)

  atomicity.AtomicRenameTemporaryPath.finalize = finalize_or_die


if __name__ == "__main__":
  fault, _, at = sys.argv.pop(1).partition(":")
  if fault == "sigkill_save":
    sigkill_in_commit(int(at))
  else:
    signal_at_log(SIGNALS[fault], int(at))
  app.run(main.main)
