r"""The offline demo: the paper's 224 -> 384 px story, in miniature.

Stage 1 pre-trains a small ViT (width 128, 6 blocks, 7x7 patches) on
Fashion-MNIST shrunk to 21x21 px, a 3x3 patch grid, with inception crops and
flips as in the paper's pre-training. Stage 2 fine-tunes it at the native
28x28 px, a 4x4 grid: more patches, the position embeddings resampled
bilinearly, a fresh zero head, no augmentation and no weight decay. Both
evaluate on all 10,000 test images. `make demo` runs both, then prints one
table row per run:

  python -m vit_jax.main --config=configs/demo.py:stage=pretrain \
      --workdir=runs/demo/pretrain
  python -m vit_jax.main --config=configs/demo.py:stage=finetune,init=runs/demo/pretrain \
      --workdir=runs/demo/finetune

What both stages reach, and in how long, is in docs/benchmarks.md: the
demo is re-run there whenever a change may move its figures.

`variant=` trains another model through the same pipeline and optimizer, a
miniature of the paper's comparison with BiT and the hybrids:

  python -m vit_jax.main --config=configs/demo.py:stage=pretrain,variant=R26x1 \
      --workdir=runs/demo_r26/pretrain
  python -m vit_jax.main --config=configs/demo.py:stage=pretrain,variant=R26x1+Ti/8 \
      --workdir=runs/demo_r26_ti8/pretrain

Every ViT and hybrid has the demo's Transformer (width 128, 6 blocks); the
variant picks the patch embedding or ResNet stem, and the image sizes follow
the patch so that the grid stays 3x3 then 4x4 (R26x1+Ti/8, a stem of two
stages: 24 then 32 px; R26x1+Ti/16: 48 then 64 px, Fashion-MNIST upscaled).
A BiT ResNet takes the default's 21 and 28 px images and only the ResNet's
model fields.

Data: `python scripts/prepare_data.py --dataset=fashion_mnist_local
--data_dir=data/tfds` (Debian's dataset-fashion-mnist files, no download).
"""
from configs import common

# stage: (patch grid side, steps, base lr, warm-up steps, weight decay, train
# ops); the ops follow config.image_size (`common.pp_strings`).
STAGES = {
    "pretrain": (3, 1200, 2e-3, 200, 0.05,
                 "decode|inception_crop({image_size},area_min=50)|flip_lr"),
    "finetune": (4, 1800, 2e-3, 50, 0.0, "decode|resize({image_size})"),
}
DEFAULT_VARIANT = "Ti/7"
# The Transformer of every ViT and hybrid the demo trains.
TRANSFORMER = dict(hidden_size=128, num_layers=6, mlp_dim=512, num_heads=4)


def get_config(arg=None):
  args = common.parse_arg_string(arg, stage="pretrain", init="",
                                 data_dir="data/tfds", variant=DEFAULT_VARIANT)
  if args.stage not in STAGES:
    raise ValueError(f"configs/demo.py: stage={args.stage!r}; valid: "
                     f"{', '.join(STAGES)}")
  grid, steps, base_lr, warmup, weight_decay, augment = STAGES[args.stage]
  config = common.base_config()
  config.variant = args.variant
  if common.is_resnet(args.variant):
    common.for_resnet(config)
    image_size = grid * _patch_size(DEFAULT_VARIANT)
  else:
    config.model.update(TRANSFORMER)
    image_size = grid * _patch_size(args.variant)
  config.data = common.dataset_config("fashion_mnist", data_dir=args.data_dir)
  config.data.cache = True
  config.data.shuffle_buffer = 60_000
  config.image_size = image_size
  config.init = args.init
  config.loss = "softmax_xent"
  config.global_batch = 256
  config.eval_batch = 1000
  config.total_steps = steps
  config.optim.weight_decay = weight_decay
  config.lr.update(base=base_lr, warmup_steps=warmup, decay="cosine", end=0.0)
  config.log_every = 50
  config.eval_every = steps
  config.checkpoint_every = 500
  config.pp = common.pp_strings(
      config, train=augment + "|value_range(-1,1)|onehot({num_classes})",
      eval="decode|resize({image_size})|value_range(-1,1)|onehot({num_classes})")
  config.lock()
  return config


def _patch_size(variant):
  """The pixels a patch spans, from a ViT's or hybrid's name ('Ti/7', 'R26x1+Ti/16')."""
  _, slash, patch = variant.rpartition("/")
  if not slash or not patch.isdigit() or int(patch) < 1:
    raise ValueError(f"configs/demo.py: variant={variant!r}; valid: a ViT ('Ti/7'), "
                     f"a hybrid ('R26x1+Ti/16') or a BiT ResNet ('R26x1')")
  return int(patch)
