r"""The model and step that `scripts/benchmark.py` times, timm's way.

  python scripts/benchmark.py --config=configs/benchmark.py:variant=S/16 --batch=32

A ViT as timm builds `vit_{tiny,small,base,large,huge}_patch{P}_{res}`:
class token, no pre_logits, no dropout, 1000 classes, softmax
cross-entropy, AdamW (weight decay 0.05) with global-norm clipping, so that
`--compare-timm` times the same network and update. `dtype=bfloat16` computes
in bf16 with float32 parameters (timm's counterpart: autocast AMP).
The data block is ImageNet-1k's, so the same config can also train. A BiT
ResNet (`variant=R50x1`) keeps the ResNet's model fields only; a hybrid
(`variant=R50x1+B/16`) is a ViT with a ResNet stem, as timm's
`vit_base_r50_s16_224`.

Arguments: variant, res, dtype.
"""
from configs import common


def get_config(arg=None):
  args = common.parse_arg_string(arg, variant="Ti/16", res=224, dtype="float32")
  config = common.base_config()
  config.variant = args.variant
  if common.is_resnet(args.variant):
    common.for_resnet(config)
  config.image_size = args.res
  config.data = common.dataset_config("imagenet2012")
  config.model.dtype = args.dtype
  config.loss = "softmax_xent"
  config.global_batch = 32
  config.eval_batch = 32
  config.total_steps = 100_000
  config.optim.weight_decay = 0.05
  config.lr = dict(base=1e-3, warmup_steps=0, decay="cosine", end=0.0)
  config.pp = common.pp_strings(
      config,
      train="decode_jpeg_and_inception_crop({image_size})|flip_lr|value_range(-1,1)"
            "|onehot({num_classes})",
      eval="decode|resize_small({eval_resize})|central_crop({image_size})"
           "|value_range(-1,1)|onehot({num_classes})")
  config.lock()
  return config
