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
the images/s each pipeline delivers exceeds what the step consumes. Both
share the machine's cores, so each is measured alone. An unknown
`--variant` is refused before anything is written or timed. Prints one
JSON line per measurement.
"""
import json
import os
import tempfile
import time

if __name__ == "__main__":
  from vit_jax.runtime import host_malloc
  host_malloc.reexec_with_tunables()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from configs import benchmark as benchmark_config  # noqa: E402
from configs import common  # noqa: E402
from vit_jax.cost import benchmarking  # noqa: E402
from vit_jax.data import input_pipeline, sources, tfrecords  # noqa: E402
from vit_jax.models import build  # noqa: E402
from vit_jax.runtime import cli, cpu_devices  # noqa: E402

NUM_CLASSES = 1000
DEFAULT_PP = ("decode_jpeg_and_inception_crop(224)|flip_lr|value_range(-1,1)",
              "decode|inception_crop(224)|flip_lr|value_range(-1,1)")

FLAGS = cli.command_flags(__name__)
_PP = flags.DEFINE_multi_string(
    "pp", list(DEFAULT_PP), "A preprocessing string to time (repeatable).",
    flag_values=FLAGS)
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "TFRecords written by an earlier run (default: a fresh "
    "temporary directory).", flag_values=FLAGS)
_NUM_IMAGES = flags.DEFINE_integer("num_images", 512, "Synthetic images to write.",
                                   lower_bound=1, flag_values=FLAGS)
_BATCH = flags.DEFINE_integer("batch", 64, "The pipeline's batch.", lower_bound=1,
                              flag_values=FLAGS)
_SECONDS = flags.DEFINE_float("seconds", 15.0, "Seconds each pipeline is timed.",
                              lower_bound=0, flag_values=FLAGS)
_VARIANT = flags.DEFINE_string("variant", "Ti/16", "The train step's model; '' "
                               "skips the train step.", flag_values=FLAGS)
_MODEL_BATCH = flags.DEFINE_integer("model_batch", 32, "The train step's batch.",
                                    lower_bound=1, flag_values=FLAGS)
_MODEL_STEPS = flags.DEFINE_integer("model_steps", 5, "Train steps timed.",
                                    lower_bound=1, flag_values=FLAGS)


def synthetic_jpegs(num, height=350, width=400, seed=0):
  """(encode thunk, [class]) pairs of smooth random images with some texture."""
  rng = np.random.default_rng(seed)

  def encode(index):
    # Each image's own generator: the thunks run on a writer's threads, in
    # no fixed order.
    image_rng = np.random.default_rng([seed, index])
    coarse = image_rng.integers(0, 256, (1, 6, 7, 3)).astype(np.float32)
    smooth = tf.image.resize(coarse, (height, width), method="bicubic")[0]
    noise = image_rng.normal(0, 12, (height, width, 3))
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
  batches = input_pipeline.train_batches(sources.get_source(config), pp, global_batch=batch,
                                         seed=0, process_index=0, process_count=1)
  for _ in range(warmup_batches):
    next(batches)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    count += len(next(batches)["image"])
  return count / (time.perf_counter() - start)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  step_config = None
  if _VARIANT.value:
    # Checked before the pipelines are timed, not after minutes of it.
    step_config = benchmark_config.get_config(f"variant={_VARIANT.value}")
    try:
      build.model_from_config(step_config)  # a module only: no device starts
    except ValueError as e:
      raise app.UsageError(f"--variant={_VARIANT.value}: {e}") from None
    # The step on one device per core, as scripts/benchmark.py runs it.
    cpu_devices.use_one_device_per_core((_MODEL_BATCH.value,))

  cores = len(os.sched_getaffinity(0))
  data_dir = _DATA_DIR.value or tempfile.mkdtemp(prefix="benchmark_input_")
  if not os.path.exists(os.path.join(data_dir, "manifest.json")):
    tfrecords.write_split(data_dir, "train", synthetic_jpegs(_NUM_IMAGES.value),
                          num_shards=16, workers=cores)
  results = []
  for pp in _PP.value:
    rate = pipeline_images_per_second(data_config(data_dir), pp, batch=_BATCH.value,
                                      seconds=_SECONDS.value)
    results.append({"pp": pp, "images_per_s": round(rate, 1),
                    "images_per_s_per_core": round(rate / cores, 1), "cores": cores})
    print(json.dumps(results[-1]), flush=True)
  if step_config is not None:
    timing, _ = benchmarking.measure(step_config, _MODEL_BATCH.value,
                                     steps=_MODEL_STEPS.value, rounds=1, warmup=2,
                                     inference=False)
    step_rate = timing["train"]["img_per_sec"]
    print(json.dumps({"train_step": f"{_VARIANT.value} batch {_MODEL_BATCH.value} 224px",
                      "device": jax.devices()[0].device_kind,
                      "devices": jax.device_count(),
                      "images_per_s": round(step_rate, 1)}), flush=True)
    for result in results:
      print(json.dumps({"pp": result["pp"], "pipeline_over_step":
                        round(result["images_per_s"] / step_rate, 2)}))


if __name__ == "__main__":
  cli.run(main)
