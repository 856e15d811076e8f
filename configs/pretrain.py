r"""Pre-training a ViT or hybrid with the ViT paper's recipe (its Table 3).

  python -m vit_jax.main --workdir=runs/b16_i21k \
      --config=configs/pretrain.py:variant=B/16,data=imagenet21k

Every row: Adam (b1 0.9, b2 0.999), batch 4096, 10k warm-up steps, sigmoid
cross-entropy with a zero head whose bias starts at -10, a pre_logits layer of
the hidden size, 224 px with inception crop and flip, decoupled weight decay
(multiplied by the lr, vit_jax/train/optim.py). By variant and dataset, the
epochs, lr, its decay, the weight decay and dropout are Table 3's (`TABLE3`
below): on JFT 7 epochs (H/14: 14), lr 8e-4 (B), 6e-4 (L/32), 4e-4 (L/16),
3e-4 (H/14), weight decay 0.1, no dropout; on ImageNet-21k 90 epochs, lr
1e-3, weight decay 0.03, dropout 0.1; on ImageNet (imagenet2012) 300 epochs,
lr 3e-3 with cosine decay, weight decay 0.3, dropout 0.1.

The paper trains only B and L on ImageNet-21k (L for 30 or 90 epochs:
`epochs=30`); other ViTs and hybrids take the same row. Its best L/16 ran 14
epochs on JFT (`epochs=14`). Another variant on JFT, or another dataset, is an
error listing the rows. ImageNet-21k's weight decay 0.03 is the paper's;
big_vision and AugReg take 0.1 (x lr) there (`--config.optim.weight_decay=0.1`).

One value is not the paper's: it clips the gradient at global norm 1 only on
ImageNet (Table 3's caption); we clip at 1 on every dataset, as big_vision's
ViT configs do, because a clip that never fires costs nothing and one that
does saves a run from a spike. `--config.optim.grad_clip_norm=0` gives the
paper's setting on JFT and ImageNet-21k.

Few-shot probes are off, as in the paper; `--config.fewshot.every=N` turns on
big_vision's (Caltech101, Cars196, CIFAR-100, DTD, Pets and UC Merced at 1, 5,
10 and 25 shots: `transfer_datasets.FEWSHOT_DATASETS`), every N steps, read
from data_dir; `fewshot_imagenet=True` adds ImageNet at 10 shots, for a
data_dir that holds it. `--config.fewshot.datasets="()"` probes the run's own
data instead.

The ViT paper pre-trains without augmentation. `aug=` takes one of the
AugReg paper's presets instead (Steiner et al. 2021, "How to train your ViT?",
as big_vision's vit_i21k.py writes them; `AUGREG`): RandAugment after the
flip and batch mixup of Beta(alpha, alpha), from `light1` (randaug(2, 0), no
mixup) to `strong2` (randaug(2, 20), mixup 0.8). Its released checkpoints
also name a dropout and stochastic depth (`do_0.1-sd_0.1`):
`--config.model.dropout_rate=0.1 --config.model.drop_path_rate=0.1`.

Arguments: variant, data (a preset of configs/common.py), data_dir, epochs
(0: the table's); steps=N counts the run in steps instead of epochs;
fewshot_imagenet; aug (none: the paper's). The datasets must be prepared
beforehand; nothing is downloaded, and a missing one stops the run at its
start, named with the command that prepares it.
"""
import collections

from configs import common, transfer_datasets
from vit_jax import models

Row = collections.namedtuple("Row", "epochs lr decay weight_decay dropout")
ANY_VARIANT = "*"

# The ViT paper's Table 3, a row per (variant, data); ANY_VARIANT is every ViT
# and hybrid. Hybrids are named as here (R50x1+B/16), the paper's R50+ViT-B/16.
TABLE3 = {
    ("B/16", "jft"): Row(7, 8e-4, "linear", 0.1, 0.0),
    ("B/32", "jft"): Row(7, 8e-4, "linear", 0.1, 0.0),
    ("L/32", "jft"): Row(7, 6e-4, "linear", 0.1, 0.0),
    ("L/16", "jft"): Row(7, 4e-4, "linear", 0.1, 0.0),  # and 14 epochs
    ("H/14", "jft"): Row(14, 3e-4, "linear", 0.1, 0.0),
    ("R50x1+B/16", "jft"): Row(7, 8e-4, "linear", 0.1, 0.0),
    ("R50x1+B/32", "jft"): Row(7, 8e-4, "linear", 0.1, 0.0),
    ("R50x1+L/32", "jft"): Row(7, 2e-4, "linear", 0.1, 0.0),
    ("R50x1+L/16", "jft"): Row(7, 4e-4, "linear", 0.1, 0.0),  # and 14 epochs
    (ANY_VARIANT, "imagenet21k"): Row(90, 1e-3, "linear", 0.03, 0.1),  # L: 30 or 90
    (ANY_VARIANT, "imagenet2012"): Row(300, 3e-3, "cosine", 0.3, 0.1),
}


Augmentation = collections.namedtuple("Augmentation", "randaug mixup_alpha")

# The AugReg presets: (RandAugment op, or none; mixup's Beta(alpha, alpha)).
# With big_vision's strengths (increasing=False): even at magnitude 0
# posterize keeps one bit, solarize inverts and the enhance ops nearly erase.
AUGREG = {
    "none": Augmentation(None, 0.0),
    "light1": Augmentation("randaug(2, 0, increasing=False)", 0.0),
    "light2": Augmentation("randaug(2, 10, increasing=False)", 0.2),
    "medium1": Augmentation("randaug(2, 15, increasing=False)", 0.2),
    "medium2": Augmentation("randaug(2, 15, increasing=False)", 0.5),
    "strong1": Augmentation("randaug(2, 20, increasing=False)", 0.5),
    "strong2": Augmentation("randaug(2, 20, increasing=False)", 0.8),
}


def paper_row(variant, data):
  """Table 3's row for ``variant`` on ``data``; an error listing the rows if none."""
  row = TABLE3.get((variant, data)) or TABLE3.get((ANY_VARIANT, data))
  if row is None:
    rows = collections.defaultdict(list)
    for row_variant, row_data in TABLE3:
      rows[row_data].append("any ViT or hybrid" if row_variant == ANY_VARIANT
                            else row_variant)
    valid = "; ".join(f"{name}: {', '.join(variants)}" for name, variants in rows.items())
    raise ValueError(f"configs/pretrain.py has no recipe for variant={variant!r} on "
                     f"data={data!r}; the ViT paper's (Table 3) are {valid}")
  return row


def get_config(arg=None):
  args = common.parse_arg_string(
      arg, variant="B/16", data="imagenet21k", data_dir="", epochs=0, steps=0,
      fewshot_imagenet=False, aug="none")
  if args.aug not in AUGREG:
    raise ValueError(f"configs/pretrain.py: unknown aug={args.aug!r}; the AugReg "
                     f"presets are {', '.join(AUGREG)}")
  augmentation = AUGREG[args.aug]
  common.refuse_resnet(args.variant, "configs/pretrain.py")
  common.refuse_epochs_and_steps(args, "configs/pretrain.py")
  config = common.base_config()
  config.variant = args.variant
  config.data = common.dataset_config(args.data, data_dir=args.data_dir or None)
  hidden_size = models.get_model(args.variant, num_classes=1).hidden_size
  row = paper_row(args.variant, args.data)
  config.model.representation_size = hidden_size
  config.model.dropout_rate = row.dropout
  config.model.head_bias_init = -10.0
  config.optim.weight_decay = row.weight_decay
  config.lr.update(base=row.lr, decay=row.decay)
  if args.steps:
    config.total_steps = args.steps
  else:
    config.total_epochs = args.epochs or row.epochs
  templates = dict(common.UPSTREAM_PP)
  if augmentation.randaug:  # on the crop's uint8 pixels, as big_vision's
    templates["train"] = templates["train"].replace(
        "|flip_lr|", f"|flip_lr|{augmentation.randaug}|")
  config.pp = common.pp_strings(config, **templates)
  config.mixup.alpha = augmentation.mixup_alpha
  config.fewshot.datasets = transfer_datasets.FEWSHOT_DATASETS
  if args.fewshot_imagenet:
    config.fewshot.datasets += (transfer_datasets.FEWSHOT_IMAGENET,)
  config.lock()
  return config
