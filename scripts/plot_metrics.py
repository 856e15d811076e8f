r"""Plots runs' metrics against steps and against TPUv3-core-days.

  python scripts/plot_metrics.py runs/demo/pretrain runs/demo/transfer/fashion_mnist_last5/seed0 \
      --out=docs/demo_metrics.png

One row per metric (train loss, eval accuracy, few-shot accuracy, learning
rate, images/s) that some run logged, one column per x-axis (steps,
TPUv3-core-days), one line per workdir, read from each workdir's
`metrics.jsonl`. The cost axis is the one the ViT paper compares models on,
few-shot accuracy (`config.fewshot`) included: one line per probed dataset
(split `fewshot/<dataset>`; `fewshot`, the run's own data).
"""
import json
import os

from absl import app, flags
import matplotlib

matplotlib.use("Agg")  # files only; no display needed
from matplotlib.backend_bases import FigureCanvasBase  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from vit_jax.runtime import cli  # noqa: E402

# (row title, split the value is read from ('eval' = every non-train split,
#  'fewshot' = it and every 'fewshot/<dataset>'), metric keys, the first
#  present of which is plotted)
ROWS = (
    ("train loss", "train", ("loss",)),
    ("eval accuracy", "eval", ("top1", "prec@1")),
    ("few-shot accuracy", "fewshot", ("10shot", "5shot", "25shot", "1shot")),
    ("learning rate", "train", ("lr",)),
    ("images/s", "train", ("img_per_sec",)),
)
X_AXES = (("step", "step"), ("tpuv3_core_days", "TPUv3-core-days"))

FLAGS = cli.command_flags(__name__)
_OUT = flags.DEFINE_string("out", "metrics.png", "The image to write, of the format "
                           "its suffix names (.png, .pdf, .svg, ...; its directory is "
                           "made if need be).", flag_values=FLAGS)


def check_out(out):
  """Refuses, before any metric is read, an --out that matplotlib cannot write:
  one whose suffix names no format it writes (a config.json, say), a
  directory, or one under a file (no directory can be made there)."""
  formats = FigureCanvasBase.get_supported_filetypes()
  suffix = os.path.splitext(out)[1].lstrip(".").lower()
  if suffix not in formats:
    problem = (f"matplotlib writes no .{suffix} images" if suffix
               else "no suffix names the image format")
    raise ValueError(f"--out={out}: {problem}; valid suffixes: "
                     f"{', '.join('.' + f for f in sorted(formats))}")
  if os.path.isdir(out):
    raise ValueError(f"--out={out} is a directory; it is the image file to write")
  if not os.path.exists(out):
    cli.check_no_file_in_the_way("out", out, "it is the image file to write")


def read_metrics(workdir):
  """The records of ``workdir/metrics.jsonl``, in the order written.

  A last line that is no JSON is the torn write of a killed run, skipped as
  the trainer skips it when the run resumes (`metrics._kept`); one elsewhere
  is a damaged file, named with its line.
  """
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no metrics in {workdir}: {path} does not exist")
  with open(path) as f:
    lines = [(number, line) for number, line in enumerate(f, start=1) if line.strip()]
  records = []
  for number, line in lines:
    try:
      records.append(json.loads(line.strip()))
    except json.JSONDecodeError as e:
      if number == lines[-1][0]:
        break
      raise ValueError(f"{path}:{number} is not a JSON record ({e.msg} at column "
                       f"{e.colno}); each line of metrics.jsonl is one") from None
  return records


def series(records, split, keys, x_key):
  """{label: (xs, ys)} of the first key of ``keys`` that the records carry.

  The label is the key, the eval split's name, or a probed dataset's name
  and the key ('digits 10shot').
  """
  lines = {}
  for record in records:
    in_split = (record.get("split") == split
                or split == "eval" and record.get("split") != "train"
                or split == "fewshot" and record.get("split", "").startswith("fewshot/"))
    key = next((k for k in keys if k in record), None)
    if not in_split or key is None or x_key not in record:
      continue
    label = record["split"] if split == "eval" else key
    if split == "fewshot" and record["split"] != split:
      label = f"{record['split'].partition('/')[2]} {key}"
    xs, ys = lines.setdefault(label, ([], []))
    xs.append(record[x_key])
    ys.append(record[key])
  return lines


def rows_with_data(runs):
  """The `ROWS` that some run of ``runs`` ({workdir: records}) has values for."""
  return [(title, split, keys) for title, split, keys in ROWS
          if any(series(records, split, keys, "step") for records in runs.values())]


def plot(workdirs, out):
  check_out(out)
  runs = {workdir: read_metrics(workdir) for workdir in workdirs}
  rows = rows_with_data(runs)
  if not rows:
    logged = ", ".join(os.path.join(w, "metrics.jsonl") for w in workdirs)
    raise ValueError(
        f"nothing to plot: {logged} log none of "
        f"{', '.join(sorted({k for _, _, keys in ROWS for k in keys}))} with a step")
  figure, axes = plt.subplots(len(rows), len(X_AXES), squeeze=False,
                              figsize=(5 * len(X_AXES), 2.6 * len(rows)))
  for row, (title, split, keys) in enumerate(rows):
    for column, (x_key, x_label) in enumerate(X_AXES):
      ax = axes[row][column]
      for workdir, records in runs.items():
        for label, (xs, ys) in series(records, split, keys, x_key).items():
          name = os.path.basename(os.path.normpath(workdir))
          ax.plot(xs, ys, marker="o" if len(xs) < 3 else None, markersize=4,
                  label=f"{name} {label}" if split in ("eval", "fewshot") else name)
      ax.set_title(title, fontsize=10)
      ax.grid(alpha=0.3)
      if row == len(rows) - 1:
        ax.set_xlabel(x_label)
      if row == 0 and column == 0 or split in ("eval", "fewshot") and column == 0:
        ax.legend(fontsize=7)
  figure.tight_layout()
  if os.path.dirname(out):
    os.makedirs(os.path.dirname(out), exist_ok=True)
  figure.savefig(out, dpi=110)
  plt.close(figure)
  return out


def main(argv):
  workdirs = argv[1:]
  if not workdirs:
    raise app.UsageError("name the run workdirs to plot")
  print(plot(workdirs, _OUT.value))


if __name__ == "__main__":
  cli.run(main)
