r"""Writes JFT-style TFRecord shards (and their manifest) for config.data.source=tfrecord.

From a folder of class subfolders (JPEG/PNG files, stored as they are):

  python scripts/make_tfrecords.py --from_folder=/data/pets/train \
      --out_dir=/data/pets_tfr --split=train --num_shards=64

From arrays in an .npz (`images` uint8 (N, H, W, C), or (N, H, W) grayscale;
`labels` (N,) or (N, 1) class ids, or (N, classes) 0/1 multi-hot rows for
multi-label data), encoded as JPEG:

  python scripts/make_tfrecords.py --from_npz=arrays.npz --out_dir=DIR --split=train

Shards already written by other tools (records with image/encoded and
image/class/label) only need their manifest:

  python scripts/make_tfrecords.py --index_only --out_dir=/data/jft

Then train with config.data.source=tfrecord, config.data.data_dir=OUT_DIR,
config.data.pattern='{split}-*.tfrecord'.

Examples are written in a seeded shuffle (the same shards on every run):
splits are sliced in file order (`train[:98%]`, `train[98%:]`), and class
folders come class by class, so unshuffled shards would hold a few classes
each and a held-out slice only the last ones. `--keep_order` writes them as
given.

A split that --out_dir holds already is refused, naming its shards:
`--overwrite` replaces them (of whatever shard count).
"""
import glob
import os
import random
import re

from absl import app, flags

from vit_jax.runtime import cli

FLAGS = cli.command_flags(__name__)
_FROM_FOLDER = flags.DEFINE_string("from_folder", None, "A directory of class subfolders.",
                                   flag_values=FLAGS)
_FROM_NPZ = flags.DEFINE_string("from_npz", None, "An .npz with `images` and `labels`.",
                                flag_values=FLAGS)
_INDEX_ONLY = flags.DEFINE_bool("index_only", False, "Count the records of the "
                                "shards in --out_dir.", flag_values=FLAGS)
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where the shards and manifest go.",
                               flag_values=FLAGS, required=True)
_SPLIT = flags.DEFINE_string("split", "train", "The shards' file name prefix.",
                             flag_values=FLAGS)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace the shards of --split "
                               "that --out_dir holds already (refused without it).",
                               flag_values=FLAGS)
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 16, "Shards to write.", lower_bound=1,
                                   flag_values=FLAGS)
_WORKERS = flags.DEFINE_integer("workers", os.cpu_count() or 1, "Processes that "
                                "encode and write.", lower_bound=1, flag_values=FLAGS)
_FORMAT = flags.DEFINE_enum("format", "jpeg", ["jpeg", "png"], "How --from_npz "
                            "arrays are encoded (--from_folder files are stored as "
                            "they are).", flag_values=FLAGS)
_CLASSES = flags.DEFINE_string(
    "classes", None, "A text file of class names, one a line: class id i is line "
    "i's name. With --from_folder (whose names are its sorted subfolders) it must "
    "list those.", flag_values=FLAGS)
_NUM_CLASSES = flags.DEFINE_integer(
    "num_classes", None, "Class count of --from_npz labels: a class id outside "
    "[0, N) is refused before anything is written (default: the number of "
    "--classes names; negative ids are refused always).", lower_bound=1,
    flag_values=FLAGS)
_KEEP_ORDER = flags.DEFINE_bool("keep_order", False, "Write the examples in the "
                                "order given instead of in a seeded shuffle.",
                                flag_values=FLAGS)
flags.register_multi_flags_validator(
    ["from_folder", "from_npz", "index_only"],
    lambda given: sum(bool(value) for value in given.values()) == 1,
    "give exactly one of --from_folder, --from_npz and --index_only",
    flag_values=FLAGS)


def read_classes(path):
  """The class names of a --classes file, one a line; a missing or empty one is
  refused, naming the flag."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--classes={path}: no such file; it is a text file of "
                            f"class names, one a line")
  with open(path) as f:
    classes = [line.strip() for line in f if line.strip()]
  if not classes:
    raise ValueError(f"--classes={path} lists no class names; it is a text file of "
                     f"class names, one a line")
  return classes


# What --split may hold: it starts the shards' file names, which are read
# through the glob config.data.pattern ('{split}-*.tfrecord').
_SPLIT_NAME = re.compile(r"[^/*?\[\]]+")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from vit_jax.data import tfrecords  # after flag parsing: --help is fast

  out_dir = _OUT_DIR.value
  cli.check_no_file_in_the_way(
      "out_dir", out_dir, "it is the directory the shards and their manifest go to "
      "(made if need be)")
  classes = read_classes(_CLASSES.value) if _CLASSES.value else None
  if _INDEX_ONLY.value:
    paths = sorted(glob.glob(os.path.join(out_dir, "*.tfrecord*")))
    if not paths:
      raise app.UsageError(f"--index_only: no *.tfrecord* files in {out_dir}")
    manifest = tfrecords.update_manifest(
        out_dir, tfrecords.count_records(paths, _WORKERS.value), classes)
  else:
    if not _SPLIT_NAME.fullmatch(_SPLIT.value):
      raise app.UsageError(
          f"--split={_SPLIT.value} is no file name prefix; the shards are "
          f"--out_dir/SPLIT-00000-of-NNNNN.tfrecord, read through the glob "
          f"config.data.pattern, so SPLIT is not empty and holds none of / * ? [ ] "
          f"(train, test, val)")
    # Before the examples are read: a split written already is refused whole.
    if not _OVERWRITE.value:
      tfrecords.check_split_is_new(
          out_dir, _SPLIT.value, remedy="give --overwrite to replace them, "
          "--split=NAME to write another split (train unless given), or another "
          "--out_dir")
    if _FROM_FOLDER.value:
      # Images of a folder are stored as they are, and labelled by it.
      ignored = [f"--{name}" for name in ("num_classes", "format") if FLAGS[name].present]
      if ignored:
        raise app.UsageError(
            f"{' and '.join(ignored)} {'apply' if len(ignored) > 1 else 'applies'} "
            f"to --from_npz; with --from_folder the "
            f"images are stored as they are and the classes are its subfolders")
      examples, folder_classes = tfrecords.folder_examples(_FROM_FOLDER.value)
      if classes is not None and classes != folder_classes:
        raise app.UsageError(
            f"--classes={_CLASSES.value} lists {', '.join(classes)}; with "
            f"--from_folder the labels are the class folders' places in sorted "
            f"order, so it must list {', '.join(folder_classes)} (the folders of "
            f"{_FROM_FOLDER.value}), or be left out")
      classes = folder_classes
    else:
      if classes is not None and _NUM_CLASSES.value not in (None, len(classes)):
        raise app.UsageError(
            f"--num_classes={_NUM_CLASSES.value} but --classes={_CLASSES.value} names "
            f"{len(classes)}; the manifest's class names must cover every label: "
            f"give one of the two, or agreeing ones")
      num_classes = _NUM_CLASSES.value or (len(classes) if classes else None)
      try:  # checked whole before any shard is written
        examples = tfrecords.npz_examples(_FROM_NPZ.value, _FORMAT.value, num_classes)
      except ValueError as e:
        raise app.UsageError(f"--from_npz: {e}") from None
    if not _KEEP_ORDER.value:
      random.Random(0).shuffle(examples)
    manifest = tfrecords.write_split(out_dir, _SPLIT.value, examples,
                                     num_shards=_NUM_SHARDS.value, classes=classes,
                                     workers=_WORKERS.value,
                                     overwrite=_OVERWRITE.value)
  print(f"{out_dir}: {manifest['count']} records in {len(manifest['files'])} "
        f"shards, {len(manifest['classes'] or [])} class names")


if __name__ == "__main__":
  cli.run(main)
