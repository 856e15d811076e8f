r"""Fine-tuning a pre-trained ViT at a higher resolution, the ViT paper's way.

  python -m vit_jax.main --workdir=runs/b16_cifar10 \
      --config=configs/finetune.py:variant=B/16,data=cifar10,init=runs/b16_i21k

As the paper's Table 4 and Appendix B.1.1: SGD with momentum 0.9, batch 512,
cosine decay, clip 1, no weight decay, no pre_logits, a zero-initialised head
for the new classes, softmax cross-entropy, 384 px (378 at /14, whose 27x27
patches the paper's 384 px gave). The steps are Table 4's for the dataset
(`TABLE4`): ImageNet 20k, CIFAR-10 and -100 10k, Oxford-IIIT Pets and Oxford
Flowers-102 500, each VTAB task (presets named vtab_*) 2,500; any other
dataset 10k (ours). The lr is 0.01, which is in every dataset's
grid of Table 4 (ImageNet {0.003, 0.01, 0.03, 0.06}; CIFAR, Pets, Flowers
{0.001, 0.003, 0.01, 0.03}; VTAB 0.01 alone); the paper picks one per dataset
on a held-out part of train (the presets' minival; Flowers' preset trains on
all of train+validation and has none, the transfer suite holds out 10% of
each), and `lr=` runs another.

ImageNet as in the paper's Table 2: L/16 fine-tunes at 512 px and H/14 at 518
px (32x32 and 37x37 patches), both with Polyak averaging of decay 0.9999
(`config.ema_decay`, also with another `res`; `--config.ema_decay=0` drops it).

Augmentation: an inception crop and a flip (vision_transformer's); VTAB-1k,
for which the paper follows BiT's protocol, BiT's random 384 px crop of the
image resized to 448 and a flip, either left out where it would change the
label, as BiT does (dSprites position and orientation, SmallNORB azimuth,
CLEVR, DMLab and KITTI: configs/transfer_datasets.py). Eval resizes to the
model's size.

The warm-up is ours, as the paper states none: a tenth of the run, at most
500 steps (500 from 5k steps on, 250 for VTAB, 50 for Pets and Flowers). It
follows `steps=N` and `--config.total_steps=N` alike.

The position embeddings of `init` are resampled to the new grid (224 -> 384
px: 14x14 -> 24x24 patches at /16). `init` is a workdir of a pre-training run
(its latest checkpoint), one orbax checkpoint step directory, or a
published-layout .npz file.

Arguments: variant, data (a preset of configs/common.py), data_dir, res (0:
the paper's, as above), init, steps (0: the table's), lr.
"""
from configs import common
from vit_jax import models

# The ViT paper's Table 4: dataset preset -> (fine-tuning steps, lr grid).
# Appendix B.1.1 says 0.06 joined ImageNet's grid for ResNets and hybrids;
# Table 4 lists it for every model, and so do we.
TABLE4 = {
    "imagenet2012": (20_000, (0.003, 0.01, 0.03, 0.06)),
    "cifar10": (10_000, (0.001, 0.003, 0.01, 0.03)),
    "cifar100": (10_000, (0.001, 0.003, 0.01, 0.03)),
    "oxford_iiit_pet": (500, (0.001, 0.003, 0.01, 0.03)),
    "oxford_flowers102": (500, (0.001, 0.003, 0.01, 0.03)),
}
# Every VTAB-1k task, the dataset presets named vtab_*: one setting for all.
VTAB_STEPS_LRS = (2_500, (0.01,))
# Any other dataset: ours, not the paper's.
OTHER_STEPS_LRS = (10_000, (0.01,))

# The paper's 384 px, as a grid of whole patches: 24x24 at /16; 27x27 at
# /14 is 378 px, the grid its VALID-padded patch embedding made of 384 px
# (this repo refuses a size the patch does not divide).
RES = 384
# Table 2's ImageNet fine-tunes of the largest models: (variant, data) ->
# (image size, Polyak averaging decay).
TABLE2 = {
    ("L/16", "imagenet2012"): (512, 0.9999),
    ("H/14", "imagenet2012"): (518, 0.9999),
}
MAX_WARMUP = 500
# VTAB-1k's random crop: BiT's (448 -> 384 px), as the paper follows BiT's
# protocol there; `{precrop}` is 7/6 of the image size.
VTAB_CROP = "resize({precrop})|random_crop({image_size})"


def steps_and_lrs(data):
  """(steps, lr grid) for the dataset preset ``data``: Table 4's, else 10k at 0.01."""
  if data in TABLE4:
    return TABLE4[data]
  if data.startswith("vtab_"):
    return VTAB_STEPS_LRS
  return OTHER_STEPS_LRS


def warmup_steps(total_steps):
  """``min(MAX_WARMUP, total_steps // 10)``, following the FieldReference given.

  min(a, b) is (a + b - |a - b|) / 2, written in the operators a
  FieldReference has, so that the config still pickles and the warm-up moves
  with `--config.total_steps=N`.
  """
  tenth = total_steps // 10
  return (tenth + MAX_WARMUP - abs(tenth - MAX_WARMUP)) // 2


def get_config(arg=None):
  args = common.parse_arg_string(
      arg, variant="B/16", data="cifar10", data_dir="", res=0, init="",
      steps=0, lr=0.01)
  common.refuse_resnet(args.variant, "configs/finetune.py")
  config = common.base_config()
  config.variant = args.variant
  config.data = common.dataset_config(args.data, data_dir=args.data_dir or None)
  config.init = args.init
  patch = models.get_model(args.variant, num_classes=1).patch_size
  paper_res, ema_decay = TABLE2.get((args.variant, args.data),
                                    (RES - RES % patch, 0.0))
  config.image_size = args.res or paper_res
  config.ema_decay = ema_decay
  config.loss = "softmax_xent"
  config.global_batch = 512
  paper_steps, _ = steps_and_lrs(args.data)
  config.total_steps = args.steps or paper_steps
  # Updated, not replaced, so that `--config.optim.name=adam` finds b1 and b2.
  config.optim.update(name="sgd", momentum=0.9, weight_decay=0.0, grad_clip_norm=1.0)
  config.lr.update(base=args.lr, decay="cosine", end=0.0)
  config.lr.warmup_steps = warmup_steps(config.get_ref("total_steps"))
  config.eval_every = 1_000
  config.pp = common.pp_strings(
      config, values=dict(precrop=config.get_ref("image_size") * 7 // 6),
      train=common.finetune_train_pp(args.data, VTAB_CROP if args.data.startswith("vtab_")
                                     else "inception_crop({image_size})"),
      eval="decode|resize({image_size})|value_range(-1,1)|onehot({num_classes})")
  config.lock()
  return config
