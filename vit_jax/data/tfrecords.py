"""Writes and indexes JFT-style TFRecord shards for `sources.TFRecordSource`.

Each record is a ``tf.train.Example`` with ``image/encoded`` (the encoded
image, stored as given) and ``image/class/label`` (one or more int64 class
ids). ``manifest.json`` beside the shards holds each shard's record count
and the class names, so the pipeline counts examples and slices splits
without reading the data. Shards are written in parallel threads (the
encoding and the writes run in TensorFlow's C++ code, outside the GIL).
"""
import json
import os
import re
import zipfile
from concurrent import futures

import numpy as np
import tensorflow as tf

from vit_jax.data import sources


def folder_examples(directory):
  """(path, [class id]) of every JPEG/PNG in class subfolders, and the classes.

  A directory that is not there, or holds no such images, is refused: the
  shards written from it would hold nothing.
  """
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"{directory} is no directory; a dataset folder holds "
                            f"class subfolders of images, {sources.FOLDER_LAYOUT}")
  classes = sorted(d for d in os.listdir(directory)
                   if os.path.isdir(os.path.join(directory, d)))
  examples = [(os.path.join(directory, name, f), [index])
              for index, name in enumerate(classes)
              for f in sorted(os.listdir(os.path.join(directory, name)))
              if f.lower().endswith(sources.IMAGE_SUFFIXES)]
  if not examples:
    raise ValueError(f"{directory} holds no images in class subfolders, "
                     f"{sources.FOLDER_LAYOUT}")
  return examples, classes


# The layouts `array_examples` reads ``labels`` in, for its errors to name.
LABEL_LAYOUTS = "(N,) or (N, 1) class ids, or (N, classes) 0/1 multi-hot rows"


def array_examples(images, labels, image_format="jpeg", num_classes=None):
  """(encode thunk, class ids) per image of a uint8 (N, H, W, C) array.

  ``labels`` is (N,) class ids, (N, 1) class ids (Keras' CIFAR ``y_train``)
  or (N, classes) 0/1 multi-hot rows. Grayscale (N, H, W) images (MNIST's
  layout) get a channel axis. The arrays are checked here, before anything
  is written: an image the encoder refuses would fail the writer threads
  midway, leaving empty shards and no manifest, labels of another length
  would drop examples silently, a class id outside [0, num_classes)
  (negative ones always) would make a run fail on it, or train on an
  all-zero target where nothing checks, and 2-D labels that are not 0/1
  (class ids, k to a row) would be read as the columns that are not zero.
  """
  images, labels = np.asarray(images), np.asarray(labels)
  channels = {"jpeg": (1, 3), "png": (1, 2, 3, 4)}[image_format]
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] not in channels or images.dtype != np.uint8:
    raise ValueError(f"images are {images.dtype} {images.shape}; {image_format} "
                     f"needs uint8 (N, H, W) or (N, H, W, C) with C in {channels}")
  if labels.ndim not in (1, 2) or len(labels) != len(images):
    raise ValueError(f"labels are {labels.shape} for {len(images)} images; valid: "
                     f"{LABEL_LAYOUTS.replace('N', str(len(images)))}")
  if labels.ndim == 2 and labels.shape[1] == 1:
    labels = labels[:, 0]
  _check_class_ids(labels, num_classes)
  encode = {"jpeg": tf.io.encode_jpeg, "png": tf.io.encode_png}[image_format]
  ids = ([[int(l)] for l in labels] if labels.ndim == 1
         else [np.flatnonzero(row).tolist() for row in labels])
  return [((lambda image=image: encode(image).numpy()), label)
          for image, label in zip(images, ids)]


def _check_class_ids(labels, num_classes):
  """Refuses class ids (or multi-hot columns) outside [0, num_classes), and
  2-D labels whose values are not all 0 or 1."""
  if labels.ndim == 2:
    not_binary = np.argwhere((labels != 0) & (labels != 1))
    if not_binary.size:
      image, column = not_binary[0]
      raise ValueError(f"labels are {labels.shape} with {labels[image, column]} at "
                       f"image {image}, column {column}, so they are no multi-hot rows; "
                       f"valid: {LABEL_LAYOUTS}")
    if num_classes is not None and labels.shape[1] > num_classes:
      raise ValueError(f"labels are {labels.shape[1]}-wide multi-hot rows for "
                       f"{num_classes} classes")
    return
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels are {labels.dtype}; class ids must be integers")
  valid = "0 or more" if num_classes is None else f"0 to {num_classes - 1}"
  bad = np.flatnonzero((labels < 0) | (labels >= (num_classes or np.inf)))
  if bad.size:
    more = f" (and {bad.size - 1} more)" if bad.size > 1 else ""
    raise ValueError(f"label {labels[bad[0]]} of image {bad[0]}{more} is not a "
                     f"class id; valid: {valid}")


# What an .npz for `npz_examples` holds, for its errors to name.
NPZ_LAYOUT = f"'images' uint8 (N, H, W[, C]) and 'labels' {LABEL_LAYOUTS}"


def npz_examples(path, image_format="jpeg", num_classes=None):
  """`array_examples` of an .npz's ``images`` and ``labels``; errors name the file."""
  try:
    arrays = np.load(path)
    if not isinstance(arrays, np.lib.npyio.NpzFile):
      raise ValueError(f"it is one array ({arrays.dtype} {arrays.shape}), no .npz of "
                       f"named arrays; valid: {NPZ_LAYOUT} (numpy.savez)")
    with arrays:
      missing = [key for key in ("images", "labels") if key not in arrays.files]
      if missing:
        raise ValueError(f"no {' or '.join(map(repr, missing))} array (it holds "
                         f"{arrays.files}); valid: {NPZ_LAYOUT}")
      return array_examples(arrays["images"], arrays["labels"], image_format,
                            num_classes)
  except (OSError, ValueError) as e:  # a missing, unreadable or pickled file too
    raise ValueError(f"{path}: {e}") from None
  except (zipfile.BadZipFile, EOFError) as e:  # cut short, or damaged
    raise ValueError(f"{path} is no readable .npz ({e}); it may be cut short or "
                     f"damaged; valid: {NPZ_LAYOUT} (numpy.savez)") from None


def _example(image, labels):
  return tf.train.Example(features=tf.train.Features(feature={
      sources.IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
      sources.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=labels)),
  })).SerializeToString()


def _image_bytes(image):
  """Bytes of an image given as bytes, a file path or a thunk that encodes it."""
  if callable(image):
    return image()
  if isinstance(image, str):
    with tf.io.gfile.GFile(image, "rb") as f:
      return f.read()
  return image


def write_split(out_dir, split, examples, *, num_shards, classes=None, workers=8,
                overwrite=False):
  """Writes ``examples`` [(image, class ids)] as ``split-i-of-n.tfrecord``.

  Shard i holds a contiguous run of the examples, so file order is example
  order. Returns the manifest after adding the shards to it. A split already
  in ``out_dir`` is refused (`check_split_is_new`) unless ``overwrite``, which
  replaces its shards, of whatever shard count.
  """
  tf.io.gfile.makedirs(out_dir)
  num_shards = max(1, min(num_shards, len(examples)))
  existing = split_shards(out_dir, split)
  # Shards of an earlier write with another shard count keep their names, and
  # `{split}-*.tfrecord` would read them with the new ones: every example
  # twice. ``overwrite`` removes them once the new ones are written.
  stale = [name for name in existing
           if int(_shard_name(split).fullmatch(name)[1]) != num_shards]
  if stale and not overwrite:
    raise ValueError(
        f"{out_dir} already holds {len(stale)} shard(s) of split {split!r} of "
        f"another shard count ({stale[0]} ...), which would be read with the "
        f"{num_shards} new ones; delete them first, or write to another directory")
  # Every manifest check comes before the first shard is written: a refusal
  # after it would leave the new shards beside a manifest that counts the old.
  manifest = _checked_manifest(out_dir, classes)
  if not overwrite:
    check_split_is_new(out_dir, split)
  bounds = np.linspace(0, len(examples), num_shards + 1).astype(int)

  def write(shard):
    name = f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord"
    with tf.io.TFRecordWriter(os.path.join(out_dir, name)) as writer:
      for image, labels in examples[bounds[shard]:bounds[shard + 1]]:
        writer.write(_example(_image_bytes(image), list(labels)))
    return name, int(bounds[shard + 1] - bounds[shard])

  with futures.ThreadPoolExecutor(workers) as pool:
    counts = dict(pool.map(write, range(num_shards)))
  for name in stale:  # replaced (overwrite): they leave the manifest too
    tf.io.gfile.remove(os.path.join(out_dir, name))
  return _write_manifest(out_dir, manifest, counts)


def _shard_name(split):
  """The file names `write_split` gives ``split``'s shards; group 1 is the count."""
  return re.compile(rf"{re.escape(split)}-\d{{5}}-of-(\d{{5}})\.tfrecord")


def split_shards(out_dir, split):
  """The shards of ``split`` (``split-i-of-n.tfrecord``, any n) in ``out_dir``, sorted."""
  if not tf.io.gfile.isdir(out_dir):
    return []
  shard_name = _shard_name(split)
  return sorted(name for name in tf.io.gfile.listdir(out_dir)
                if shard_name.fullmatch(name))


def check_split_is_new(out_dir, split, remedy="pass overwrite=True to replace them, "
                       "or write another split or to another directory"):
  """Refuses to write ``split`` into an ``out_dir`` that holds shards of it.

  Writing it again would replace them and their manifest entries: a folder
  of test images written without its split name used to replace the train
  split, silently. The error names the shards, their records and ``remedy``.
  """
  existing = split_shards(out_dir, split)
  if not existing:
    return
  names = existing[0] if len(existing) == 1 else f"{existing[0]} ... {existing[-1]}"
  listed = _checked_manifest(out_dir, None)["files"]
  records = sum(listed.get(name, 0) for name in existing)
  raise ValueError(
      f"{out_dir} already holds split {split!r}: {len(existing)} shard(s) ({names}), "
      f"{records} records in its {sources.MANIFEST}, which writing the split again "
      f"would replace; {remedy}")


def count_records(paths, workers=8):
  """Records in each TFRecord file, counted in parallel."""
  def count(path):
    return os.path.basename(path), sum(1 for _ in tf.data.TFRecordDataset(path))
  with futures.ThreadPoolExecutor(workers) as pool:
    return dict(pool.map(count, paths))


def update_manifest(out_dir, counts, classes=None):
  """Merges shard counts (and classes, if given) into ``out_dir/manifest.json``."""
  return _write_manifest(out_dir, _checked_manifest(out_dir, classes), counts)


def _checked_manifest(out_dir, classes):
  """``out_dir``'s manifest with ``classes`` set, refused where it cannot take them.

  A manifest that is no JSON object of shard counts, or lists other classes,
  is refused: merging into it would lose what it holds, or name the new
  shards' labels after the old classes.
  """
  path = os.path.join(out_dir, sources.MANIFEST)
  manifest = {"classes": None, "files": {}}
  if tf.io.gfile.exists(path):
    manifest = sources.read_manifest(path)
  if classes is not None:
    if manifest["classes"] not in (None, list(classes)):
      raise ValueError(
          f"{path} already lists other classes ({_few(manifest['classes'])}) than "
          f"these ({_few(classes)}); write to another directory, or delete it")
    manifest["classes"] = list(classes)
  return manifest


def _few(names, shown=3):
  """The first ``shown`` of ``names``, and how many there are."""
  more = ", ..." if len(names) > shown else ""
  return f"{len(names)}: {', '.join(map(str, names[:shown]))}{more}"


def _write_manifest(out_dir, manifest, counts):
  """Writes ``manifest`` with ``counts`` merged in, whole: a temporary file
  renamed over the old one, so a crash or a reader never meets half of it."""
  path = os.path.join(out_dir, sources.MANIFEST)
  # Shards deleted since (an earlier write of another shard count) leave
  # the manifest, so that its count is the directory's.
  present = set(tf.io.gfile.listdir(out_dir))
  manifest["files"] = {name: count for name, count in manifest["files"].items()
                       if name in present}
  manifest["files"].update(counts)
  manifest["count"] = sum(manifest["files"].values())
  with tf.io.gfile.GFile(path + ".tmp", "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
  tf.io.gfile.rename(path + ".tmp", path, overwrite=True)
  return manifest
