r"""A transfer suite: the ViT paper's fine-tuning protocol over its benchmarks.

  python -m vit_jax.transfer --workdir=runs/b16_i21k/transfer \
      --config=configs/transfer.py:suite=paper,init=runs/b16_i21k

For each benchmark the suite (`vit_jax.evaluators.transfer`) picks the
learning rate on a development split: one fine-tune on `dev_train` per rate
of the grid, scored on `dev` (none where the grid has one rate). It then
fine-tunes on the whole training set with that rate once per seed and
scores the test split. The table gives "mean ± std" over the seeds, a row
per benchmark, the VTAB group means, and the pre-training's
TPUv3-core-days (the paper's Table 2, one model).

Suites (`suite=`):
- ``paper``: ImageNet (and ImageNet ReaL, from the same runs), CIFAR-10,
  CIFAR-100, Oxford-IIIT Pets, Oxford Flowers-102, and VTAB-1k's 19 tasks,
  each with Table 4's steps and learning-rate grid (`finetune.TABLE4`), the
  rest of `configs/finetune.py`'s recipe (SGD momentum 0.9, batch 512, cosine
  decay, clip 1, no weight decay, a zero head, 384 px unless `res=`).
- ``vtab``: VTAB-1k's 19 tasks alone (2,500 steps at the one rate 0.01, so
  no dev runs: the final runs train on train800val200, scored on the test
  split).
- ``demo``: the offline demo's transfer (`make demo`): the ViT pre-trained on
  five Fashion-MNIST classes, fine-tuned on the other five and on sklearn's
  digits, with the same protocol scaled to two CPU cores (`DEMO`).

`benchmarks=cifar10+oxford_iiit_pet` keeps some of a suite's benchmarks;
`seeds=N` runs N seeds (3, the paper's); `res=N` fine-tunes at N px in any
suite (0: the suite's, the paper's 384 or the demo's 4x4 patch grid).
`init` is a pre-training workdir (its variant and cost are read from it),
an orbax step directory, or a published .npz (then `variant=` is needed);
`--config.init=PATH` moves every fine-tune's starting point with it (the
variant stays the one `init=` gave).

Each benchmark's `finetune` is the recipe of its runs less what the suite
sets per run (`evaluators.transfer.PER_RUN_FIELDS`): the seed from `seeds`,
the learning rate from the benchmark's `lrs`, the splits from its `splits`.
Those fields are unset here, and a value given to one is refused rather
than silently replaced.
"""
import os

import ml_collections
from ml_collections.config_dict import placeholder

from configs import common, demo, finetune
from vit_jax.train import workdir_files

# Rows of the paper's Table 2, in its order; VTAB's tasks follow, grouped.
PAPER_BENCHMARKS = ("imagenet2012", "cifar10", "cifar100", "oxford_iiit_pet",
                    "oxford_flowers102")
# The table's row names; another benchmark's row is its preset's name (vtab_dtd).
ROW_NAMES = {"imagenet2012": "ImageNet", "cifar10": "CIFAR-10",
             "cifar100": "CIFAR-100", "oxford_iiit_pet": "Oxford-IIIT Pets",
             "oxford_flowers102": "Oxford Flowers-102",
             "fashion_mnist_last5": "Fashion-MNIST, 5 held-out classes",
             "digits": "sklearn digits"}
# The dataset whose labels score a benchmark's test runs a second time, as
# another row: ImageNet's validation images with their ReaL labels.
REAL = {"imagenet2012": ("ImageNet ReaL", "imagenet2012_real", "validation")}

# The demo's transfer: the paper's protocol (SGD momentum 0.9, cosine decay,
# clip 1, no weight decay, a zero head) scaled to two CPU cores.
# dataset: (steps, batch, learning-rate grid).
DEMO = {"fashion_mnist_last5": (100, 128, (0.03, 0.1)),
        "digits": (150, 64, (0.03, 0.1))}
DEMO_WARMUP_STEPS = 10


def vtab_tasks():
  """VTAB-1k's dataset presets, in the benchmark's order (natural first)."""
  return tuple(name for name in common.DATASETS if name.startswith("vtab_"))


def get_config(arg=None):
  args = common.parse_arg_string(arg, suite="paper", init="", variant="",
                                 data_dir="", res=0, seeds=3, benchmarks="")
  suites = {"paper": PAPER_BENCHMARKS + vtab_tasks(), "vtab": vtab_tasks(),
            "demo": tuple(DEMO)}
  if args.suite not in suites:
    raise ValueError(f"configs/transfer.py: suite={args.suite!r}; valid: "
                     f"{', '.join(suites)}")
  if not args.init:
    raise ValueError("configs/transfer.py: init= is needed: the pre-trained "
                     "run's workdir, an orbax step directory or a .npz file")
  if args.seeds < 1:
    raise ValueError(f"configs/transfer.py: seeds={args.seeds}; at least 1")
  names = _chosen(suites[args.suite], args.benchmarks, args.suite)
  config = ml_collections.ConfigDict()
  config.suite = args.suite
  config.init = args.init
  config.seeds = tuple(range(args.seeds))
  config.benchmarks = ml_collections.ConfigDict(sort_keys=False)  # the table's order
  for name in names:
    if args.suite == "demo":
      run = _demo_finetune(name, args)
      lrs = DEMO[name][2]
    else:
      run = _paper_finetune(name, args)
      lrs = _paper_lrs(name)
    _leave_per_run_fields_to_the_suite(run, config)
    preset = common.DATASETS[name]
    bench = dict(row=ROW_NAMES.get(name, name), group=preset.get("group", ""),
                 lrs=lrs, splits=dict(preset["transfer_splits"]), finetune=run)
    if name in REAL:
      row, real_name, real_split = REAL[name]
      bench["extra"] = dict(row=row, split=real_split, data=common.dataset_config(
          real_name, data_dir=args.data_dir or None))
    config.benchmarks[name] = bench
  config.lock()
  return config


def _leave_per_run_fields_to_the_suite(run, config):
  """``run`` with the fields the suite sets per run unset, its init ``config.init``'s.

  The fields are `vit_jax.evaluators.transfer.PER_RUN_FIELDS` (not imported:
  it would bring TensorFlow into every config).

  Left set, they would read as the runs' values and be replaced by the
  suite's; an init of its own would not follow `--config.init`.
  """
  with run.unlocked():
    run.init = config.get_ref("init")
    run.seed = placeholder(int)
    run.lr.base = placeholder(float)
    run.data.train_split = placeholder(str)
    run.data.eval_splits = None
  return run


def _chosen(names, wanted, suite):
  """``names`` cut down to the '+'-joined ``wanted`` ones (all if empty), in order."""
  if not wanted:
    return names
  wanted = wanted.split("+")
  unknown = [name for name in wanted if name not in names]
  if unknown:
    raise ValueError(f"configs/transfer.py: benchmarks={'+'.join(unknown)} not in "
                     f"suite={suite}; valid: {', '.join(names)}")
  return tuple(name for name in names if name in wanted)


def _paper_lrs(name):
  """Table 4's learning-rate grid for dataset ``name`` (`configs/finetune.py`)."""
  if name.startswith("vtab_"):
    return finetune.VTAB_STEPS_LRS[1]
  return finetune.TABLE4[name][1]


def _paper_finetune(name, args):
  """`configs/finetune.py`'s run for dataset ``name`` (Table 4's steps)."""
  variant = args.variant or _init_variant(args.init)
  parts = [f"variant={variant}", f"data={name}", f"init={args.init}"]
  if args.res:
    parts.append(f"res={args.res}")
  if args.data_dir:
    parts.append(f"data_dir={args.data_dir}")
  return finetune.get_config(",".join(parts))


def _demo_finetune(name, args):
  """The demo's fine-tuning stage on ``name``, under the paper's protocol."""
  steps, batch, _ = DEMO[name]
  variant = args.variant or _init_variant(args.init)
  config = demo.get_config(f"stage=finetune,data={name},init={args.init},"
                           f"variant={variant},data_dir={args.data_dir or 'data/tfds'}")
  config.unlock()
  config.update(dict(global_batch=batch, eval_batch=500, total_steps=steps,
                     eval_every=steps, log_every=steps, checkpoint_every=50))
  if args.res:  # the preprocessing follows (`common.pp_strings`)
    config.image_size = args.res
  # Read from disk each time: a run reads less than an epoch of the larger
  # task, and TensorFlow takes half a minute to tear down an iterator whose
  # in-memory cache a shuffle buffer has only partly filled. A run's first
  # batch waits for the buffer to fill: 10,000 examples, a third of the
  # larger task, take a few seconds where all 30,000 took three times that.
  config.data.update(cache=False, shuffle_buffer=10_000)
  config.optim.update(name="sgd", momentum=0.9, weight_decay=0.0, grad_clip_norm=1.0)
  config.lr.update(warmup_steps=DEMO_WARMUP_STEPS, decay="cosine", end=0.0)
  config.lock()
  return config


def _init_variant(init):
  """The variant of the pre-training run ``init`` names (its workdir's config.json)."""
  if not os.path.exists(init):
    raise FileNotFoundError(f"configs/transfer.py: init={init!r} does not exist")
  path = os.path.join(workdir_files.run_workdir(init), workdir_files.CONFIG_FILE)
  if not os.path.exists(path):
    raise ValueError(f"configs/transfer.py: variant= is needed: init={init!r} "
                     f"has no {path} to read the pre-trained model's variant from")
  return workdir_files.read_config(path).variant
