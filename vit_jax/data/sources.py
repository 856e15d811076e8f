"""Where examples come from: tfds datasets, TFRecord shards, image folders.

A source turns a split name into this process's share of encoded examples,
``{"image": encoded bytes, "label": class id(s), "_id": name}``, where
``_id`` names the file and record an example came from (for errors about
corrupt images). Decoding is left to the preprocessing ops, so it happens
after shuffling, on the examples actually used.

Splits of TFRecord and folder sources accept tfds-style slices of one
split, ``train[:98%]``, ``train[1000:]``, counted over the split's records
in file order. Each process reads a disjoint share, an even range of
records (`process_share`); all shares together are the split.

- ``tfds``: ``config.data.name`` in ``config.data.data_dir``; never downloads.
  ``label`` is the feature ``config.data.label`` names, or a label derived
  from others (`vit_jax.data.labels`).
- ``tfrecord``: files ``data_dir/pattern`` (``{split}`` in the pattern is the
  split name), each record a ``tf.train.Example`` with ``image/encoded``
  (bytes) and ``image/class/label`` (one or more int64 class ids: multi-hot
  targets for the sigmoid loss). ``data_dir/manifest.json``, written by
  ``scripts/make_tfrecords.py``, holds each file's record count and the class
  names, so counting examples needs no pass over the data.
- ``folder``: ``data_dir/pattern`` is a directory of class subfolders of
  JPEG and PNG files; classes are the sorted subfolder names. Its "file
  order" is a seeded shuffle of the files, the same on every run: listed
  class by class, a slice such as ``train[98%:]`` would hold the last
  classes only.
"""
import json
import os
import random
import re
from concurrent import futures
from typing import NamedTuple

import tensorflow as tf
import tensorflow_datasets as tfds

from vit_jax.data import builders  # noqa: F401  (registers the offline builders)
from vit_jax.data import checks, config_fields, labels, splits

MANIFEST = "manifest.json"
IMAGE_KEY, LABEL_KEY = "image/encoded", "image/class/label"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Where a folder dataset keeps its images, as errors write it.
FOLDER_LAYOUT = f"<class>/*.{{{','.join(s.lstrip('.') for s in IMAGE_SUFFIXES)}}}"
# Files read at once by a parallel interleave of TFRecord shards.
_CYCLE_LENGTH = 16


class DatasetNotPreparedError(FileNotFoundError):
  """A dataset named in the config is not in its data_dir."""


def get_source(data_config):
  """The source that `config.data.source` names.

  Build it once per run and pass it down: a folder source lists its files,
  a TFRecord source reads its manifest, a tfds source its metadata.
  """
  kinds = dict(zip(config_fields.SOURCES, (TfdsSource, TFRecordSource, FolderSource)))
  kind = data_config.get("source", config_fields.DEFAULT_SOURCE)
  if kind not in kinds:
    raise ValueError(f"config.data.source={kind!r}; valid: {', '.join(kinds)}")
  return kinds[kind](data_config)


class Part(NamedTuple):
  """Records ``[begin, end)`` of one file (one image file for folders)."""
  path: str
  begin: int
  end: int
  label: int = -1  # folders: the class of the file; TFRecords carry their own
  records: int = 1  # TFRecords: the file's record count in the manifest


def _slice(parts, split):
  """The records of ``split``'s slice, as parts cut at the slice's ends."""
  total = sum(p.end - p.begin for p in parts)
  return _records(parts, *splits.slice_bounds(split, total))


def _records(parts, start, stop):
  """Parts holding records ``[start, stop)`` of the concatenated ``parts``."""
  kept, offset = [], 0
  for part in parts:
    size = part.end - part.begin
    begin, end = max(start - offset, 0), min(stop - offset, size)
    if begin < end:
      kept.append(part._replace(begin=part.begin + begin, end=part.begin + end))
    offset += size
  return kept


def process_share(parts, process_index, process_count):
  """This process's disjoint share, within one record of every other's.

  Every process reads a batch of the same size a step, so a smaller share
  would be read more often: whole files dealt in turn, 10 equal ones to 8
  processes, gave 2 files to some and 1 to the others, read twice as often.
  A folder's images (a record each) are dealt in turn; files of many records
  are cut into even ranges of records, as `tfds.even_splits` cuts a split.
  """
  if all(p.end - p.begin == 1 for p in parts):
    return parts[process_index::process_count]
  total = sum(p.end - p.begin for p in parts)
  bounds = [total * i // process_count for i in range(process_count + 1)]
  return _records(parts, bounds[process_index], bounds[process_index + 1])


def check_splits(source):
  """Fails, naming the config field, on a split the run cannot read as meant.

  Every split the run reads (`splits.run_splits`) must exist and its slice
  lie within it, and no eval split may share a record with the training
  split; listings and metadata tell. An eval split's files must also hold
  what their manifest lists (`TFRecordSource.check_counts`), so a wrong
  count fails here rather than at the first evaluation.
  """
  named = splits.run_splits(source.config)
  regions = {}
  for field, split in named.items():
    try:
      regions[field] = source.regions(split)
    except ValueError as e:
      raise ValueError(f"{field}: {e}") from None
  pattern = source.config.get("pattern", "")
  hint = ""
  if isinstance(source, _PartsSource) and "{split}" not in pattern:
    hint = (f" (config.data.pattern={pattern!r} has no {{split}}, so every split "
            f"reads the same files)")
  train_field, *eval_fields = named
  for field in eval_fields:
    splits.check_disjoint(train_field, regions[train_field], field, regions[field],
                          hint=hint)
    source.check_counts(named[field])


class _PartsSource:
  """A source whose splits are lists of parts with known record counts.

  Each whole split is listed once (`_parts`), when first asked for.
  """

  def __init__(self, data_config):
    self.config = data_config
    self.root = data_config.data_dir or ""
    self._listed = {}  # whole split name -> its parts

  def num_examples(self, split):
    return sum(p.end - p.begin for p in self._sliced(split))

  def process_counts(self, split, process_count):
    parts = self._sliced(split)
    return [sum(p.end - p.begin for p in process_share(parts, i, process_count))
            for i in range(process_count)]

  def read(self, split, process_index, process_count, *, shuffle_seed=None):
    """This process's encoded examples; files in a seeded order if shuffled."""
    parts = process_share(self._sliced(split), process_index, process_count)
    if not parts:
      raise ValueError(f"split {split!r} of {self.root!r} gives process "
                       f"{process_index} of {process_count} no examples")
    ds = _parts_dataset(parts)
    if shuffle_seed is not None:
      ds = ds.shuffle(len(parts), seed=shuffle_seed, reshuffle_each_iteration=True)
    return _cached_if_asked(self._examples(ds), self.config)

  @property
  def element_spec(self):
    """The spec of what `read` yields, known without listing or reading a file."""
    return self._examples(_parts_dataset([])).element_spec

  def check_counts(self, split):
    """Nothing to check for folders: their counts are their listing."""

  def regions(self, split):
    """``(file, begin, end)`` of the records ``split`` reads (`check_splits`)."""
    return [(p.path, p.begin, p.end) for p in self._sliced(split)]

  def _sliced(self, split):
    name = splits.parse_split(split)[0]
    if name not in self._listed:
      self._listed[name] = self._parts(split)
    return _slice(self._listed[name], split)

  def _split_path(self, split):
    name = splits.parse_split(split)[0]
    return os.path.join(self.root, self.config.pattern.format(split=name))


def _parts_dataset(parts):
  """(path, begin, end, label, records) of each part, as a dataset."""
  paths, *numbers = zip(*parts) if parts else ((),) * len(Part._fields)
  return tf.data.Dataset.from_tensor_slices((
      tf.constant(paths, tf.string), *(tf.constant(n, tf.int64) for n in numbers)))


class TFRecordSource(_PartsSource):
  """JFT-style ``tf.train.Example`` shards, counted by their manifest."""

  def __init__(self, data_config):
    super().__init__(data_config)
    path = os.path.join(self.root, MANIFEST)
    if not tf.io.gfile.exists(path):
      index_only = f"scripts/make_tfrecords.py --index_only --out_dir={self.root or '.'}"
      prepare = data_config.get("prepare") or "scripts/make_tfrecords.py"
      if "--index_only" not in prepare:
        prepare += f"; shards written by other tools need only their manifest: {index_only}"
      raise DatasetNotPreparedError(
          f"dataset {data_config.get('name', '')!r} (config.data.name): no "
          f"{MANIFEST} in config.data.data_dir={self.root!r}. Nothing is "
          f"downloaded at run time; prepare it with: {prepare}")
    self.manifest = read_manifest(path)
    self.class_names = self.manifest.get("classes")
    if self.class_names and len(self.class_names) > data_config.num_classes:
      raise ValueError(f"{path} lists {len(self.class_names)} classes, more "
                       f"than config.data.num_classes={data_config.num_classes}")

  def _parts(self, split):
    pattern = self._split_path(split)
    paths = sorted(tf.io.gfile.glob(pattern))
    if not paths:
      raise DatasetNotPreparedError(
          f"split {split!r}: no files match {pattern!r} (config.data.data_dir "
          f"+ config.data.pattern)")
    counts = self.manifest["files"]
    missing = [p for p in paths if os.path.basename(p) not in counts]
    if missing:
      raise DatasetNotPreparedError(
          f"{missing[0]} is not in {os.path.join(self.root, MANIFEST)}; "
          f"re-index with scripts/make_tfrecords.py --index_only")
    return [Part(p, 0, counts[os.path.basename(p)], records=counts[os.path.basename(p)])
            for p in paths]

  def check_counts(self, split):
    """Fails, naming the manifest and file, where a file ``split`` reads holds
    another number of records than the manifest lists.

    Walks each file from record header to record header (`_records_in`: no
    image is read), files in parallel threads: cheap enough for eval splits
    before a run starts (docs/configs.md has the figures), and to name the
    file when a split read whole turns out miscounted (`checks.user_errors`).
    The train split is not walked before a run: it may have billions of
    records.
    """
    counts = self.manifest["files"]
    paths = sorted({part.path for part in self._sliced(split)})
    listed = [counts[os.path.basename(path)] for path in paths]
    with futures.ThreadPoolExecutor(_CYCLE_LENGTH) as pool:
      found = pool.map(_records_in, paths, listed)
      for path, records, (held, cut_short) in zip(paths, listed, found):
        if cut_short:
          held = f"{held} records and a truncated one"
        elif held > records:
          held = "more"
        if held != records:
          raise ValueError(
              f"{os.path.join(self.root, MANIFEST)} lists {records} records for "
              f"{path} ({split!r}) but it holds {held}; re-index it with "
              f"scripts/make_tfrecords.py --index_only --out_dir={self.root}")

  def _examples(self, parts):
    def read_part(path, begin, end, label, records):
      """The part's (path, index, record)s.

      A file with other records than its manifest lists fails tf.data's
      cardinality check: fewer than ``end``, or one past ``records`` (read
      where the part ends the file). `checks.user_errors` then has
      `check_counts` name it.
      """
      del label
      wanted = end - begin + tf.cast(end == records, tf.int64)
      read = tf.data.TFRecordDataset(path).skip(begin).take(wanted).apply(
          tf.data.experimental.assert_cardinality(end - begin))
      return read.enumerate(begin).map(lambda i, r: (path, i, r))
    ds = parts.interleave(read_part, cycle_length=_CYCLE_LENGTH,
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    spec = {IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
            LABEL_KEY: tf.io.FixedLenSequenceFeature([], tf.int64, allow_missing=True)}
    num_classes = self.config.num_classes
    one_label = not self.config.get("multi_label", False)

    def parse(path, index, record):
      example = tf.io.parse_single_example(record, spec)
      return checks.label_checked(
          {"image": example[IMAGE_KEY], "label": example[LABEL_KEY],
           "_id": tf.strings.join([path, ":", tf.strings.as_string(index)])},
          num_classes, one_label=one_label)
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)


def _records_in(path, listed):
  """(records in the TFRecord file at ``path``, whether its last one is cut short).

  Counted by seeking from record header to record header: a record is its
  length (8 bytes), their checksum (4), the data and its checksum (4), so
  12 bytes a record are read. Counting stops one past ``listed``.
  """
  count = 0
  local = "://" not in path  # Python's own file is ~30x faster to open than gfile's
  with open(path, "rb") if local else tf.io.gfile.GFile(path, "rb") as f:
    size = os.fstat(f.fileno()).st_size if local else f.size()
    while count <= listed:
      header = f.read(12)
      if not header:
        break
      length = int.from_bytes(header[:8], "little")
      if len(header) < 12 or f.tell() + length + 4 > size:
        return count, True
      f.seek(length + 4, 1)  # from here
      count += 1
  return count, False


class FolderSource(_PartsSource):
  """``split/<class>/*.{jpg,jpeg,png}``, each file one example."""

  def __init__(self, data_config):
    super().__init__(data_config)
    self._folders = {}  # directory -> its class folders (`_class_folders`)
    train_dir = self._split_path(data_config.train_split)
    self.class_names = self._class_folders(train_dir)
    if len(self.class_names) > data_config.num_classes:
      raise ValueError(f"{train_dir} has {len(self.class_names)} class folders, "
                       f"more than config.data.num_classes={data_config.num_classes}")

  def _parts(self, split):
    directory = self._split_path(split)
    parts = []
    class_ids = {name: i for i, name in enumerate(self.class_names)}
    for name in self._class_folders(directory):
      if name not in class_ids:
        raise ValueError(f"class folder {name!r} of {directory} is not a class "
                         f"of the train split {self.class_names}")
      folder = os.path.join(directory, name)
      parts += [Part(os.path.join(folder, f), 0, 1, class_ids[name])
                for f in sorted(_listdir(folder))
                if f.lower().endswith(IMAGE_SUFFIXES)]
    if not parts:
      # Said here: left to the slicing, an empty listing reads as a slice
      # "with no records of the 0 there", naming neither folder nor layout.
      loose = [f for f in _listdir(directory) if f.lower().endswith(IMAGE_SUFFIXES)]
      layout = (f"it holds {len(loose)} image file(s) itself; put each class's "
                f"images in a subfolder named after the class" if loose else
                "it needs class subfolders of JPEG and PNG files")
      raise DatasetNotPreparedError(
          f"split {split!r}: no images in {directory}/{FOLDER_LAYOUT} "
          f"(config.data.data_dir + config.data.pattern); {layout}")
    random.Random(0).shuffle(parts)  # classes mixed before any slicing
    return parts

  def _examples(self, parts):
    def read_file(path, begin, end, label, records):
      del begin, end, records
      return {"image": tf.io.read_file(path), "label": label, "_id": path}
    return parts.map(read_file, num_parallel_calls=tf.data.AUTOTUNE)

  def _class_folders(self, directory):
    """The sorted subfolders of ``directory``, listed once per source."""
    if directory not in self._folders:
      self._folders[directory] = sorted(
          d for d in _listdir(directory) if tf.io.gfile.isdir(os.path.join(directory, d)))
    return self._folders[directory]


def _listdir(directory):
  if not tf.io.gfile.isdir(directory):
    raise DatasetNotPreparedError(
        f"no directory {directory!r} (config.data.data_dir + config.data.pattern)")
  return [name.rstrip("/") for name in tf.io.gfile.listdir(directory)]


class TfdsSource:
  """A prepared tfds dataset, split per process with `tfds.even_splits`.

  Examples carry the label `config.data.label` names: a feature, or one
  derived from others (`vit_jax.data.labels`); only the image and what the
  label needs are read. `config.data.binary_images` reads images of 0s and
  1s (dsprites') as 0s and 255s.
  """

  def __init__(self, data_config):
    self.config = data_config
    self.builder = get_builder(data_config)
    features = self.builder.info.features
    if "image" not in features:
      raise ValueError(f"dataset {data_config.name!r} has no 'image' feature; its "
                       f"features: {', '.join(sorted(features))}")
    name = data_config.get("label", "label")
    self.label = labels.for_dataset(name, features, data_config.name)
    classes = self.label.num_classes
    if classes and classes > data_config.num_classes:
      what = f"derived label {name!r}" if name in labels.DERIVED else f"{name!r} feature"
      raise ValueError(f"dataset {data_config.name!r} has {classes} classes (its "
                       f"{what}), more than config.data.num_classes="
                       f"{data_config.num_classes}")

  def regions(self, split):
    """``(split name, begin, end)`` of each ``+``-joined part of ``split``."""
    sizes = {name: info.num_examples for name, info in self.builder.info.splits.items()}
    regions = []
    for part in split.split("+"):
      name = splits.parse_split(part)[0]
      if name not in sizes:
        raise ValueError(f"dataset {self.config.name!r} has no split {name!r}; "
                         f"valid: {', '.join(sorted(sizes))}")
      regions.append((name, *splits.slice_bounds(part, sizes[name])))
    return regions

  def num_examples(self, split):
    return self.builder.info.splits[split].num_examples

  def process_counts(self, split, process_count):
    return [self.num_examples(s) for s in tfds.even_splits(split, n=process_count)]

  @property
  def element_spec(self):
    """The spec of what `read` yields; only the metadata is read."""
    return self.read(self.config.train_split, 0, 1).element_spec

  def read(self, split, process_index, process_count, *, shuffle_seed=None):
    # The image stays encoded (decoded after shuffling, see the module
    # docstring); features the label does not need are not even parsed.
    decoders = tfds.decode.PartialDecoding(
        {"image": True, **self.label.reads}, decoders={"image": tfds.decode.SkipDecoding()})
    ds = self.builder.as_dataset(
        split=tfds.even_splits(split, n=process_count)[process_index],
        # An ordered dataset (disable_shuffling) refuses shuffled files;
        # the shuffle buffer downstream still mixes its examples.
        shuffle_files=shuffle_seed is not None and not self.builder.info.disable_shuffling,
        decoders=decoders,
        read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed, skip_prefetch=True,
                                    add_tfds_id=True))
    binary_images = self.config.get("binary_images", False)

    def named(features):
      image = features["image"]
      if binary_images:
        image = _times_255(image)
      example = {"image": image, "label": self.label.compute(features),
                 "_id": features["tfds_id"]}
      if example["label"].dtype.is_integer:
        example = checks.label_checked(example, self.config.num_classes)
      return example
    ds = ds.map(named, num_parallel_calls=tf.data.AUTOTUNE)
    return _cached_if_asked(ds, self.config)

  def check_counts(self, split):
    """Nothing to check: tfds wrote its counts with the data."""


def _times_255(image):
  """The encoded ``image`` of 0s and 1s as a PNG of 0s and 255s.

  dsprites stores its shapes so; task_adaptation multiplies them by 255
  before anything else, and so does this, before any resize could blur 0s
  and 1s into either. Encoded again, the image goes through the corrupt-image
  check and the decoding ops as any other (a 64x64 PNG: tens of microseconds).
  """
  pixels = tf.io.decode_image(image, expand_animations=False)
  return tf.io.encode_png(tf.saturate_cast(tf.cast(pixels, tf.int32) * 255, tf.uint8))


def _cached_if_asked(ds, data_config):
  """``ds`` kept in memory after its first pass, where config.data.cache says.

  The files are then read once. Their order is the first epoch's in every
  epoch; the shuffle buffer downstream still mixes the examples anew.
  """
  return ds.cache() if data_config.cache else ds


def read_manifest(path):
  """The TFRecord manifest at ``path``, refused in one line where it is no
  JSON object of shard counts (``files``) and ``classes`` (None if absent)."""
  with tf.io.gfile.GFile(path) as f:
    try:
      manifest = json.load(f)
    except json.JSONDecodeError as e:
      manifest = f"not valid JSON ({e})"
  if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
    what = manifest if isinstance(manifest, str) else "no object with 'files'"
    raise ValueError(f"{path} is {what}; a manifest is one object with 'files' "
                     f"(shard name: records) and 'classes'; delete it and index the "
                     f"shards again (scripts/make_tfrecords.py --index_only)")
  manifest.setdefault("classes", None)
  return manifest


def _prepare_command(data_config):
  """How to prepare the tfds dataset ``config.data.name``: its preset's
  command (``config.data.prepare``) where that names it, else tfds's own
  (the name was set on the command line, the preset's command is another's)."""
  name = data_config.name.split(":")[0]
  dataset = re.escape(name.split("/")[0])
  if re.search(rf"(?<![\w-]){dataset}(?![\w-])", data_config.get("prepare") or ""):
    return data_config.prepare
  return f"tfds build {name} (on a machine with network access), then copy the data_dir"


def get_builder(data_config):
  """The tfds builder of `config.data`, which must already be prepared."""
  data_dir = data_config.data_dir
  where = data_dir or tfds.core.constants.DATA_DIR
  how = (f"Nothing is downloaded at run time; prepare it with: "
         f"{_prepare_command(data_config)}, or point config.data.data_dir at a "
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
