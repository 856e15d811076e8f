"""Flags of a multi-host launch that are wrong on their face fail at once.

These are refused before anything joins or waits, so they run in this
process: `initialize_distributed` raises before it calls jax.distributed.
A port process 0 cannot listen on is found by jax, so that case runs the
command in a process of its own.
"""
import os
import socket
import subprocess
import sys
import time

import pytest
from absl import app

from vit_jax.runtime import distributed
from repo_root import REPO


@pytest.mark.parametrize("address, process_id", [
    ("localhost", 0),  # jax itself fails with an IndexError
    ("localhost", 1),  # would wait the whole timeout for nothing
    ("localhost:", 1),
    ("localhost:99999", 0),  # would wait the whole timeout for nothing
    (":12355", 1),
])
def test_a_coordinator_address_without_a_valid_port_is_refused_at_once(
    address, process_id):
  start = time.monotonic()
  with pytest.raises(app.UsageError) as error:
    distributed.initialize_distributed(address, 2, process_id, timeout_s=30)
  assert time.monotonic() - start < 5
  assert str(error.value) == (
      f"--coordinator_address={address} is not HOST:PORT: give the host of "
      f"process 0 and a free port on it in 1-65535, e.g. 10.0.0.1:12355 "
      f"(or [::1]:12355)")


def test_a_run_of_no_processes_is_refused_naming_the_flag():
  with pytest.raises(app.UsageError) as error:
    distributed.initialize_distributed("localhost:12355", 0, 0, timeout_s=30)
  assert str(error.value) == "--num_processes=0: a run has at least 1 process"


def test_a_coordinator_port_in_use_is_one_line_naming_the_flag():
  """Process 0 cannot listen there: jax says only 'Failed to start RPC
  server', with a traceback, or crashes; the command says which flag to
  change, before jax tries."""
  with socket.socket() as taken:
    taken.bind(("", 0))
    taken.listen()
    port = taken.getsockname()[1]
    result = subprocess.run(
        [sys.executable, "-m", "vit_jax.main", "--config=configs/demo.py",
         "--workdir=unused", f"--coordinator_address=127.0.0.1:{port}",
         "--num_processes=2", "--process_id=0", "--distributed_timeout=20"],
        cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu", GLIBC_TUNABLES=""),
        capture_output=True, text=True, timeout=120)
  assert result.returncode == 1
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1] == (
      f"error: process 0 could not start the coordinator's server "
      f"(--coordinator_address=127.0.0.1:{port}): its port is in use, or not "
      f"one this process may listen on; choose a free port for process 0 and "
      f"give every process the same address ([Errno 98] Address already in "
      f"use)")
