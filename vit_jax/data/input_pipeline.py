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
skipped and counted (`InputStats`), or with ``config.data.strict`` stops the
run naming the file and record; a file that goes missing stops it too.
"""
import collections
import itertools
import math
import os
import re

import jax
import numpy as np
import tensorflow as tf
from absl import logging

from vit_jax.data import preprocess, sources
from vit_jax.data.sources import DatasetNotPreparedError, get_builder  # noqa: F401  (API)

# The input pipeline runs on the host: keep TensorFlow off any accelerator.
tf.config.set_visible_devices([], "GPU")

MODEL_INPUTS = ("image", "labels")
_RAW = "_raw"  # position of an example in the stream before corrupt ones are dropped
_VALID = "_valid"  # whether its encoded image passed `preprocess.is_decodable`
# The cores this process may run on (a container may allow fewer than the host has).
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
# Examples per small dataset that contains decode errors (`_decoded`); one such
# dataset per core is decoded at a time.
_DECODE_WINDOW = 16


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


def _options():
  """Deterministic order, and a thread pool of its own for the pipeline."""
  options = tf.data.Options()
  options.deterministic = True
  options.threading.private_threadpool_size = _CORES
  return options


def _strict_check(features):
  """Fails on an image that `preprocess.is_decodable` rejects, naming it."""
  return _image_or_fail(preprocess.is_decodable(features["image"]), features,
                        "corrupt or undecodable image")


def _image_or_fail(ok, features, problem):
  """``features``, once ``ok`` holds; else an error naming the file and record."""
  check = tf.debugging.Assert(
      ok, [f"{problem} (config.data.strict=True) at", features["_id"]])
  with tf.control_dependencies([check]):
    return {**features, "image": tf.identity(features["image"])}


def _encoded(features):
  return features["image"].dtype == tf.string


def train_batches(data_config, pp_spec, *, global_batch, seed, start_step=0,
                  process_index=None, process_count=None, stats=None):
  """Endless iterator over this process's numpy batches of training data.

  ``seed`` fixes the file order, the shuffle and each example's augmentation,
  so the stream is the same in every run with that seed. A run resumed at
  ``start_step`` skips the examples of the steps already taken before they
  are decoded, and so sees exactly the batches the uninterrupted run saw.
  The skip still reads the skipped records; on very large datasets resuming
  costs a pass over them. ``stats`` (an `InputStats`) counts corrupt images.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  stats = InputStats() if stats is None else stats
  source = sources.get_source(data_config)
  # Each process shuffles and augments its own share with its own seed.
  seed = int(np.random.SeedSequence([seed, process_index]).generate_state(1)[0])
  ds = source.read(data_config.train_split, process_index, process_count,
                   shuffle_seed=seed)
  # Shuffling before repeating keeps epochs whole: every example once per
  # epoch, in a new (seeded) order each epoch.
  ds = ds.shuffle(data_config.shuffle_buffer, seed=seed,
                  reshuffle_each_iteration=True).repeat()
  strict = data_config.get("strict", False)
  check = _encoded(ds.element_spec)

  def position_and_check(position, features):
    features = {**features, _RAW: position}
    if check and strict:
      return _strict_check(features)
    if check:
      return {**features, _VALID: preprocess.is_decodable(features["image"])}
    return features
  ds = ds.enumerate().map(position_and_check, num_parallel_calls=tf.data.AUTOTUNE)
  if check and not strict:
    # Dropped before the seeds and the skip, so a resumed run skips the
    # same valid examples as the uninterrupted one.
    ds = ds.filter(lambda f: f[_VALID])
  ds = preprocess.add_example_seeds(ds, seed)
  local_batch = global_batch // process_count
  ds = ds.skip(start_step * local_batch)
  pp = preprocess.parse(pp_spec)
  prepare = lambda f: {**_model_inputs(pp(f)), _RAW: f[_RAW]}
  if check:
    ds = _decoded(ds, prepare, on_corrupt="fail" if strict else "skip")
  else:
    ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  # A fresh stream starts at position 0, so corrupt images before its first
  # batch count too; a resumed one counts from its first batch.
  return _counting(ds.with_options(_options()), stats, first=0 if start_step == 0 else None)


def _decoded(ds, prepare, *, on_corrupt):
  """``ds.map(prepare)`` where an image that fails to decode is handled.

  Such an image passed `preprocess.is_decodable` (intact markers, damaged
  body). ``on_corrupt`` says what becomes of it: ``'skip'`` drops it,
  ``'blank'`` prepares the blank stand-in instead (`_blanked`), ``'fail'``
  stops naming its file and record.

  tf.data's ``ignore_errors`` swallows every error upstream of it, read
  errors included: a training file deleted mid-run would be skipped
  silently, and with every file gone the endless stream would spin without
  yielding or failing. So it guards only windows of examples already read,
  each its own small dataset, prepared in parallel and kept in order. A
  window that lost an example is prepared again an example at a time: an
  image that `tf.io.decode_image` cannot decode is corrupt, and any other
  error (a preprocessing string that cannot work on this data) is raised.
  """
  def prepare_window(window):
    """The window's prepared examples as one batch."""
    examples = tf.data.Dataset.zip(window)
    size = tf.cast(examples.cardinality(), tf.int32)
    whole = (examples.map(prepare).ignore_errors(log_warning=True)
             .batch(_DECODE_WINDOW)
             .filter(lambda batch: tf.shape(batch["image"])[0] == size))
    one_by_one = examples.flat_map(_with_decodability)
    if on_corrupt == "skip":
      one_by_one = one_by_one.filter(lambda decodes, example: decodes)
    one_by_one = one_by_one.map(lambda *args: prepare(settle(*args)))
    return whole.concatenate(one_by_one.batch(_DECODE_WINDOW)).take(1)

  def settle(decodes, example):
    """The example to prepare, its blank stand-in, or the strict-mode error."""
    if on_corrupt == "blank":  # corrupt already where the cheap check failed
      return _blanked(example, example["_corrupt"] | tf.logical_not(decodes))
    if on_corrupt == "fail":
      return _image_or_fail(decodes, example, "image that does not decode")
    return example  # 'skip': the undecodable ones are filtered out already

  return ds.window(_DECODE_WINDOW).interleave(
      prepare_window, cycle_length=_CORES,
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()


def _with_decodability(example):
  """A one-element dataset: (whether its image decodes, the example)."""
  decodes = (tf.data.Dataset.from_tensors(example["image"])
             .map(lambda image: tf.io.decode_image(image, expand_animations=False))
             .ignore_errors().map(lambda _: True)
             .concatenate(tf.data.Dataset.from_tensors(False)).take(1))
  return decodes.map(lambda ok: (ok, example))


def _counting(ds, stats, *, first):
  """Yields batches without their stream positions; gaps are corrupt images.

  ``first`` is the position the count starts at, or None for the first batch's.
  """
  delivered = 0
  try:
    for batch in ds.as_numpy_iterator():
      raw = batch.pop(_RAW)
      if first is None:
        first = int(raw[0])
      delivered += len(raw)
      stats.corrupt_images = int(raw[-1]) + 1 - first - delivered
      yield batch
  except tf.errors.NotFoundError as error:
    where = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:.*", "", error.message, flags=re.DOTALL)
    raise FileNotFoundError(
        f"a training file went missing while the run was reading it: {where}") from None


def examples_in(data_config, split):
  """Number of examples of a (possibly sliced) split, e.g. 'train[:98%]'."""
  return sources.get_source(data_config).num_examples(split)


class EvalData:
  """One eval split: re-iterable, padded and masked, equal batches per process.

  A corrupt image cannot be dropped without making the count differ between
  processes, so by default it is scored as a blank image (a miss, almost
  surely), counted in ``corrupt_images`` and named in a warning; with
  ``config.data.strict`` it stops the evaluation naming the file and record.
  """

  def __init__(self, data_config, pp_spec, split, *, global_batch,
               process_index=None, process_count=None):
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    source = sources.get_source(data_config)
    counts = source.process_counts(split, process_count)
    self.num_examples = sum(counts)
    self.local_batch = global_batch // process_count
    self.num_batches = math.ceil(max(counts) / self.local_batch)
    self.split = split
    self.corrupt_images = 0
    pp = preprocess.parse(pp_spec)
    ds = source.read(split, process_index, process_count)
    prepare = lambda f: {**_model_inputs(pp(f)), **_corrupt_fields(f)}
    if not _encoded(ds.element_spec):
      ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    elif data_config.get("strict", False):
      ds = ds.map(_strict_check, num_parallel_calls=tf.data.AUTOTUNE)
      ds = _decoded(ds, prepare, on_corrupt="fail")
    else:
      ds = ds.map(_blank_if_corrupt, num_parallel_calls=tf.data.AUTOTUNE)
      ds = _decoded(ds, prepare, on_corrupt="blank")
    self._dataset = ds.batch(self.local_batch).prefetch(tf.data.AUTOTUNE).with_options(
        _options())

  def __iter__(self):
    """Yields `num_batches` full batches; padding rows have mask False."""
    template, count, self.corrupt_images = None, 0, 0
    for batch in self._dataset.as_numpy_iterator():
      if "_corrupt" in batch:
        corrupt, ids = batch.pop("_corrupt"), batch.pop("_id")
        for name in ids[corrupt]:
          logging.warning("eval split %s: corrupt image %s scored as blank",
                          self.split, name.decode())
        self.corrupt_images += int(corrupt.sum())
      template, count = batch, count + 1
      yield _pad(batch, self.local_batch)
    if template is None:
      raise ValueError(f"eval split {self.split!r} gives this process no "
                       f"examples: it has fewer examples than processes")
    for _ in range(self.num_batches - count):
      yield _pad({k: v[:0] for k, v in template.items()}, self.local_batch)


def _blank_if_corrupt(features):
  return _blanked(features, tf.logical_not(preprocess.is_decodable(features["image"])))


def _blanked(features, corrupt):
  """``features`` with the blank stand-in image where ``corrupt``.

  ``_corrupt`` records it, for the eval count and warning.
  """
  image = tf.where(corrupt, preprocess.blank_jpeg(), features["image"])
  return {**features, "image": image, "_corrupt": corrupt}


def _corrupt_fields(features):
  return {k: features[k] for k in ("_corrupt", "_id") if "_corrupt" in features}


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
  """Yields global batches, keeping ``size`` of them already on the devices."""
  queue = collections.deque()
  iterator = iter(host_batches)
  for batch in itertools.islice(iterator, size):
    queue.append(to_global(batch, sharding))
  while queue:
    yield queue.popleft()
    batch = next(iterator, None)
    if batch is not None:
      queue.append(to_global(batch, sharding))
