r"""BiT ResNet-v2: its upstream pre-training and its BiT-HyperRule fine-tuning.

  python -m vit_jax.main --workdir=runs/r50x1_i21k \
      --config=configs/bit.py:stage=upstream,variant=R50x1,data=imagenet21k
  python -m vit_jax.main --workdir=runs/r50x1_cifar10 \
      --config=configs/bit.py:stage=hyperrule,variant=R50x1,data=cifar10,init=runs/r50x1_i21k

Kolesnikov et al. 2020, "Big Transfer (BiT)"; section 3.2 for upstream,
3.3 for the HyperRule, whose reference is big_transfer's bit_hyperrule.py.
Not run here at full scale: the paper's tables are what to expect.

stage=upstream (section 3.2): SGD momentum 0.9, batch 4096, lr 0.03 x
global_batch / 256 (it follows `--config.global_batch`), 5,000 warm-up
steps, then x0.1 at epochs 30, 60 and 80 of 90 (BiT-S on ILSVRC-2012, BiT-M
on ImageNet-21k); on JFT x0.1 at 10, 23, 30 and 37 of 40 (BiT-L). L2 weight
decay 1e-4 (see `UPSTREAM_WEIGHT_DECAY`); no clipping; 224 px inception crop
and flip; no mixup. Softmax cross-entropy on ILSVRC-2012; sigmoid on
ImageNet-21k and JFT, which BiT trained as multi-label, with the head bias
at -10 as big_vision's bit_i21k.py starts it. `epochs=N` keeps the decays
at the same fractions of the run; `steps=N` counts it in steps.

stage=hyperrule (section 3.3): SGD momentum 0.9, batch 512, lr 0.003, no
weight decay, no clipping, softmax cross-entropy, a zero head for the new
classes. By the training split's size (the preset's published split sizes):
under 20k examples 500 steps with 100 warm-up and x0.1 at 40/60/80 % (the
reference's 200, 300, 400); under 500k 10k steps, else 20k, both with 500
warm-up and x0.1 at 30/60/90 %; mixup alpha 0.1 from 20k examples on. Images
under 96x96 px are resized to 160 and randomly cropped to 128, others
resized to 448 and cropped to 384 (the paper's; the reference code uses 512
and 480); flip; the crop or the flip left out where it would change the
label (VTAB's structured tasks: `common.finetune_train_pp`); eval resizes
to the crop. The presets give the image side
of cifar10, cifar100 and fashion_mnist (`image_px`); the others
(imagenet2012, imagenet21k, jft, oxford_iiit_pet, oxford_flowers102) have
images of varied sizes, hundreds of pixels a side, and take the large rule,
as bit_hyperrule.py's (224, 224) stand-in for them does. `steps=N` and
`res=N` replace the rule's length and crop (the pre-crop resize keeps the
rule's ratio to it).

Arguments: stage, variant (a BiT ResNet: R26x1, R50x1 ... R152x4;
`config.model` holds only its fields), data (a preset of configs/common.py;
imagenet21k upstream, cifar10 for the HyperRule), data_dir; upstream also
epochs and steps, hyperrule init, steps and res. Hybrids (R50x1+B/16, ...)
are ViTs with a ResNet stem: they train with configs/pretrain.py and
configs/finetune.py, as in the ViT paper.
"""
import ml_collections

from configs import common

STAGES = ("upstream", "hyperrule")
# The arguments; 0 or '' leaves the recipe's value.
ARGS = dict(stage="upstream", variant="R50x1", data="", data_dir="", init="",
            epochs=0, steps=0, res=0)
# The arguments only some stages read.
STAGE_ARGS = {"upstream": ("epochs", "steps"), "hyperrule": ("init", "res", "steps")}

# Upstream (section 3.2): epochs and the epochs the rate drops x0.1 after.
UPSTREAM_SCHEDULE = {"jft": (40, (10, 23, 30, 37))}
DEFAULT_UPSTREAM_SCHEDULE = (90, (30, 60, 80))
UPSTREAM_LR_PER_256 = 0.03
# BiT's weight decay of 1e-4 is read as an L2 gradient term of 1e-4 x w
# (torch SGD's `weight_decay`; the paper does not say whether its loss term
# was halved): with momentum 0.9 it builds up in the momentum to
# 1e-4 / (1 - 0.9) x w. Our weight decay is
# added after the momentum (vit_jax/train/optim.py), so 1e-3 shrinks each
# kernel by the same lr x 1e-3 x w a step.
UPSTREAM_WEIGHT_DECAY = 1e-3
MULTI_LABEL_UPSTREAM = ("imagenet21k", "jft")

# BiT-HyperRule: (fewer examples than, steps, warm-up, decay fractions),
# from bit_hyperrule.get_schedule's [warm-up, decay, decay, decay, end].
HYPERRULE_SCHEDULES = (
    (20_000, 500, 100, (0.4, 0.6, 0.8)),
    (500_000, 10_000, 500, (0.3, 0.6, 0.9)),
    (float("inf"), 20_000, 500, (0.3, 0.6, 0.9)),
)
HYPERRULE_LR = 0.003
MIXUP_FROM_EXAMPLES = 20_000
# Images under 96x96 px: (resize, crop) 160, 128; else 448, 384.
SMALL_IMAGE_AREA = 96 * 96
HYPERRULE_RESOLUTIONS = {"small": (160, 128), "large": (448, 384)}


def get_config(arg=None):
  args = common.parse_arg_string(arg, **ARGS)
  if args.stage not in STAGES:
    raise ValueError(f"configs/bit.py: stage={args.stage!r}; valid: {', '.join(STAGES)}")
  unread = [f"{key}={args[key]}" for key in ("init", "epochs", "steps", "res")
            if args[key] != ARGS[key] and key not in STAGE_ARGS[args.stage]]
  if unread:
    raise ValueError(f"configs/bit.py: stage={args.stage} does not read "
                     f"{', '.join(unread)}; it reads {', '.join(STAGE_ARGS[args.stage])}")
  if not common.is_resnet(args.variant):
    raise ValueError(
        f"configs/bit.py: variant={args.variant!r} is not a BiT ResNet "
        f"('R50x1', 'R152x4'); ViTs and hybrids ('R50x1+B/16') train with "
        f"configs/pretrain.py and configs/finetune.py")
  common.refuse_epochs_and_steps(args, "configs/bit.py")
  data = args.data or ("imagenet21k" if args.stage == "upstream" else "cifar10")
  config = common.for_resnet(common.base_config())
  config.variant = args.variant
  config.data = common.dataset_config(data, data_dir=args.data_dir or None)
  # SGD with momentum, as both of BiT's stages; Adam's betas stay for
  # `--config.optim.name=adam`. BiT clips no gradients.
  config.optim.update(name="sgd", momentum=0.9, grad_clip_norm=0.0)
  if args.stage == "upstream":
    _upstream(config, data, args)
  else:
    _hyperrule(config, data, args)
  config.lock()
  return config


def _upstream(config, data, args):
  epochs, decay_epochs = UPSTREAM_SCHEDULE.get(data, DEFAULT_UPSTREAM_SCHEDULE)
  config.global_batch = 4096
  # A reference, so that `--config.global_batch=N` scales the rate with it.
  lr_per_example = ml_collections.FieldReference(UPSTREAM_LR_PER_256 / 256)
  config.lr.update(base=lr_per_example * config.get_ref("global_batch"),
                   warmup_steps=5_000, decay="step",
                   boundaries=tuple(e / epochs for e in decay_epochs), decay_factor=0.1)
  config.optim.weight_decay = UPSTREAM_WEIGHT_DECAY
  if args.steps:
    config.total_steps = args.steps
  else:
    config.total_epochs = args.epochs or epochs
  if data in MULTI_LABEL_UPSTREAM or config.data.multi_label:
    config.loss = "sigmoid_xent"
    config.model.head_bias_init = -10.0
  else:
    config.loss = "softmax_xent"
  config.pp = common.pp_strings(config, **common.UPSTREAM_PP)


def hyperrule(data):
  """BiT-HyperRule for the dataset preset ``data``: what it sets, by name."""
  examples = common.train_examples(data)
  steps, warmup, boundaries = next(
      (steps, warmup, boundaries)
      for below, steps, warmup, boundaries in HYPERRULE_SCHEDULES if examples < below)
  side = common.DATASETS[data].get("image_px")
  size = "small" if side is not None and side * side < SMALL_IMAGE_AREA else "large"
  precrop, crop = HYPERRULE_RESOLUTIONS[size]
  return dict(examples=examples, steps=steps, warmup_steps=warmup, boundaries=boundaries,
              precrop=precrop, crop=crop,
              mixup_alpha=0.1 if examples >= MIXUP_FROM_EXAMPLES else 0.0)


def _hyperrule(config, data, args):
  rule = hyperrule(data)
  config.init = args.init
  config.global_batch = 512
  config.total_steps = args.steps or rule["steps"]
  config.loss = "sigmoid_xent" if config.data.multi_label else "softmax_xent"
  config.optim.weight_decay = 0.0
  config.lr.update(base=HYPERRULE_LR, warmup_steps=rule["warmup_steps"], decay="step",
                   boundaries=rule["boundaries"], decay_factor=0.1)
  config.mixup.alpha = rule["mixup_alpha"]
  config.image_size = args.res or rule["crop"]
  config.eval_every = 1_000
  # The resize before the random crop keeps the rule's ratio to the crop
  # (448 / 384, 160 / 128), so `--config.image_size` moves both.
  precrop = config.get_ref("image_size") * rule["precrop"] // rule["crop"]
  config.pp = common.pp_strings(
      config, values=dict(precrop=precrop),
      train=common.finetune_train_pp(data, "resize({precrop})|random_crop({image_size})"),
      eval="decode|resize({image_size})|value_range(-1,1)|onehot({num_classes})")
