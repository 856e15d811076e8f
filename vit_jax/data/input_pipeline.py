"""tf.data input: each process reads its own share, batches, and feeds devices.

Train data is an endless, shuffled, augmented stream of host batches of
``global_batch / process_count`` examples, from any source of
`vit_jax.data.sources` (tfds, TFRecord shards, image folders). Eval data is
finite and exact: each process reads its share of the split, the last
batch is padded with ``mask == False`` examples, and every process yields
the same number of batches, so every example counts once and no collective
waits forever. Host batches become global `jax.Array`s with
`jax.make_array_from_process_local_data`, a few steps ahead of the step.

Order of the train stream, and why: files in a seeded order, a parallel
interleave of them, a seeded shuffle buffer, repeat (so epochs stay whole),
a cheap check of the encoded image, per-example seeds, the skip of a
resumed run, then decoding and augmentation in parallel windows of
examples, so only the examples actually used are decoded. A corrupt image is
skipped and counted (`InputStats`; `corrupt_images` finds them), or with
``config.data.strict`` stops the run naming the file and record; a file that
goes missing stops it too.

A run builds its source once (`sources.get_source`: a folder source lists
its files then) and passes it to everything here.
"""
import collections
import math
import os

import jax
import numpy as np
import tensorflow as tf
from absl import logging

from vit_jax.data import checks, config_fields, corrupt_images, preprocess

# The input pipeline runs on the host: keep TensorFlow off any accelerator.
tf.config.set_visible_devices([], "GPU")

MODEL_INPUTS = ("image", "labels")
# `EvalData(keyed=True)`: a 62-bit hash of each example's file and record, an
# order of the split that no process count or batch size changes; as two
# int32 columns (high, low 31 bits), since JAX without x64 keeps integers in
# 32 bits, where a split of 65,000 examples would have had colliding keys.
KEY = "key"
_RAW = "_raw"  # position of an example in the stream before corrupt ones are dropped
# The cores this process may run on (a container may allow fewer than the host has).
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class InputStats:
  """What the train stream dropped so far, for the metrics.

  ``corrupt_images`` counts the images this process skipped since the
  stream started (a resumed run counts from its resume step).
  """

  def __init__(self):
    self.corrupt_images = 0


def _model_inputs(features):
  missing = [k for k in MODEL_INPUTS if k not in features]
  if missing:
    raise ValueError(f"the preprocessing string yields {sorted(features)}, "
                     f"without {missing}; end it with ops that produce "
                     f"'image' and 'labels' (e.g. value_range(-1,1)|onehot(N))")
  return {k: features[k] for k in MODEL_INPUTS}


def check_fits_model(source, config):
  """Fails, naming both fields, where the preprocessing would not fit the model.

  The model's position embeddings are sized for ``config.image_size`` and
  its head for ``config.data.num_classes``; batches of another shape would
  fail only while compiling, deep in flax (a ScopeParamShapeError about
  pos_embedding). The shapes come from tracing ``config.pp.train`` and
  ``config.pp.eval`` over the examples ``source`` yields: nothing is read.
  A size known only per image (e.g. after ``resize_small``) is not checked.
  """
  image_size = config_fields.height_width(config.image_size)
  for field in ("train", "eval"):
    spec = config.pp[field]
    ops = [piece.split("(")[0].strip() for piece in spec.split("|")]
    if (source.element_spec["image"].dtype == tf.string
        and not any(op.startswith("decode") for op in ops)):
      raise ValueError(
          f"config.pp.{field}={spec!r} has no decode op, and the dataset's images "
          f"are encoded files; start it with decode or decode_jpeg_and_inception_crop")
    try:
      # Eval examples have no seeds (`EvalData`), and are traced without.
      outputs = _traced_outputs(source, spec, seeded=field == "train")
    except preprocess.UnseededRandomOp as e:
      raise ValueError(
          f"config.pp.eval={spec!r} has the random op {e.op_name!r}; evaluation "
          f"scores each example as it is, the same every time: take its "
          f"deterministic counterpart (resize, resize_small, central_crop)") from None
    shape = outputs["image"].shape
    if shape.rank not in (3, None):
      raise ValueError(
          f"config.pp.{field}={spec!r} gives images of shape {shape.as_list()}, "
          f"not (height, width, channels); decode them first (start it with "
          f"decode or decode_jpeg_and_inception_crop)")
    height, width = shape[:2]
    if (height or image_size[0], width or image_size[1]) != image_size:
      raise ValueError(
          f"config.pp.{field}={spec!r} gives {height or '?'}x{width or '?'} images "
          f"but config.image_size={config.image_size}, the size the model's "
          f"position embeddings are made for; make its crop or resize size match")
    classes = outputs["labels"].shape[-1]
    if classes not in (None, config.data.num_classes):
      raise ValueError(
          f"config.pp.{field}={spec!r} gives {classes} classes but "
          f"config.data.num_classes={config.data.num_classes}, the size of the "
          f"model's head; make its onehot(N) match")


def _traced_outputs(source, pp_spec, *, seeded):
  """The model inputs ``pp_spec`` makes of ``source``'s examples, as traced
  tensors; ``seeded``: the examples carry a seed for the random ops."""
  pp = preprocess.parse(pp_spec)
  spec = dict(source.element_spec)
  if seeded:
    spec[preprocess.RNG_KEY] = tf.TensorSpec([2], tf.int64)
  # Without autograph an op's own error (a missing feature, say) surfaces as
  # it was raised, not buried in a multi-line "in user code" traceback.
  traced = tf.function(lambda features: _model_inputs(pp(features)), autograph=False)
  return traced.get_concrete_function(spec).structured_outputs


def _options():
  """Deterministic order, a thread pool of its own, and no autotuning.

  With autotuning, each iterator runs a model thread that sleeps between
  optimisations, for periods that double up to a minute, and deleting the
  iterator waits for that sleep to end (TensorFlow 2.21): a run's end
  stalled up to 20 s when it closed its train stream (docs/benchmarks.md,
  "Input pipeline"). Without it, AUTOTUNE parallelism is the thread pool's
  size: every core.
  """
  options = tf.data.Options()
  options.deterministic = True
  options.threading.private_threadpool_size = _CORES
  options.autotune.enabled = False
  return options


def train_batches(source, pp_spec, *, global_batch, seed, start_step=0,
                  process_index=None, process_count=None, stats=None):
  """Endless iterator over this process's numpy batches of training data.

  ``source`` (`vit_jax.data.sources.get_source`, built once per run) gives
  the examples of ``source.config.train_split``. ``seed`` fixes the file
  order, the shuffle and each example's augmentation, so the stream is the
  same in every run with that seed. A run resumed at ``start_step`` skips
  the examples of the steps already taken before they are decoded, and so
  sees exactly the batches the uninterrupted run saw. The skip still reads
  the skipped records; on very large datasets resuming costs a pass over
  them. ``stats`` (an `InputStats`) counts corrupt images.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  stats = InputStats() if stats is None else stats
  data_config = source.config
  # Each process shuffles and augments its own share with its own seed.
  seed = int(np.random.SeedSequence([seed, process_index]).generate_state(1)[0])
  ds = source.read(data_config.train_split, process_index, process_count,
                   shuffle_seed=seed)
  # Shuffling before repeating keeps epochs whole: every example once per
  # epoch, in a new (seeded) order each epoch.
  ds = ds.shuffle(data_config.shuffle_buffer, seed=seed,
                  reshuffle_each_iteration=True).repeat()
  ds = ds.enumerate().map(lambda position, features: {**features, _RAW: position},
                          num_parallel_calls=tf.data.AUTOTUNE)
  local_batch = global_batch // process_count

  def seeded_and_skipped(ds):
    return preprocess.add_example_seeds(ds, seed).skip(start_step * local_batch)

  pp = preprocess.parse(pp_spec)
  ds = corrupt_images.prepared(
      ds, lambda f: {**_model_inputs(pp(f)), _RAW: f[_RAW]},
      on_corrupt="fail" if data_config.get("strict", False) else "skip",
      before_decoding=seeded_and_skipped, cores=_CORES)
  ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  # A fresh stream starts at position 0, so corrupt images before its first
  # batch count too; a resumed one counts from its first batch.
  batches = checks.user_errors(ds.with_options(_options()).as_numpy_iterator(),
                               recount=lambda: source.check_counts(data_config.train_split))
  return _counting(batches, stats, first=0 if start_step == 0 else None)


def _counting(batches, stats, *, first):
  """Yields batches without their stream positions; gaps are corrupt images.

  ``first`` is the position the count starts at, or None for the first batch's.
  """
  delivered = 0
  for batch in batches:
    raw = batch.pop(_RAW)
    if first is None:
      first = int(raw[0])
    delivered += len(raw)
    stats.corrupt_images = int(raw[-1]) + 1 - first - delivered
    yield batch


class EvalData:
  """One eval split: re-iterable, padded and masked, equal batches per process.

  A corrupt image cannot be dropped without making the count differ between
  processes, so by default it is scored as a blank image (a miss, almost
  surely), counted in ``corrupt_images`` and named in a warning; with
  ``config.data.strict`` it stops the evaluation naming the file and record.
  ``source`` (`vit_jax.data.sources.get_source`) is built once per run;
  ``image_size`` is the model's, the blank image's size.
  ``keyed`` adds each example's `KEY`, for consumers that need the split in
  one order on any number of processes (few-shot probes draw their shots).
  """

  def __init__(self, source, pp_spec, split, *, global_batch, image_size, keyed=False,
               process_index=None, process_count=None):
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    counts = source.process_counts(split, process_count)
    if min(counts) == 0:  # on every process: the others would wait for it
      raise ValueError(f"eval split {split!r} has {sum(counts)} examples, fewer than "
                       f"the {process_count} processes; each must read one or more")
    self.num_examples = sum(counts)
    self.local_batch = global_batch // process_count
    self.num_batches = math.ceil(max(counts) / self.local_batch)
    self.split = split
    self._source = source
    self.corrupt_images = 0
    pp = preprocess.parse(pp_spec)

    def prepare(features):
      inputs = _model_inputs(pp(features))
      if keyed:  # the same for an example on any process, whatever its batch
        key = tf.strings.to_hash_bucket_fast(features["_id"], 2 ** 62)
        inputs[KEY] = tf.cast(tf.stack([key // 2 ** 31, key % 2 ** 31]), tf.int32)
      return inputs

    ds = corrupt_images.prepared(
        source.read(split, process_index, process_count), prepare,
        on_corrupt="fail" if source.config.get("strict", False) else "blank",
        cores=_CORES, blank_size=image_size)
    self._dataset = ds.batch(self.local_batch).prefetch(tf.data.AUTOTUNE).with_options(
        _options())

  def __iter__(self):
    """Yields `num_batches` full batches; padding rows have mask False."""
    template, count, self.corrupt_images = None, 0, 0
    for batch in checks.user_errors(self._dataset.as_numpy_iterator(),
                                    recount=lambda: self._source.check_counts(self.split)):
      for name in corrupt_images.pop_blanked(batch):
        logging.warning("eval split %s: corrupt image %s scored as blank",
                        self.split, name)
        self.corrupt_images += 1
      template, count = batch, count + 1
      yield _pad(batch, self.local_batch)
    for _ in range(self.num_batches - count):
      yield _pad({k: v[:0] for k, v in template.items()}, self.local_batch)


def _pad(batch, size):
  """Pads a batch with zero rows to ``size`` rows and adds its 'mask'."""
  real = len(batch["image"])
  padded = {k: np.concatenate([v, np.zeros((size - real,) + v.shape[1:], v.dtype)])
            for k, v in batch.items()}
  padded["mask"] = np.arange(size) < real
  return padded


def to_global(host_batch, sharding):
  """One global jax.Array per field, from this process's part of the batch."""
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      host_batch)


def prefetch_to_devices(host_batches, sharding, size=2):
  """Yields global batches, keeping ``size`` of them already on the devices.

  A batch that cannot be read (data that fails a check, a file gone) raises
  in its turn, not ``size`` batches early: the steps before it run, and a
  checkpoint due among them is taken.
  """
  queue = collections.deque()
  iterator = iter(host_batches)
  reading = True

  def read_one():
    nonlocal reading
    try:
      queue.append(to_global(next(iterator), sharding))
    except StopIteration:
      reading = False
    except Exception as e:  # raised in its turn
      queue.append(e)
      reading = False

  while reading and len(queue) < size:
    read_one()
  while queue:
    item = queue.popleft()
    if isinstance(item, Exception):
      raise item
    yield item
    if reading:
      read_one()
