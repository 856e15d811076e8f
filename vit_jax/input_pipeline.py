"""tf.data input: each process reads its own slice, batches, and feeds devices.

Train data is an endless, shuffled, augmented stream of host batches of
``global_batch / process_count`` examples. Eval data is finite and exact:
each process reads an even slice of the split, the last batch is padded with
``mask == False`` examples, and every process yields the same number of
batches, so every example counts once and no collective waits forever.
Host batches become global `jax.Array`s with
`jax.make_array_from_process_local_data`, a few steps ahead of the step.
Nothing is downloaded: a dataset that is not prepared is an error that says
where it was looked for and how to prepare it.
"""
import collections
import itertools
import math

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vit_jax import datasets  # noqa: F401  (registers the offline builders)
from vit_jax import preprocess

# The input pipeline runs on the host: keep TensorFlow off any accelerator.
tf.config.set_visible_devices([], "GPU")

MODEL_INPUTS = ("image", "labels")


class DatasetNotPreparedError(FileNotFoundError):
  """A dataset named in the config is not in its data_dir."""


def get_builder(data_config):
  """The tfds builder of `config.data`, which must already be prepared."""
  data_dir = data_config.data_dir
  where = data_dir or tfds.core.constants.DATA_DIR
  how = (f"Nothing is downloaded at run time; prepare it with: "
         f"{data_config.prepare}, or point config.data.data_dir at a "
         f"directory that holds it")
  try:
    builder = tfds.builder(data_config.name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise DatasetNotPreparedError(
        f"dataset {data_config.name!r} (config.data.name) is no registered "
        f"tfds dataset and is not in data_dir {where!r} "
        f"(config.data.data_dir). {how}") from None
  if not builder.is_prepared():
    raise DatasetNotPreparedError(
        f"dataset {data_config.name!r} (config.data.name) is not prepared in "
        f"data_dir {where!r} (config.data.data_dir): looked for "
        f"{builder.data_dir}. {how}")
  return builder


def _read(builder, split, *, shuffle_seed=None, cache=False):
  """Encoded examples of ``split``; images are decoded by the `decode` op."""
  decoders = {"image": tfds.decode.SkipDecoding()} if "image" in builder.info.features else None
  ds = builder.as_dataset(
      split=split, shuffle_files=shuffle_seed is not None, decoders=decoders,
      read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed, skip_prefetch=True))
  return ds.cache() if cache else ds


def _model_inputs(features):
  missing = [k for k in MODEL_INPUTS if k not in features]
  if missing:
    raise ValueError(f"the preprocessing string yields {sorted(features)}, "
                     f"without {missing}; end it with ops that produce "
                     f"'image' and 'labels' (e.g. value_range(-1,1)|onehot(N))")
  return {k: features[k] for k in MODEL_INPUTS}


def _process_split(split, process_index, process_count):
  return tfds.even_splits(split, n=process_count)[process_index]


def train_batches(data_config, pp_spec, *, global_batch, seed, start_step=0,
                  process_index=None, process_count=None):
  """Endless iterator over this process's numpy batches of training data.

  ``seed`` fixes the file order, the shuffle and each example's augmentation,
  so the stream is the same in every run with that seed. A run resumed at
  ``start_step`` skips the examples of the steps already taken before they
  are decoded, and so sees exactly the batches the uninterrupted run saw.
  The skip still reads the skipped records; on very large datasets resuming
  costs a pass over them.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  builder = get_builder(data_config)
  split = _process_split(data_config.train_split, process_index, process_count)
  # Each process shuffles and augments its own slice with its own seed.
  seed = int(np.random.SeedSequence([seed, process_index]).generate_state(1)[0])
  ds = _read(builder, split, shuffle_seed=seed, cache=data_config.cache)
  # Shuffling before repeating keeps epochs whole: every example once per
  # epoch, in a new (seeded) order each epoch.
  ds = ds.shuffle(data_config.shuffle_buffer, seed=seed,
                  reshuffle_each_iteration=True).repeat()
  ds = preprocess.add_example_seeds(ds, seed)
  local_batch = global_batch // process_count
  ds = ds.skip(start_step * local_batch)
  pp = preprocess.parse(pp_spec)
  ds = ds.map(lambda f: _model_inputs(pp(f)), num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def examples_in(data_config, split):
  """Number of examples of a (possibly sliced) split, e.g. 'train[:98%]'."""
  return get_builder(data_config).info.splits[split].num_examples


class EvalData:
  """One eval split: re-iterable, padded and masked, equal batches per process."""

  def __init__(self, data_config, pp_spec, split, *, global_batch,
               process_index=None, process_count=None):
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    builder = get_builder(data_config)
    splits = tfds.even_splits(split, n=process_count)
    counts = [builder.info.splits[s].num_examples for s in splits]
    self.num_examples = sum(counts)
    self.local_batch = global_batch // process_count
    self.num_batches = math.ceil(max(counts) / self.local_batch)
    self.split = split
    pp = preprocess.parse(pp_spec)
    ds = _read(builder, splits[process_index], cache=data_config.cache)
    ds = ds.map(lambda f: _model_inputs(pp(f)), num_parallel_calls=tf.data.AUTOTUNE)
    self._dataset = ds.batch(self.local_batch).prefetch(tf.data.AUTOTUNE)

  def __iter__(self):
    """Yields `num_batches` full batches; padding rows have mask False."""
    template, count = None, 0
    for batch in self._dataset.as_numpy_iterator():
      template, count = batch, count + 1
      yield _pad(batch, self.local_batch)
    if template is None:
      raise ValueError(f"eval split {self.split!r} gives this process no "
                       f"examples: it has fewer examples than processes")
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
