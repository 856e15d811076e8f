r"""Writes JFT-style TFRecord shards (and their manifest) for config.data.source=tfrecord.

From a folder of class subfolders (JPEG/PNG files, stored as they are):

  python scripts/make_tfrecords.py --from_folder=/data/pets/train \
      --out_dir=/data/pets_tfr --split=train --num_shards=64

From arrays in an .npz (`images` uint8 (N, H, W, C), or (N, H, W) grayscale;
`labels` (N,) class ids or (N, classes) multi-hot rows for multi-label data),
encoded as JPEG:

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
"""
import argparse
import glob
import os
import pathlib
import random
import sys

# Lets the script run from a checkout where vit_jax is not pip-installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from vit_jax.data import tfrecords  # noqa: E402


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--from_folder", help="a directory of class subfolders")
  source.add_argument("--from_npz", help="an .npz with `images` and `labels`")
  source.add_argument("--index_only", action="store_true",
                      help="count the records of the shards in --out_dir")
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--split", default="train", help="file name prefix")
  parser.add_argument("--num_shards", type=int, default=16)
  parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
  parser.add_argument("--format", default="jpeg", choices=["jpeg", "png"],
                      help="how --from_npz arrays are encoded")
  parser.add_argument("--classes", help="a text file of class names, one a line")
  parser.add_argument("--keep_order", action="store_true",
                      help="write the examples in the order given instead of "
                           "in a seeded shuffle")
  args = parser.parse_args(argv)

  classes = None
  if args.classes:
    with open(args.classes) as f:
      classes = [line.strip() for line in f if line.strip()]
  if args.index_only:
    paths = sorted(glob.glob(os.path.join(args.out_dir, "*.tfrecord*")))
    if not paths:
      parser.error(f"no *.tfrecord* files in {args.out_dir}")
    manifest = tfrecords.update_manifest(
        args.out_dir, tfrecords.count_records(paths, args.workers), classes)
  else:
    if args.from_folder:
      examples, folder_classes = tfrecords.folder_examples(args.from_folder)
      classes = classes or folder_classes
    else:
      try:  # checked whole before any shard is written
        examples = tfrecords.npz_examples(args.from_npz, args.format)
      except ValueError as e:
        raise SystemExit(f"--from_npz: {e}") from None
    if not args.keep_order:
      random.Random(0).shuffle(examples)
    manifest = tfrecords.write_split(args.out_dir, args.split, examples,
                                     num_shards=args.num_shards, classes=classes,
                                     workers=args.workers)
  print(f"{args.out_dir}: {manifest['count']} records in {len(manifest['files'])} "
        f"shards, {len(manifest['classes'] or [])} class names")


if __name__ == "__main__":
  main()
