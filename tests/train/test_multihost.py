"""Several processes on loopback (gloo CPU collectives), as on several hosts.

Each process is a subprocess with 2 emulated CPU devices that joins through
`vit_jax.main`'s distributed set-up. Every subprocess has a timeout, so a
hang fails the test instead of stalling the suite.
"""
import json
import os
import pickle
import re
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import tiny_config
from multihost_worker import example_hashes
from vit_jax import train
from vit_jax.models import pretrained
from vit_jax.data import input_pipeline, sources
from repo_root import REPO

pytestmark = pytest.mark.slow
WORKER = os.path.join(REPO, "tests", "multihost_worker.py")
ENV = dict(os.environ, PYTHONPATH=REPO, XLA_FLAGS="",
           TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
STEPS = 3


def free_address():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return f"127.0.0.1:{s.getsockname()[1]}"


def port_is_free(port):
  with socket.socket() as s:
    try:
      s.bind(("127.0.0.1", port))
    except OSError:
      return False
    return True


def run_processes(commands, timeout, envs=None):
  """Runs the commands at once; [(returncode, stdout, stderr)].

  All are killed at ``timeout``, which then fails the test.
  """
  envs = envs or [ENV] * len(commands)
  processes = [subprocess.Popen(c, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
               for c, env in zip(commands, envs)]
  deadline = time.monotonic() + timeout
  results = []
  try:
    for p in processes:
      stdout, stderr = p.communicate(timeout=max(deadline - time.monotonic(), 1))
      results.append((p.returncode, stdout, stderr))
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()
        p.wait()
  return results


def run_workers(config, workdir, tmp_path, num_processes=2, timeout=300):
  config_path = tmp_path / "config.pkl"
  config_path.write_bytes(pickle.dumps(config))
  address = free_address()
  return run_processes(
      [[sys.executable, WORKER, address, str(num_processes), str(i),
        str(config_path), workdir] for i in range(num_processes)], timeout)


def two_process_batches(real_train_batches):
  """The global batches two processes feed, built in one process.

  Process i reads tfds.even_splits(split, 2)[i], shuffled with its own seed;
  the global batch is the two host batches side by side.
  """
  def batches(*args, **kwargs):
    streams = [real_train_batches(*args, process_index=i, process_count=2, **kwargs)
               for i in range(2)]
    for parts in zip(*streams):
      yield {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
  return batches


def test_two_processes_train_like_one_process_on_the_same_global_batches(
    fashion_data_dir, tmp_path, monkeypatch):
  """2 processes x 2 devices == 1 process x 4 devices, on the same batches.

  The processes shuffle their own halves of the split with their own seeds,
  so one process reading the whole split would see other global batches.
  The reference therefore builds each global batch from the two per-process
  streams (`train_batches(process_index=i, process_count=2)`), concatenated,
  and runs the same `train_and_evaluate` on 4 devices of this process. The
  batch order within a global batch differs from the 2-process mesh, which
  only reorders the sums of the mean loss: equal within float tolerance.
  No flips, so each example's hash identifies it. SGD, because Adam turns
  the rounding noise of a zero gradient (the attention key bias has one:
  softmax ignores a shift of every logit) into steps of the full lr.
  """
  config = tiny_config(fashion_data_dir, total_steps=STEPS, log_every=1,
                       eval_every=STEPS, checkpoint_every=STEPS,
                       **{"pp.train": "decode|resize(16)|value_range(-1,1)|onehot(10)",
                          "optim.name": "sgd", "fewshot.every": STEPS,
                          "fewshot.shots": (1, 5), "fewshot.seeds": (0, 1)})
  workdir = str(tmp_path / "two_processes")
  results = run_workers(config, workdir, tmp_path)
  for returncode, _, stderr in results:
    assert returncode == 0, stderr[-3000:]

  seen = []
  for i in range(2):
    with open(os.path.join(workdir, f"seen_{i}.json")) as f:
      seen.append(json.load(f))
  local_batch = config.global_batch // 2
  for batches in seen:
    assert len(batches) >= STEPS and all(len(b) == local_batch for b in batches)
  first, second = ({h for batch in batches for h in batch} for batches in seen)
  assert len(first) == len(seen[0]) * local_batch  # no example twice
  assert not first & second  # the processes saw disjoint data

  # Only process 0 writes the metrics: each step is logged once.
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    train_steps = [r["step"] for r in map(json.loads, f) if r["split"] == "train"]
  assert train_steps == list(range(1, STEPS + 1))

  global_batches = two_process_batches(input_pipeline.train_batches)
  reference_batches = global_batches(sources.get_source(config.data), config.pp.train,
                                     global_batch=config.global_batch, seed=config.seed)
  for step, batch in zip(range(STEPS), reference_batches):
    assert example_hashes(batch) == seen[0][step] + seen[1][step]
  reference = str(tmp_path / "one_process")
  monkeypatch.setattr(input_pipeline, "train_batches", global_batches)
  train.train_and_evaluate(config, reference, devices=jax.devices()[:4])
  trained = pretrained.read_params(workdir)
  assert not np.allclose(trained["head"]["kernel"], 0)  # the head starts at zero
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               trained, pretrained.read_params(reference))
  # The few-shot probes draw the same shots from the two processes' features.
  probes = []
  for run in (workdir, reference):
    with open(os.path.join(run, "metrics.jsonl")) as f:
      probes.append([(r["1shot"], r["5shot"]) for r in map(json.loads, f)
                     if r["split"] == "fewshot"])
  assert len(probes[0]) == 1 and probes[0] == probes[1], probes


def main_command(tmp_path, *flags):
  return [sys.executable, "-m", "vit_jax.main", "--config=configs/demo.py",
          f"--workdir={tmp_path / 'run'}", "--distributed_timeout=3", *flags]


@pytest.mark.parametrize("num_processes, process_ids, message", [
    # Two processes start, both told there are three: none may begin.
    (3, (0, 1), r"FATAL: the distributed runtime did not start within 3s "
                r"\(--distributed_timeout\): not all of the 3 processes "
                r"\(--num_processes\) of --coordinator_address=127.0.0.1:\d+ joined"),
    # Process 1 without a process 0: nothing listens at the address.
    (2, (1,), r"nothing answered at the coordinator address 127.0.0.1:\d+ "
              r"\(--coordinator_address\) within 3s \(--distributed_timeout\)"),
    (2, (2,), r"--process_id=2 is not in \[0, --num_processes=2\)"),
], ids=["fewer_processes_than_said", "no_coordinator", "process_id_out_of_range"])
def test_a_misconfigured_multi_host_launch_fails_with_a_clear_error(
    tmp_path, num_processes, process_ids, message):
  address = free_address()
  start = time.monotonic()
  results = run_processes(
      [main_command(tmp_path, f"--coordinator_address={address}",
                f"--num_processes={num_processes}", f"--process_id={i}")
       for i in process_ids], timeout=60)
  assert time.monotonic() - start < 40
  for returncode, _, stderr in results:
    assert returncode != 0
    assert re.search(message, stderr), stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]  # the message alone


def test_a_global_batch_the_devices_of_all_hosts_cannot_split_is_a_clear_error(
    fashion_data_dir, tmp_path):
  config = tiny_config(fashion_data_dir, global_batch=6)
  start = time.monotonic()
  results = run_workers(config, str(tmp_path / "run"), tmp_path, timeout=120)
  assert time.monotonic() - start < 100
  for returncode, _, stderr in results:
    assert returncode != 0
    assert ("config.global_batch=6 must be divisible by config.accum_steps=1 "
            "x 4 devices") in stderr, stderr[-2000:]


def test_a_slurm_job_step_of_two_tasks_is_detected_without_flags(tmp_path):
  """The variables srun sets, set by hand for two processes on this machine."""
  job_id = next(j for j in range(1000, 5096) if port_is_free(j % 4096 + 61440))
  join = ("from vit_jax.runtime import distributed; "
          "distributed.initialize_distributed(timeout_s=30); import jax; "
          "print('joined', jax.process_index(), jax.process_count(), jax.device_count())")
  envs = [dict(ENV, SLURM_JOB_ID=str(job_id), SLURM_STEP_NODELIST="localhost",
               SLURM_NTASKS="2", SLURM_PROCID=str(task), SLURM_LOCALID=str(task),
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
          for task in range(2)]
  results = run_processes([[sys.executable, "-c", join]] * 2, timeout=60, envs=envs)
  for task, (returncode, stdout, stderr) in enumerate(results):
    assert returncode == 0 and f"joined {task} 2 4" in stdout, stderr[-2000:]
