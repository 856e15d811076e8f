"""One process of a multi-host run on loopback, for tests/train/test_multihost.py.

  python tests/multihost_worker.py ADDRESS NUM_PROCESSES PROCESS_ID CONFIG WORKDIR

CONFIG is a pickled ConfigDict. The process joins the run through
`vit_jax.runtime.distributed.initialize_distributed` (the code behind main's flags), sees
2 emulated CPU devices, trains with `train_and_evaluate`, and writes
WORKDIR/seen_<PROCESS_ID>.json: for each train batch it fed, a hash of each
of its examples, so the test can tell which data each process saw.
"""
import hashlib
import json
import os
import pickle
import sys


def example_hashes(batch):
  return [hashlib.sha1(image.tobytes()).hexdigest()[:16] for image in batch["image"]]


def recording(train_batches, seen):
  def batches(*args, **kwargs):
    for batch in train_batches(*args, **kwargs):
      seen.append(example_hashes(batch))
      yield batch
  return batches


def run(address, num_processes, process_id, config_path, workdir):
  from vit_jax import train
  from vit_jax.data import input_pipeline
  from vit_jax.runtime import distributed

  distributed.initialize_distributed(address, int(num_processes), int(process_id),
                                     timeout_s=60)
  with open(config_path, "rb") as f:
    config = pickle.load(f)
  seen = []
  input_pipeline.train_batches = recording(input_pipeline.train_batches, seen)
  train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, f"seen_{process_id}.json"), "w") as f:
    json.dump(seen, f)


if __name__ == "__main__":
  # Before jax is imported: XLA reads them when its backend starts.
  os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  os.environ["JAX_PLATFORMS"] = "cpu"
  run(*sys.argv[1:])
