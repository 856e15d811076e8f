r"""Fine-tuning a pre-trained ViT at a higher resolution (the paper's 384 px).

  python -m vit_jax.main --workdir=runs/b16_cifar10 \
      --config=configs/finetune.py:variant=B/16,data=cifar10,res=384,init=runs/b16_i21k

SGD with momentum 0.9, batch 512, lr 0.01 (the paper sweeps 0.003-0.06),
cosine decay after 500 warm-up steps, clip 1, no weight decay, no pre_logits,
a zero-initialised head for the new classes, softmax cross-entropy, 10k
steps (20k for ImageNet; `steps=N` sets another). The position embeddings
of `init` are resampled to the new grid (224 -> 384 px: 14x14 -> 24x24
patches at /16).

`init` is a workdir of a pre-training run (its latest checkpoint), one orbax
checkpoint step directory, or a published-layout .npz file.
"""
from configs import common

# The paper's fine-tuning steps where they are not 10k (its Table 4).
PAPER_STEPS = {"imagenet2012": 20_000}


def get_config(arg=None):
  args = common.parse_arg_string(
      arg, variant="B/16", data="cifar10", data_dir="", res=384, init="",
      steps=0, lr=0.01)
  common.refuse_resnet(args.variant, "configs/finetune.py")
  config = common.base_config()
  config.variant = args.variant
  config.data = common.dataset_config(args.data, data_dir=args.data_dir or None)
  config.init = args.init
  config.image_size = args.res
  config.loss = "softmax_xent"
  config.global_batch = 512
  config.total_steps = args.steps or PAPER_STEPS.get(args.data, 10_000)
  # Updated, not replaced, so that `--config.optim.name=adam` finds b1 and b2.
  config.optim.update(name="sgd", momentum=0.9, weight_decay=0.0, grad_clip_norm=1.0)
  config.lr.update(base=args.lr, warmup_steps=500, decay="cosine", end=0.0)
  config.eval_every = 1_000
  config.pp = common.pp_strings(
      config,
      train="decode|inception_crop({image_size})|flip_lr|value_range(-1,1)"
            "|onehot({num_classes})",
      eval="decode|resize({image_size})|value_range(-1,1)|onehot({num_classes})")
  config.lock()
  return config
