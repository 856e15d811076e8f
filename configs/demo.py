r"""The offline demo: the paper's pre-train-then-transfer story, in miniature.

`make demo` pre-trains a small ViT (width 128, 6 blocks, 7x7 patches) on
five Fashion-MNIST classes shrunk to 21x21 px, a 3x3 patch grid, with
inception crops and flips as in the paper's pre-training; then the transfer
suite (`configs/transfer.py:suite=demo`) fine-tunes it at the native 28x28
px, a 4x4 grid (more patches, the position embeddings resampled, a fresh
zero head), on tasks it never saw: the other five classes and sklearn's
digits, three seeds each at the learning rate a dev split chose:

  python -m vit_jax.main --workdir=runs/demo/pretrain \
      --config=configs/demo.py:stage=pretrain,data=fashion_mnist_first5
  python -m vit_jax.transfer --workdir=runs/demo/transfer \
      --config=configs/transfer.py:suite=demo,init=runs/demo/pretrain

`stage=finetune` is that fine-tuning stage for one dataset (`data=`, all ten
Fashion-MNIST classes by default); the suite adds the paper's protocol to it.
What the demo reaches, and in how long, is on the front page (README.md).

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

Data: `make data`, or `python scripts/prepare_data.py --data_dir=data/tfds
--dataset=fashion_mnist_local,fashion_mnist_halves/first5,...` (Debian's
dataset-fashion-mnist files and scikit-learn's digits, no download).
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
# The transfer tasks a pre-training dataset leaves out, which stage=pretrain
# probes (10 shots, seeds 0-2) before its first step, every 600 steps and at
# the end: how the representation of unseen classes grows with training
# (docs/benchmarks.md has what they reached).
HELD_OUT = {"fashion_mnist_first5": ("fashion_mnist_last5", "digits")}
# The Transformer of every ViT and hybrid the demo trains.
TRANSFORMER = dict(hidden_size=128, num_layers=6, mlp_dim=512, num_heads=4)


def get_config(arg=None):
  args = common.parse_arg_string(arg, stage="pretrain", init="", data="fashion_mnist",
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
  config.data = common.dataset_config(args.data, data_dir=args.data_dir)
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
  if args.stage == "pretrain" and args.data in HELD_OUT:
    config.fewshot.update(every=steps // 2, at_start=True, datasets=HELD_OUT[args.data],
                          shots=(10,), seeds=(0, 1, 2))
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
