r"""The offline demo: the 224 -> 384 px story of the paper, in miniature.

Stage 1 pre-trains a small ViT (width 128, 6 blocks, patch 4) on
Fashion-MNIST shrunk to 16x16 px (a 4x4 patch grid); stage 2 fine-tunes it at
the native 28x28 px (a 7x7 grid, position embeddings resampled bilinearly)
with a fresh head. `make demo` runs both and prints both test accuracies on
all 10,000 test images:

  python -m vit_jax.main --config=configs/demo.py:stage=pretrain \
      --workdir=runs/demo/pretrain
  python -m vit_jax.main --config=configs/demo.py:stage=finetune,init=runs/demo/pretrain \
      --workdir=runs/demo/finetune

Data: `python scripts/prepare_data.py --dataset=fashion_mnist_local
--data_dir=data/tfds` (Debian's dataset-fashion-mnist files, no download).
"""
from configs import common

STAGES = {
    # stage: (image size, steps, base lr, warm-up steps)
    "pretrain": (16, 1200, 1e-3, 200),
    "finetune": (28, 500, 3e-4, 50),
}


def get_config(arg=None):
  args = common.parse_arg_string(arg, stage="pretrain", init="",
                                 data_dir="data/tfds")
  if args.stage not in STAGES:
    raise ValueError(f"configs/demo.py: stage={args.stage!r}; valid: "
                     f"{', '.join(STAGES)}")
  image_size, steps, base_lr, warmup = STAGES[args.stage]
  config = common.base_config()
  config.variant = "Ti/4"
  config.model.update(hidden_size=128, num_layers=6, mlp_dim=512, num_heads=4)
  config.data = common.dataset_config("fashion_mnist", data_dir=args.data_dir)
  config.data.cache = True
  config.data.shuffle_buffer = 60_000
  config.image_size = image_size
  config.init = args.init
  config.loss = "softmax_xent"
  config.global_batch = 256
  config.eval_batch = 1000
  config.total_steps = steps
  config.optim.weight_decay = 0.05
  config.lr = dict(base=base_lr, warmup_steps=warmup, decay="cosine", end=0.0)
  config.log_every = 50
  config.eval_every = steps
  config.checkpoint_every = 500
  config.pp = dict(
      train=f"decode|resize({image_size})|flip_lr|value_range(-1,1)|onehot(10)",
      eval=f"decode|resize({image_size})|value_range(-1,1)|onehot(10)")
  config.lock()
  return config
