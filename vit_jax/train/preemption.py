"""Preemption: SIGTERM (or the cluster's notice) ends a run with a checkpoint.

Preemptible TPUs and spot GPUs send SIGTERM some seconds before the machine
goes away. The handler only records the request; the training loop asks
`StopRequest.reached(step)` at every step boundary, saves a checkpoint of
that step and raises `Preempted`, so re-running the same command resumes
exactly there.

With several processes every one of them must stop at the same step, or the
collective save hangs. There JAX's preemption service (started by
`jax.distributed.initialize`) catches SIGTERM itself and agrees on the step
with all processes through orbax's `reached_preemption`, so this module
installs no handler of its own: it would replace JAX's.
"""
import signal
import threading

import jax

# What a process killed by SIGTERM reports (128 + 15), so that a wrapper
# script or scheduler can tell a preempted run from a finished one.
EXIT_CODE = 128 + signal.SIGTERM


class Preempted(Exception):
  """The run stopped on a preemption notice after committing a checkpoint."""

  def __init__(self, step, checkpoint_dir):
    super().__init__(f"preempted: stopped at step {step} with its checkpoint "
                     f"committed in {checkpoint_dir}; run the same command "
                     f"to resume")
    self.step = step


class StopRequest:
  """Turns SIGTERM into a request that the loop polls at step boundaries."""

  def __init__(self, manager):
    self._manager = manager
    self._requested = False
    self._previous = None  # the handler to put back, once installed

  def install(self):
    # Python lets only the main thread install signal handlers.
    if (jax.process_count() == 1
        and threading.current_thread() is threading.main_thread()):
      self._previous = signal.signal(signal.SIGTERM, self._record) or signal.SIG_DFL

  def uninstall(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def _record(self, signum, frame):
    del signum, frame  # only a flag: the loop acts at the next step boundary
    self._requested = True

  def reached(self, step):
    """Whether the run should save ``step`` and stop.

    Called at every step (JAX's sync protocol needs each step id).
    """
    return self._requested or self._manager.reached_preemption(step)
