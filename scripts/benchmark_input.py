r"""Images/s of the input pipeline alone, per host and per core, beside a train step.

  python scripts/benchmark_input.py \
      --pp='decode_jpeg_and_inception_crop(224)|flip_lr|value_range(-1,1)' \
      --pp='decode|inception_crop(224)|flip_lr|value_range(-1,1)'

Writes `--num_images` synthetic 400x350 JPEGs (smooth random images, about
ImageNet's size and JPEG statistics) as TFRecord shards with
`vit_jax.data.tfrecords` (or reads `--data_dir` written before), then
runs `input_pipeline.train_batches` exactly as training does (shuffle,
corrupt-image check, per-example seeds, parallel map, batching) for each
`--pp` string and counts the images it yields over `--seconds`, after a
warm-up. `|onehot(1000)` is appended to a string without labels.

Then, in the same process, it times the train step of `--variant`
(default ViT-Ti/16) as `scripts/benchmark.py` does (`configs/benchmark.py`:
1000 classes, AdamW, softmax cross-entropy; `vit_jax.cost.benchmarking`) at
`--model_batch` 224 px images on the JAX devices (on a CPU host one per
core, as `scripts/benchmark.py` starts them), and prints how many times
the images/s each pipeline delivers exceeds what the step consumes. Both share the machine's cores, so each is measured alone.
Prints one JSON line per measurement.
"""
import argparse
import json
import os
import sys
import tempfile
import time

if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from vit_jax.runtime import host_malloc
  host_malloc.reexec_with_tunables()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from configs import benchmark as benchmark_config  # noqa: E402
from configs import common  # noqa: E402
from vit_jax.cost import benchmarking  # noqa: E402
from vit_jax.data import input_pipeline
from vit_jax.runtime import cpu_devices
from vit_jax.data import tfrecords  # noqa: E402

NUM_CLASSES = 1000
DEFAULT_PP = ("decode_jpeg_and_inception_crop(224)|flip_lr|value_range(-1,1)",
              "decode|inception_crop(224)|flip_lr|value_range(-1,1)")


def synthetic_jpegs(num, height=350, width=400, seed=0):
  """(encode thunk, [class]) pairs of smooth random images with some texture."""
  rng = np.random.default_rng(seed)

  def encode(index):
    coarse = rng.integers(0, 256, (1, 6, 7, 3)).astype(np.float32)
    smooth = tf.image.resize(coarse, (height, width), method="bicubic")[0]
    noise = np.random.default_rng(index).normal(0, 12, (height, width, 3))
    image = tf.saturate_cast(smooth + noise, tf.uint8)
    return tf.io.encode_jpeg(image, quality=90).numpy()
  return [((lambda i=i: encode(i)), [int(rng.integers(NUM_CLASSES))]) for i in range(num)]


def data_config(data_dir):
  """The JFT-style TFRecord preset, single-label over the synthetic shards."""
  config = common.dataset_config("jft", data_dir=data_dir)
  config.update(name="synthetic_jpegs", num_classes=NUM_CLASSES, multi_label=False,
                train_split="train", eval_splits={}, shuffle_buffer=1024,
                prepare="scripts/benchmark_input.py")
  return config


def pipeline_images_per_second(config, pp, *, batch, seconds, warmup_batches=3):
  if "onehot" not in pp:
    pp += f"|onehot({NUM_CLASSES})"
  batches = input_pipeline.train_batches(config, pp, global_batch=batch, seed=0,
                                         process_index=0, process_count=1)
  for _ in range(warmup_batches):
    next(batches)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    count += len(next(batches)["image"])
  return count / (time.perf_counter() - start)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--pp", action="append", help="preprocessing string (repeatable)")
  parser.add_argument("--data_dir", help="TFRecords written by an earlier run")
  parser.add_argument("--num_images", type=int, default=512)
  parser.add_argument("--batch", type=int, default=64, help="pipeline batch")
  parser.add_argument("--seconds", type=float, default=15.0, help="per pipeline")
  parser.add_argument("--variant", default="Ti/16", help="'' skips the train step")
  parser.add_argument("--model_batch", type=int, default=32)
  parser.add_argument("--model_steps", type=int, default=5)
  args = parser.parse_args(argv)
  if args.variant:  # the step on one device per core, as scripts/benchmark.py runs it
    cpu_devices.use_one_device_per_core((args.model_batch,))

  cores = len(os.sched_getaffinity(0))
  data_dir = args.data_dir or tempfile.mkdtemp(prefix="benchmark_input_")
  if not os.path.exists(os.path.join(data_dir, "manifest.json")):
    tfrecords.write_split(data_dir, "train", synthetic_jpegs(args.num_images),
                          num_shards=16, workers=cores)
  results = []
  for pp in args.pp or DEFAULT_PP:
    rate = pipeline_images_per_second(data_config(data_dir), pp, batch=args.batch,
                                      seconds=args.seconds)
    results.append({"pp": pp, "images_per_s": round(rate, 1),
                    "images_per_s_per_core": round(rate / cores, 1), "cores": cores})
    print(json.dumps(results[-1]), flush=True)
  if args.variant:
    step_config = benchmark_config.get_config(f"variant={args.variant}")
    timing, _ = benchmarking.measure(step_config, args.model_batch,
                                     steps=args.model_steps, rounds=1, warmup=2,
                                     inference=False)
    step_rate = timing["train"]["img_per_sec"]
    print(json.dumps({"train_step": f"ViT-{args.variant} batch {args.model_batch} 224px",
                      "device": jax.devices()[0].device_kind,
                      "devices": jax.device_count(),
                      "images_per_s": round(step_rate, 1)}), flush=True)
    for result in results:
      print(json.dumps({"pp": result["pp"], "pipeline_over_step":
                        round(result["images_per_s"] / step_rate, 2)}))


if __name__ == "__main__":
  main()
