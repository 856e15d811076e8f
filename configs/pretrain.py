r"""Pre-training on ImageNet-21k-style data, with the ViT paper's defaults.

  python -m vit_jax.main --workdir=runs/b16_i21k \
      --config=configs/pretrain.py:variant=B/16,data=imagenet21k

Adam (b1 0.9, b2 0.999), batch 4096, lr 1e-3 with 10k warm-up steps and
linear decay, decoupled weight decay 0.1, global-norm clip 1, sigmoid
cross-entropy with a zero head whose bias starts at -10, a pre_logits layer
of the hidden size, 224 px with inception crop and flip. As in the paper,
90 epochs and dropout 0.1 on ImageNet-21k; 7 epochs and no dropout on JFT,
which is 20x larger (its best ViT-L/16 and H/14 ran 14: epochs=14).

Arguments: variant, data (a preset of configs/common.py), data_dir, epochs
(0: the paper's for the data, 90 where it has none); steps=N counts the run
in steps instead of epochs.
The dataset must be prepared beforehand; nothing is downloaded.
"""
from configs import common
from vit_jax import models

# The paper's pre-training length and dropout where they differ by dataset.
PAPER_EPOCHS = {"imagenet21k": 90, "jft": 7}
PAPER_DROPOUT = {"imagenet21k": 0.1, "jft": 0.0}


def get_config(arg=None):
  args = common.parse_arg_string(
      arg, variant="B/16", data="imagenet21k", data_dir="", epochs=0, steps=0)
  common.refuse_resnet(args.variant, "configs/pretrain.py")
  config = common.base_config()
  config.variant = args.variant
  config.data = common.dataset_config(args.data, data_dir=args.data_dir or None)
  hidden_size = models.get_model(args.variant, num_classes=1).hidden_size
  config.model.representation_size = hidden_size
  config.model.dropout_rate = PAPER_DROPOUT.get(args.data, 0.1)
  config.model.head_bias_init = -10.0
  if args.steps:
    config.total_steps = args.steps
  else:
    config.total_epochs = args.epochs or PAPER_EPOCHS.get(args.data, 90)
  config.pp = common.pp_strings(config, **common.UPSTREAM_PP)
  config.lock()
  return config
