"""Joining a multi-host run: jax's multi-controller runtime, started safely.

One process per host, all running the same command; `jax.distributed` joins
them into one set of global devices. On Cloud TPU VMs and in SLURM job steps
of several tasks jax finds the coordinator itself; anywhere else (also N
processes on one machine, on CPU) the flags --coordinator_address,
--num_processes and --process_id say it. A misconfigured launch is a clear
error within the timeout, never a hang: jax's own timeout aborts from C++
with a message that blames "another task", so the checks here come first.
"""
import errno
import glob
import importlib.util
import os
import socket
import sys
import threading
import time

from absl import app


def _in_slurm_step_of_several_tasks():
  """Inside `srun` with several tasks: what jax's SLURM detection reads."""
  names = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS",
           "SLURM_PROCID", "SLURM_LOCALID")
  return (all(name in os.environ for name in names)
          and int(os.environ["SLURM_NTASKS"]) > 1)


def _on_cloud_tpu_vm():
  """A Cloud TPU VM (GCE or GKE): libtpu is installed and TPU chips show."""
  if "TPU_WORKER_HOSTNAMES" in os.environ or "TPU_PROCESS_ADDRESSES" in os.environ:
    return True
  return (importlib.util.find_spec("libtpu") is not None
          and bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")))


def _check_address(address):
  """Refuses a --coordinator_address that is not HOST:PORT, at once.

  Without the check a missing or bad port surfaces late and as something
  else: process 0 dies in jax with an IndexError, the others wait the whole
  --distributed_timeout to report that nothing answered.
  """
  host, _, port = address.rpartition(":")
  if not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
    raise app.UsageError(
        f"--coordinator_address={address} is not HOST:PORT: give the host of "
        f"process 0 and a free port on it in 1-65535, e.g. 10.0.0.1:12355 "
        f"(or [::1]:12355)")


def _check_port_free(address):
  """Refuses, on process 0, a coordinator port it cannot listen on.

  jax's coordinator listens on every interface at that port; where it cannot,
  jax raises "Failed to start RPC server" or, as often, crashes the process
  (a segmentation fault seen with jax 0.10), so the port is tried first.
  SO_REUSEADDR, as gRPC sets it, so a recent run's closed connections do
  not count as the port in use. A host without IPv6 is tried on IPv4, as
  gRPC falls back to it.
  """
  port = int(address.rpartition(":")[2])
  for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "")):
    try:
      with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
      return
    except OSError as error:
      if error.errno in (errno.EADDRINUSE, errno.EACCES):
        raise ConnectionError(
            f"process 0 could not start the coordinator's server "
            f"(--coordinator_address={address}): its port is in use, or not "
            f"one this process may listen on; choose a free port for process "
            f"0 and give every process the same address ({error})") from None
  # Neither family could even try: leave it to jax.


def _wait_for_coordinator(address, deadline, timeout_s):
  """Returns once something listens at ``address``; raises at ``deadline``."""
  host, _, port = address.rpartition(":")
  while True:
    try:
      socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
      return
    except (OSError, ValueError) as e:
      last_error = e
    if time.monotonic() >= deadline:
      raise ConnectionError(
          f"nothing answered at the coordinator address {address} "
          f"(--coordinator_address) within {timeout_s}s "
          f"(--distributed_timeout): start process 0 with the same "
          f"--coordinator_address, and check that this host can reach that "
          f"host and port ({last_error})")
    time.sleep(0.5)


def _exit_unless_done(seconds, message):
  """Ends the process with ``message`` unless cancelled within ``seconds``.

  jax's own initialization timeout aborts the process from C++ with a
  message that blames another task; this says what to check instead.
  """
  def give_up():
    print(f"FATAL: {message}", file=sys.stderr, flush=True)
    os._exit(1)
  timer = threading.Timer(seconds, give_up)
  timer.daemon = True
  timer.start()
  return timer


def initialize_distributed(coordinator_address=None, num_processes=None,
                           process_id=None, *, timeout_s=300):
  """Joins a multi-host run, from the flags' values or the detected cluster.

  Does nothing on a single host without flags. Every way out within
  ``timeout_s`` is a clear error rather than a hang: a wrong --process_id or
  --num_processes, an address that is not HOST:PORT and, on process 0, a
  port it cannot listen on fail at once, an unreachable coordinator when the
  time is up, and so does
  a run in which fewer processes start than --num_processes says.
  """
  import jax

  chosen = {"--coordinator_address": coordinator_address,
            "--num_processes": num_processes, "--process_id": process_id}
  deadline = time.monotonic() + timeout_s
  if any(value is not None for value in chosen.values()):
    missing = [name for name, value in chosen.items() if value is None]
    if missing:
      raise app.UsageError(f"a multi-host run needs {', '.join(chosen)}; "
                           f"missing {', '.join(missing)}")
    if num_processes < 1:
      raise app.UsageError(f"--num_processes={num_processes}: a run has at "
                           f"least 1 process")
    if not 0 <= process_id < num_processes:
      raise app.UsageError(f"--process_id={process_id} is not in "
                           f"[0, --num_processes={num_processes})")
    _check_address(coordinator_address)
    if process_id != 0:
      _wait_for_coordinator(coordinator_address, deadline, timeout_s)
    else:
      _check_port_free(coordinator_address)
    expected = (f"the {num_processes} processes (--num_processes) of "
                f"--coordinator_address={coordinator_address} joined; start "
                f"exactly that many, each with its own --process_id and the "
                f"same --coordinator_address and --num_processes")
    arguments = dict(coordinator_address=coordinator_address,
                     num_processes=num_processes, process_id=process_id)
  elif _in_slurm_step_of_several_tasks():
    expected = (f"the {os.environ['SLURM_NTASKS']} tasks of this SLURM job "
                f"step (SLURM_NTASKS) joined; each task must run this command")
    arguments = {}
  elif _on_cloud_tpu_vm():
    expected = ("the workers of this Cloud TPU slice joined; run this "
                "command on every worker (gcloud ... ssh --worker=all)")
    arguments = {}
  else:
    return
  timer = _exit_unless_done(
      max(deadline - time.monotonic(), 1),
      f"the distributed runtime did not start within {timeout_s}s "
      f"(--distributed_timeout): not all of {expected}")
  try:
    # jax's own limit comes later, so that the message above is the one seen.
    jax.distributed.initialize(**arguments, initialization_timeout=timeout_s + 60)
  finally:
    timer.cancel()
