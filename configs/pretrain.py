r"""Pre-training on ImageNet-21k-style data, with the ViT paper's defaults.

  python -m vit_jax.main --workdir=runs/b16_i21k \
      --config=configs/pretrain.py:variant=B/16,data=imagenet21k

Adam (b1 0.9, b2 0.999), batch 4096, lr 1e-3 with 10k warm-up steps and
linear decay, decoupled weight decay 0.1, global-norm clip 1, dropout 0.1,
sigmoid cross-entropy with a zero head whose bias starts at -10, a pre_logits
layer of the hidden size, 224 px with inception crop and flip. 90 epochs of
ImageNet-21k, as in the paper (its Table 6 ran 300 epochs on JFT).

Arguments: variant, data (a preset of configs/common.py), data_dir, epochs;
steps=N counts the run in steps instead of epochs.
The dataset must be prepared beforehand; nothing is downloaded.
"""
from configs import common
from vit_jax import models


def get_config(arg=None):
  args = common.parse_arg_string(
      arg, variant="B/16", data="imagenet21k", data_dir="", epochs=90, steps=0)
  config = common.base_config()
  config.variant = args.variant
  config.data = common.dataset_config(args.data, data_dir=args.data_dir or None)
  hidden_size = models.get_model(args.variant, num_classes=1).hidden_size
  config.model.representation_size = hidden_size
  config.model.dropout_rate = 0.1
  config.model.head_bias_init = -10.0
  if args.steps:
    config.total_steps = args.steps
  else:
    config.total_epochs = args.epochs
  n = config.data.num_classes
  config.pp = dict(
      train=f"decode|inception_crop(224)|flip_lr|value_range(-1,1)|onehot({n})",
      eval=f"decode|resize_small(256)|central_crop(224)|value_range(-1,1)"
           f"|onehot({n})")
  config.lock()
  return config
