r"""What a few-shot probe of a ViT-B/16-sized model costs: features/s, seconds, host memory.

  python scripts/benchmark_fewshot.py [--variant=B/16] [--image_size=224] \
      [--num_train=500,2000] [--num_test=500] [--devices=8] [--data_dir=data/tfds]

Runs the probes' own code (`vit_jax.evaluators.fewshot`, as a run's
`config.fewshot` does): `extract_features` of a randomly initialised
`--variant` with a pre_logits layer of its hidden size (pre-training's), its
parameters placed and its batches split as the trainer does, on `--devices`
emulated CPU devices; then `probe_accuracies` at 1, 5, 10 and 25 shots with
3 seeds. The data is real and offline: the first N training images of
Fashion-MNIST (`fashion_mnist_local`, `python scripts/prepare_data.py
--dataset=fashion_mnist_local --data_dir=data/tfds`) for each N of
`--num_train`, scored on the first `--num_test` of its test split, read
through the eval preprocessing at `--image_size`.

Prints one JSON line per N: features/s (train and test images over the
extraction's seconds), the probe's seconds (extraction and solves), and what
the host holds: the growth of its peak resident memory over the probe
(VmHWM, reset before each probe) and the peak of what Python and numpy
allocate (tracemalloc) beside ``feature_bytes``, the features' own
(N + num_test) x hidden x 4. The host holds the features and one sorted
copy of a split, nothing per example, so between two N both peaks grow by
about twice the feature bytes of the extra examples (``per_example_bytes``
on the last line, against ``row_bytes``).

glibc's default allocator is kept (no `host_malloc` tunables, unlike the
trainer): with them the heap grows a GiB at a time and is never trimmed, so
the resident memory would show the allocator's padding, not what is held.
The first probe of a process compiles; a one-batch probe before the timed
ones keeps the compile out of them.
"""
import gc
import json
import os
import time
import tracemalloc

import jax
import numpy as np
from absl import app, flags

from configs import common
from vit_jax import models
from vit_jax.data import input_pipeline, sources
from vit_jax.evaluators import fewshot
from vit_jax.models import build
from vit_jax.runtime import cli, cpu_devices
from vit_jax.train import sharding

SHOTS, SEEDS = (1, 5, 10, 25), (0, 1, 2)

FLAGS = cli.command_flags(__name__)
_VARIANT = flags.DEFINE_string("variant", "B/16", "The ViT whose features are probed.",
                               flag_values=FLAGS)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "Side of the images the model sees.",
                                   lower_bound=1, flag_values=FLAGS)
_NUM_TRAIN = flags.DEFINE_list("num_train", ["500", "2000"], "Training images the shots "
                               "are drawn from, a probe for each.", flag_values=FLAGS)
_NUM_TEST = flags.DEFINE_integer("num_test", 500, "Test images each probe scores.",
                                 lower_bound=1, flag_values=FLAGS)
_DEVICES = flags.DEFINE_integer("devices", 8, "Emulated CPU devices (unless "
                                "XLA_FLAGS or JAX_NUM_CPU_DEVICES chose).", lower_bound=1,
                                flag_values=FLAGS)
_BATCH = flags.DEFINE_integer("batch", 64, "The global eval batch.", lower_bound=1,
                              flag_values=FLAGS)
_DATA_DIR = flags.DEFINE_string("data_dir", "data/tfds", "Where fashion_mnist_local is.",
                                flag_values=FLAGS)


def probe_config():
  """A pre-training config of `--variant` over Fashion-MNIST: its model, data, batches."""
  config = common.base_config()
  config.variant = _VARIANT.value
  config.image_size = _IMAGE_SIZE.value
  config.eval_batch = _BATCH.value
  config.data = common.dataset_config("fashion_mnist", data_dir=_DATA_DIR.value)
  config.pp = dict(eval=f"decode|resize({_IMAGE_SIZE.value})|value_range(-1,1)|onehot(10)")
  hidden_size = models.get_model(config.variant, num_classes=1).hidden_size
  config.model.representation_size = hidden_size
  return config


def peak_resident_bytes():
  """The process's peak resident memory since the last `reset_peak_resident`."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) * 1024
  raise RuntimeError("no VmHWM in /proc/self/status")


def resident_bytes():
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * 4096


def reset_peak_resident():
  """Sets VmHWM to the current resident memory (Linux >= 4.0: clear_refs 5)."""
  with open("/proc/self/clear_refs", "w") as f:
    f.write("5")


def probe(feature_step, params, data, batch_sharding):
  """One probe, as `fewshot.run_probes` makes it, measured."""
  gc.collect()
  reset_peak_resident()
  resident = resident_bytes()
  tracemalloc.start()
  start = time.perf_counter()
  features = {part: fewshot.extract_features(feature_step, params, eval_data,
                                             batch_sharding)
              for part, eval_data in data.items()}
  extracted = time.perf_counter()
  accuracies = fewshot.probe_accuracies(features["train"], features["test"], shots=SHOTS,
                                        seeds=SEEDS, num_classes=10)
  seconds = time.perf_counter() - start
  traced_peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  examples = sum(len(labels) for _, labels in features.values())
  return dict(
      examples=examples, features_per_s=round(examples / (extracted - start), 1),
      extract_s=round(extracted - start, 2), solve_s=round(seconds - (extracted - start), 3),
      probe_s=round(seconds, 2),
      feature_bytes=sum(x.nbytes for x, _ in features.values()),
      peak_rss_growth_bytes=peak_resident_bytes() - resident,
      traced_peak_bytes=traced_peak,
      accuracy={f"{k}shot": round(float(np.mean(v)), 4) for k, v in accuracies.items()})


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    num_train = sorted({int(n) for n in _NUM_TRAIN.value})
  except ValueError:
    raise app.UsageError(f"--num_train={','.join(_NUM_TRAIN.value)}: expected "
                         f"integers") from None
  if not num_train or num_train[0] < 1:  # train[:-5] would be all but 5 images
    raise app.UsageError(f"--num_train={','.join(_NUM_TRAIN.value)}: expected counts "
                         f"of 1 or more")
  if not cpu_devices.chosen_by_user():
    jax.config.update("jax_num_cpu_devices", _DEVICES.value)
  config = probe_config()
  source = sources.get_source(config.data)
  mesh = sharding.make_mesh(config.mesh)
  batch_sharding = sharding.batch_sharding(mesh)
  model = build.model_from_config(config)
  params = build.init_params(model, config.image_size, seed=0)
  params = jax.device_put(params, sharding.param_shardings(mesh, params, config.mesh))
  feature_step = fewshot.make_feature_step(model)

  def data(n):
    return {part: input_pipeline.EvalData(source, config.pp.eval, split,
                                          global_batch=config.eval_batch,
                                          image_size=config.image_size, keyed=True)
            for part, split in (("train", f"train[:{n}]"),
                                ("test", f"test[:{_NUM_TEST.value}]"))}

  common_fields = dict(variant=config.variant, image_size=config.image_size,
                       devices=jax.device_count(), batch=config.eval_batch,
                       cpu=cpu_devices.host_cpu_name(),
                       cores=len(os.sched_getaffinity(0)))
  probe(feature_step, params, data(config.eval_batch), batch_sharding)  # compiles
  rows = []
  for n in num_train:
    rows.append({**common_fields, "num_train": n, "num_test": _NUM_TEST.value,
                 **probe(feature_step, params, data(n), batch_sharding)})
    print(json.dumps(rows[-1]), flush=True)
  if len(rows) > 1:
    first, last = rows[0], rows[-1]
    extra = last["examples"] - first["examples"]
    if extra == 0:  # counts past the split's size give the same probe
      return
    print(json.dumps({
        "row_bytes": last["feature_bytes"] // last["examples"],
        "per_example_bytes": {
            key: round((last[key] - first[key]) / extra, 1)
            for key in ("peak_rss_growth_bytes", "traced_peak_bytes")}}), flush=True)


if __name__ == "__main__":
  cli.run(main)
