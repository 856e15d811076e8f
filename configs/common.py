"""Pieces every config shares: arg-string parsing, overrides, dataset presets.

A config is chosen on the command line as ``configs/X.py:key=value,...``; the
part after the colon reaches ``get_config(arg)`` as one string. Parsing it
here, against the defaults each config declares, makes a typo an error that
lists the valid keys instead of a silently ignored setting.
"""
import ast
import string

import ml_collections
from ml_collections.config_dict import placeholder

from configs import transfer_datasets
from vit_jax.data import config_fields, splits
from vit_jax.models import bit

# What the input pipeline needs to know about each dataset: its tfds name,
# class count, the splits used for training and evaluation, and whether an
# image may carry several labels (precision@1 is reported instead of top-1).
# `published_sizes` are the whole splits' sizes as their authors give them,
# for cost estimates made before the data is prepared (a prepared dataset's
# own count always wins). `image_px` is the side of the images where they all
# share one (CIFAR's 32x32); datasets of varied, larger images have none. Both
# also size BiT-HyperRule fine-tuning (configs/bit.py).
# Split names follow tfds slicing; held-out slices of `train` stand in for a
# validation set where the dataset has none, as in big_vision.
# `transfer_splits` are the transfer suite's: the final runs train on `train`
# and report `test`; the learning rate is chosen on `dev` after training on
# `dev_train` (the ViT paper holds out 10% of train for Pets and Flowers, 2%
# for CIFAR, 1% for ImageNet). `fewshot_splits`, where a preset's own splits
# are not big_vision's few-shot ones: the splits few-shot probes draw their
# shots from (`train`) and score (`test`). VTAB-1k, ImageNet ReaL and the
# other few-shot datasets: transfer_datasets.py.
DATASETS = {
    # tfds has no ImageNet-21k builder: the release's class folders (one
    # per WordNet id, sorted as the published checkpoints' classes are) are
    # written to TFRecord shards once.
    "imagenet21k": dict(
        source="tfrecord", pattern="{split}-*.tfrecord", tfds_name="imagenet21k",
        num_classes=21843, multi_label=False,
        train_split="train[:98%]", eval_splits={"val": "train[98%:]"},
        published_sizes={"train": 14_197_122},
        prepare="python scripts/make_tfrecords.py --from_folder=DIR_OF_CLASS_FOLDERS "
                "--out_dir=DATA_DIR --split=train --num_shards=1024"),
    "imagenet2012": dict(
        tfds_name="imagenet2012", num_classes=1000, multi_label=False,
        train_split="train[:99%]",
        eval_splits={"minival": "train[99%:]", "val": "validation"},
        published_sizes={"train": 1_281_167, "validation": 50_000},
        transfer_splits=dict(train="train", dev_train="train[:99%]",
                             dev="train[99%:]", test="validation"),
        fewshot_splits=dict(train="train[:65000]", test="validation"),
        prepare="tfds build imagenet2012 --manual_dir=DIR_WITH_THE_TARS"),
    "cifar10": dict(
        tfds_name="cifar10", num_classes=10, multi_label=False, image_px=32,
        train_split="train[:98%]",
        eval_splits={"minival": "train[98%:]", "test": "test"},
        published_sizes={"train": 50_000, "test": 10_000},
        transfer_splits=dict(train="train", dev_train="train[:98%]",
                             dev="train[98%:]", test="test"),
        prepare="tfds build cifar10 (on a machine with network access), "
                "then copy the data_dir"),
    "cifar100": dict(
        tfds_name="cifar100", num_classes=100, multi_label=False, image_px=32,
        train_split="train[:98%]",
        eval_splits={"minival": "train[98%:]", "test": "test"},
        published_sizes={"train": 50_000, "test": 10_000},
        transfer_splits=dict(train="train", dev_train="train[:98%]",
                             dev="train[98%:]", test="test"),
        fewshot_splits=dict(train="train", test="test"),
        prepare="tfds build cifar100 (on a machine with network access), "
                "then copy the data_dir"),
    "oxford_iiit_pet": dict(
        tfds_name="oxford_iiit_pet", num_classes=37, multi_label=False,
        train_split="train[:90%]",
        eval_splits={"minival": "train[90%:]", "test": "test"},
        published_sizes={"train": 3_680, "test": 3_669},
        transfer_splits=dict(train="train", dev_train="train[:90%]",
                             dev="train[90%:]", test="test"),
        fewshot_splits=dict(train="train", test="test"),
        prepare="tfds build oxford_iiit_pet (on a machine with network "
                "access), then copy the data_dir"),
    "oxford_flowers102": dict(
        tfds_name="oxford_flowers102", num_classes=102, multi_label=False,
        train_split="train+validation", eval_splits={"test": "test"},
        published_sizes={"train": 1_020, "validation": 1_020, "test": 6_149},
        transfer_splits=dict(train="train+validation",
                             dev_train="train[:90%]+validation[:90%]",
                             dev="train[90%:]+validation[90%:]", test="test"),
        prepare="tfds build oxford_flowers102 (on a machine with network "
                "access), then copy the data_dir"),
    # JFT-style: TFRecord shards written (or indexed) by
    # scripts/make_tfrecords.py, several labels per image.
    "jft": dict(
        source="tfrecord", pattern="{split}-*.tfrecord", tfds_name="jft",
        num_classes=18291, multi_label=True, train_split="train[:99%]",
        eval_splits={"minival": "train[99%:]", "val": "val"},
        published_sizes={"train": 303_000_000},  # JFT-300M, as the ViT paper gives it
        prepare="python scripts/make_tfrecords.py --index_only "
                "--out_dir=DATA_DIR (shards named SPLIT-*.tfrecord)"),
    "fashion_mnist": dict(
        tfds_name="fashion_mnist_local", num_classes=10, multi_label=False, image_px=28,
        train_split="train", eval_splits={"test": "test"},
        published_sizes={"train": 60_000, "test": 10_000},
        prepare="python scripts/prepare_data.py --dataset=fashion_mnist_local "
                "--data_dir=DATA_DIR (needs `apt-get install "
                "dataset-fashion-mnist`)"),
    # The demo's transfer tasks: Fashion-MNIST's halves (classes 0-4 and
    # 5-9, each labelled 0-4: pre-train on one, transfer to the other) and
    # scikit-learn's 8x8 digits. `transfer_splits` are the transfer suite's:
    # the learning rate is chosen on dev after training on dev_train.
    **{f"fashion_mnist_{half}": dict(
        tfds_name=f"fashion_mnist_halves/{half}", num_classes=5, multi_label=False,
        image_px=28, train_split="train", eval_splits={"test": "test"},
        published_sizes={"train": 30_000, "test": 5_000},
        transfer_splits=dict(train="train", dev_train="train[:90%]",
                             dev="train[90%:]", test="test"),
        # Shots come from the first 17% of the training images (5,100,
        # about 1,000 a class, 40 times what 25 shots need): extracting the
        # features of all 30,000 took most of the demo's probe time.
        fewshot_splits=dict(train="train[:17%]", test="test"),
        prepare=f"python scripts/prepare_data.py --dataset=fashion_mnist_halves/{half} "
                f"--data_dir=DATA_DIR (needs `apt-get install dataset-fashion-mnist`)")
       for half in ("first5", "last5")},
    "digits": dict(
        tfds_name="sklearn_digits", num_classes=10, multi_label=False, image_px=8,
        train_split="train", eval_splits={"test": "test"},
        published_sizes={"train": 1_297, "test": 500},
        transfer_splits=dict(train="train", dev_train="train[:90%]",
                             dev="train[90%:]", test="test"),
        prepare="python scripts/prepare_data.py --dataset=sklearn_digits "
                "--data_dir=DATA_DIR (needs scikit-learn, no download)"),
}
DATASETS.update(transfer_datasets.DATASETS)


def parse_arg_string(arg, **defaults):
  """Parses ``'k1=v1,k2=v2'`` against ``defaults`` into a locked ConfigDict.

  Values keep the type of their default (``res=384`` is an int when the
  default is an int); a key without a default is an error naming it and the
  valid keys, and so is a key given twice. An empty or missing string gives
  the defaults.
  """
  parsed, given = dict(defaults), {}
  valid = f"valid keys: {', '.join(sorted(defaults))}"
  for key, value in _key_values(arg, what="config argument", hint=valid):
    if key not in defaults:
      raise ValueError(f"unknown config argument {key!r}; {valid}")
    if key in given:
      raise ValueError(f"config argument {key!r} is given twice ({key}={given[key]} "
                       f"and {key}={value}); give it once")
    given[key] = value
    parsed[key] = _like(defaults[key], value, key)
  return ml_collections.ConfigDict(parsed)


def _key_values(text, *, what, hint):
  """The stripped (key, value) pairs of ``'k1=v1,k2=v2'``; none if empty.

  An item without ``=`` is an error naming it as ``what``, then ``hint``.
  """
  for item in filter(None, (text or "").split(",")):
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"{what} {item!r} is not key=value; {hint}")
    yield key.strip(), value.strip()


def _like(default, value, key):
  """Converts the string ``value`` to the type of ``default``."""
  if isinstance(default, bool):
    if value.lower() not in ("true", "false", "1", "0"):
      raise ValueError(f"config argument {key}={value!r}: expected a bool")
    return value.lower() in ("true", "1")
  if isinstance(default, (int, float)):
    try:
      return type(default)(value)
    except ValueError:
      raise ValueError(f"config argument {key}={value!r}: expected "
                       f"{type(default).__name__}") from None
  return value


def with_overrides(config, overrides):
  """A copy of ``config`` with ``'model.remat=True,image_size=384'`` applied.

  Each value takes the type of the one it replaces, as in
  `parse_arg_string`; ``None`` unsets a field, and a field that is None
  takes a Python literal, else the string. A key the config does not have
  is an error naming the keys at that level. For timing a config against a
  variant of itself (``scripts/benchmark.py --against``).
  """
  config = config.copy_and_resolve_references()
  for path, value in _key_values(overrides, what="override",
                                 hint="e.g. model.layer_norm_implementation=flax"):
    parent, node = None, config
    for part in path.split("."):
      if not isinstance(node, ml_collections.ConfigDict):
        raise ValueError(f"override {path!r}: no {part!r} there; valid keys: "
                         f"none, it is not a block")
      if part not in node:
        raise ValueError(f"override {path!r}: no {part!r} there; valid keys: "
                         f"{', '.join(sorted(node.keys()))}")
      parent, node = node, node[part]
    if isinstance(node, ml_collections.ConfigDict):
      raise ValueError(f"override {path!r} names a block; set one of its keys: "
                       f"{', '.join(sorted(node.keys()))}")
    if node is None or value == "None":  # unset fields take any type, or None
      parent[part] = _literal(value)
    else:
      parent[part] = _like(node, value, path)
  return config


def _literal(value):
  """A number, bool or None written as Python would, else the string itself."""
  try:
    return ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return value


def dataset_config(name, *, data_dir=None):
  """The `config.data` block of the dataset preset ``name``."""
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; valid: "
                     f"{', '.join(sorted(DATASETS))}")
  preset = dict(DATASETS[name])
  return ml_collections.ConfigDict(dict(
      # "tfds" | "tfrecord" | "folder": see vit_jax/data/sources.py.
      source=preset.get("source", config_fields.DEFAULT_SOURCE),
      name=preset["tfds_name"],
      data_dir=placeholder(str) if data_dir is None else data_dir,
      # tfrecord: a glob of shards in data_dir; folder: the directory of
      # class subfolders; `{split}` is replaced by the split's name.
      pattern=preset.get("pattern", ""),
      # False: skip and count corrupt images; True: stop, naming the file.
      strict=False,
      num_classes=preset["num_classes"],
      multi_label=preset["multi_label"],
      # The tfds feature that holds the class, or a label derived from
      # others (vit_jax/data/labels.py: VTAB's structured tasks).
      label=preset.get("label", "label"),
      # Images of 0s and 1s (dsprites'), read as 0s and 255s.
      binary_images=preset.get("binary_images", False),
      train_split=preset["train_split"],
      eval_splits=preset["eval_splits"],
      prepare=preset["prepare"],
      published_sizes=preset["published_sizes"],
      shuffle_buffer=50_000,
      # Keep the encoded examples in memory after the first epoch, for data
      # that fits there; the files are read once.
      cache=False,
  ))


def train_examples(name):
  """Examples in the training split of the dataset preset ``name``, as published."""
  preset = DATASETS[name]
  return splits.examples_in_split(preset["train_split"], preset["published_sizes"])


# Pre-training's preprocessing, the ViT paper's and BiT's upstream alike:
# inception crops and flips to train, the central crop of a resize to evaluate.
UPSTREAM_PP = dict(
    train="decode|inception_crop({image_size})|flip_lr|value_range(-1,1)"
          "|onehot({num_classes})",
    eval="decode|resize_small({eval_resize})|central_crop({image_size})"
         "|value_range(-1,1)|onehot({num_classes})")


def finetune_train_pp(data, crop):
  """Fine-tuning's training preprocessing of dataset preset ``data``.

  ``crop`` is the random crop's ops (a template, as `pp_strings`'); it and
  the flip that follows are left out where the preset's ``train_augment``
  says they would change the label, as BiT leaves them out (VTAB's
  dSprites position and orientation, SmallNORB azimuth, the counts and
  distances: configs/transfer_datasets.py). Without the crop, the image is
  resized to the model's size.
  """
  augment = DATASETS[data].get("train_augment", ("crop", "flip"))
  ops = ["decode", crop if "crop" in augment else "resize({image_size})"]
  if "flip" in augment:
    ops.append("flip_lr")
  return "|".join(ops + ["value_range(-1,1)", "onehot({num_classes})"])


def pp_strings(config, *, values=None, **templates):
  """``config.pp``'s strings, kept in step with the config they run under.

  In each template, ``{image_size}``, ``{num_classes}`` (of ``config.data``)
  and ``{eval_resize}`` (``image_size * 8 // 7``: the shorter side an eval
  image is resized to before its central crop, 256 for 224) are filled
  whenever the string is read, so ``--config.image_size=384`` or
  ``--config.data.num_classes=N`` on the command line reaches the
  preprocessing too. ``values`` adds names of a config's own (BiT's
  ``{precrop}``), as FieldReferences to follow the fields they come from.
  Setting a string outright replaces its template.
  """
  image_size = config.get_ref("image_size")
  values = dict(image_size=image_size, num_classes=config.data.get_ref("num_classes"),
                eval_resize=image_size * 8 // 7, **(values or {}))
  return {key: _filled(template, values) for key, template in templates.items()}


def _filled(template, values):
  """A string FieldReference: ``template.format(**values)`` of the values when read.

  Built from ml_collections' operators only, so the config still pickles.
  """
  text = ml_collections.FieldReference("")
  for literal, name, _, _ in string.Formatter().parse(template):
    text = text + literal
    if name is not None:
      if name not in values:
        raise ValueError(f"{{{name}}} in the preprocessing template {template!r}; "
                         f"valid: {', '.join('{%s}' % v for v in values)}")
      text = text + ml_collections.FieldReference("%s") % values[name]
  return text


def base_config():
  """Fields every job has, with the paper's pre-training defaults.

  Durations are counted in steps; `total_epochs` may replace `total_steps`
  (see `vit_jax.train.config_checks.resolve_total_steps`).
  """
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.variant = "B/16"
  c.image_size = 224
  c.model = dict(
      # The Transformer's shape; unset: the variant's (B/16: 768, 12 blocks,
      # 3072, 12 heads). Set, they make a model of another shape under the
      # variant's name and patch size, as the demo's Ti/7 of width 128.
      hidden_size=placeholder(int), num_layers=placeholder(int), mlp_dim=placeholder(int),
      num_heads=placeholder(int),
      # "token", "gap" or "map" (vit_jax.models.vit.CLASSIFIERS); unset: the
      # variant's ("token"; "map" for '22B/14').
      classifier=placeholder(str), representation_size=placeholder(int), dropout_rate=0.0,
      attention_dropout_rate=0.0,
      # Stochastic depth (timm's drop_path_rate, AugReg's 0.1): the last
      # block's rate of dropping a residual branch per example, rising
      # linearly from 0 at the first block.
      drop_path_rate=0.0,
      # The MLPs' GELU: "tanh" (the original ViT's and big_vision's), "exact"
      # (erf: timm's and Hugging Face's) or "quick" (CLIP's x * sigmoid(1.702x)),
      # the latter two for those checkpoints' own function.
      gelu="tanh",
      # Every LayerNorm's epsilon; CLIP's checkpoints were trained with 1e-5.
      layer_norm_epsilon=1e-6, dtype="float32", param_dtype="float32",
      remat=False, head_bias_init=0.0,
      # With remat: what each block keeps for the backward pass, one of
      # vit_jax.models.REMAT_POLICIES (nothing_saveable: the least memory).
      remat_policy="nothing_saveable",
      # The blocks as one nn.scan over stacked parameters: compile time that
      # does not grow with depth; files keep the published per-block layout.
      scan=False,
      # ViT-22B's block options (docs/models.md); unset: the variant's choice
      # (all on for '22B/14', off otherwise).
      parallel_block=placeholder(bool), qk_norm=placeholder(bool),
      use_bias=placeholder(bool),
      # timm's init_values and reg_tokens, as DeiT-III and DINOv2 have them
      # (docs/models.md): each residual branch scaled by a learned vector
      # starting at layer_scale_init (None: no layer scale), and
      # num_registers learned tokens beside the patches.
      layer_scale_init=placeholder(float), num_registers=0,
      # timm's pre_norm: a LayerNorm before the first block, as CLIP's ln_pre;
      # fc_norm, with classifier "gap": the final LayerNorm after pooling;
      # DeiT's distillation token and its head, with classifier "token".
      pre_norm=False, fc_norm=False, distillation_token=False,
      # vit_jax/models/attention.py: "auto" (head_major on CPU, cuDNN's fused
      # kernel on GPU for bfloat16/float16 compute, XLA's
      # dot_product_attention otherwise), or one of them by name.
      attention_implementation="auto",
      # How a training step gives cuDNN's attention the even token count it
      # needs (vit_jax/models/attention.py): "per_attention" (a pad and a
      # slice around every attention call) or "once" (before the first block).
      token_padding="per_attention",
      # vit_jax/models/layer_norm.py: "auto" (matvec statistics on CPU, flax's
      # LayerNorm on accelerators), or either by name.
      layer_norm_implementation="auto",
      # vit_jax/models/dense.py: "auto" (a 2-D matmul with a hand-written backward
      # pass on CPU, flax's dot_general on accelerators), or either by name.
      dense_implementation="auto",
      # vit_jax/models/patch_embedding.py: "conv" (a stride-p convolution)
      # or "matmul" (patches cut out, one matmul); the same `embedding`
      # parameters either way.
      embedding_implementation="conv",
      # vit_jax/models/conv.py, for BiT ResNets and the hybrids' stems:
      # "auto" (1x1 weight gradients as matmuls and a slice-wise max pool on
      # CPU, XLA's on accelerators), or either by name.
      conv_implementation="auto")
  # What to fine-tune from: a workdir, checkpoint step, .npz, or timm or
  # Hugging Face ViT (vit_jax/models/pretrained.py); empty: from scratch.
  c.init = ""
  # How fine-tuning resamples the position embeddings to a new patch grid
  # (vit_jax/models/posemb.py): "zoom_linear", vision_transformer's corner-
  # aligned linear zoom; or "bilinear" / "bicubic" (jax.image.resize).
  c.posemb_resample = "zoom_linear"
  c.loss = "sigmoid_xent"
  c.label_smoothing = 0.0
  c.global_batch = 4096
  c.eval_batch = 1024
  c.accum_steps = 1
  # Fields that are unset (None) by default are typed placeholders, so that
  # `--config.total_steps=1000` on the command line can still set them.
  c.total_steps = placeholder(int)
  c.total_epochs = placeholder(float)
  # name: "adam", "sgd" (`momentum`) or "adafactor" (Scaling-ViT's, for ViT-g/G:
  # b1 its momentum, b2 its second moment's decay cap, the `adafactor_*`
  # fields). mu_dtype: the first moment's dtype, "bfloat16" to save memory;
  # None: float32. head_weight_decay: the head's own (Scaling-ViT:
  # 3.0 on the head, weight_decay 0.03 on the body); None: weight_decay.
  # Weight decay is decoupled and x lr (vit_jax/train/optim.py).
  c.optim = dict(name="adam", b1=0.9, b2=0.999, momentum=0.9,
                 mu_dtype=placeholder(str), weight_decay=0.1,
                 weight_decay_params=r".*/kernel$",
                 head_weight_decay=placeholder(float), grad_clip_norm=1.0,
                 # Fine-tuning's layer-wise learning-rate decay (BEiT, timm's
                 # --layer-decay, e.g. 0.65): block i of L at layer_decay**(L-i).
                 layer_decay=placeholder(float),
                 adafactor_decay_rate=0.8, adafactor_min_dim_to_factor=32)
  # decay: "linear" or "cosine" to `end`, "step": x `decay_factor` at each
  # of `boundaries`, fractions of the run (BiT's), or "rsqrt": base /
  # sqrt(1 + t / `timescale`), cooled down linearly to `end` over the last
  # `cooldown_steps` (Scaling ViT's; vit_jax/train/optim.py).
  c.lr = dict(base=1e-3, warmup_steps=10_000, decay="linear", end=0.0,
              boundaries=(0.3, 0.6, 0.9), decay_factor=0.1, timescale=10_000,
              cooldown_steps=0)
  c.ema_decay = 0.0  # 0 turns the Polyak average of the parameters off
  # Few-shot linear probes of the frozen pre_logits (big_vision's protocol,
  # vit_jax/evaluators/fewshot.py) every `every` steps and at the end (0: off),
  # and before the first step with `at_start`. `datasets`: preset names of
  # DATASETS, each probed on its `fewshot_splits` (else shots from its
  # train_split, scored on its 'test' eval split) at `shots`, or at counts of
  # its own as 'name:10' ('name:5/10': several), logged as split "fewshot/<name>"
  # ("10shot": ...); empty: the run's own data, shots from `train_split`,
  # scored on `test_split` ('': its training split and its 'test' eval
  # split), as split "fewshot".
  c.fewshot = dict(every=0, at_start=False, datasets=(), train_split="",
                   test_split="", shots=(1, 5, 10, 25), seeds=(0, 1, 2),
                   regulariser=2.0 ** 10)
  c.mixup = dict(alpha=0.0)  # Beta(alpha, alpha) batch mixup; 0 turns it off
  # Layouts (see vit_jax/train/sharding.py): data parallel data=-1,fsdp=1; FSDP
  # data=1,fsdp=-1; both e.g. data=2,fsdp=-1; tensor (Megatron) parallel
  # model=N beside either, N devices of one process splitting each layer.
  # `rules`: (regex over the parameter name, 'fsdp' | 'replicate' |
  # 'model:D'), first match wins; 'fsdp' splits parameters of at least
  # `fsdp_min_size` elements; 'model:D' splits dimension D (from the end, so
  # a scan's stacked layer axis does not shift it) over `model`, the largest
  # other dimension as 'fsdp' does. The defaults are Megatron's split of every
  # attention (encoder blocks, a MAP head) on heads and every MLP on its
  # hidden units; with model=1 they lay parameters out as 'fsdp' alone.
  c.mesh = dict(data=-1, fsdp=1, model=1, fsdp_min_size=2 ** 18, rules=(
      (r".*/MultiHeadDotProductAttention(_\d+)?/(query|key|value)/(kernel|bias)",
       "model:-2"),  # kernel (hidden, heads, head_dim), bias (heads, head_dim)
      (r".*/MultiHeadDotProductAttention(_\d+)?/out/kernel",
       "model:-3"),  # (heads, head_dim, hidden)
      (r".*/MlpBlock(_\d+)?/Dense_0/(kernel|bias)", "model:-1"),  # (hidden, mlp)
      (r".*/MlpBlock(_\d+)?/Dense_1/kernel", "model:-2"),  # (mlp, hidden)
      (".*", "fsdp")))
  c.log_every = 50
  c.eval_every = 5_000
  c.checkpoint_every = 1_000
  c.keep_checkpoints = 3
  # A step whose loss or gradient norm is NaN/Inf: "stop" (name the step,
  # keep the last good checkpoint) or "skip" (not applied, counted in the
  # `skipped_steps` metric).
  c.on_nonfinite = "stop"
  # A checkpoint that cannot be written (disk full, read-only): "stop" the run
  # cleanly, or "continue" training with the previous checkpoint kept.
  c.on_save_error = "stop"
  c.prefetch = 2
  return c


# The fields a BiT ResNet takes from `config.model` (vit_jax/models/bit.py);
# it refuses the ViT's others (classifier, dropout, the kernels' choices).
RESNET_MODEL_FIELDS = ("dtype", "param_dtype", "remat", "head_bias_init",
                       "conv_implementation")


def refuse_epochs_and_steps(args, config_file):
  """The refusal of both ``epochs=`` and ``steps=``: one would be ignored."""
  if args.epochs and args.steps:
    raise ValueError(f"{config_file}: epochs={args.epochs} and steps={args.steps} "
                     f"both give the run's length; give one of them")


def is_resnet(variant):
  """Whether ``variant`` names a BiT ResNet ('R50x1'), not a ViT or hybrid."""
  return bool(bit.VARIANT_RE.match(variant))


def refuse_resnet(variant, config_file):
  """The ViT recipes' refusal of a BiT ResNet, pointing to its own recipes."""
  if is_resnet(variant):
    raise ValueError(f"{config_file}: variant={variant!r} is a BiT ResNet, "
                     f"whose recipes are configs/bit.py (stage=upstream or "
                     f"stage=hyperrule); hybrids such as {variant}+B/16 train here")


def for_resnet(config):
  """``config`` (unlocked) with only the fields a ResNet run reads.

  `config.model` keeps `RESNET_MODEL_FIELDS`; `posemb_resample` goes, as a
  ResNet has no position embeddings. A ViT-only field then cannot be set by
  mistake: ``--config.model.dropout_rate=0.1`` is an unknown field.
  """
  config.model = {key: config.model[key] for key in RESNET_MODEL_FIELDS}
  del config["posemb_resample"]
  return config
