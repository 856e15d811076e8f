"""Config files: paper defaults, arg-string parsing and the errors of a typo."""
import pickle

import pytest
from ml_collections import config_flags  # noqa: F401 (config files load through it)

from configs import benchmark, bit, common, demo, finetune, pretrain, transfer
from vit_jax.models import bit as bit_models
from vit_jax.train import config_checks


def test_pretrain_config_has_the_papers_defaults():
  config = pretrain.get_config("variant=L/16,data=imagenet21k")
  assert config.variant == "L/16"
  assert config.data.num_classes == 21843
  assert (config.optim.name, config.optim.b1, config.optim.b2) == ("adam", 0.9, 0.999)
  # Table 3's 0.03; the clip at 1 is ours on ImageNet-21k (the paper's on ImageNet).
  assert config.optim.weight_decay == 0.03 and config.optim.grad_clip_norm == 1.0
  assert config.global_batch == 4096
  assert (config.lr.base, config.lr.warmup_steps, config.lr.decay) == (1e-3, 10_000, "linear")
  assert config.loss == "sigmoid_xent" and config.model.head_bias_init == -10.0
  assert config.model.representation_size == 1024  # pre_logits of the hidden size
  assert config.model.dropout_rate == 0.1 and config.image_size == 224
  assert "inception_crop(224)|flip_lr" in config.pp.train
  assert config.total_epochs == 90


def test_pretrain_on_jft_runs_the_papers_7_epochs_without_dropout():
  config = pretrain.get_config("variant=L/16,data=jft")
  assert (config.total_epochs, config.model.dropout_rate) == (7, 0.0)
  assert (config.lr.base, config.lr.decay, config.optim.weight_decay) == (4e-4, "linear", 0.1)
  assert config.data.multi_label and config.loss == "sigmoid_xent"
  assert pretrain.get_config("variant=L/16,data=jft,epochs=14").total_epochs == 14


# Table 3 of the ViT paper, as it prints each row.
@pytest.mark.parametrize("variant, data, epochs, lr, decay, weight_decay, dropout", [
    ("B/16", "jft", 7, 8e-4, "linear", 0.1, 0.0),
    ("B/32", "jft", 7, 8e-4, "linear", 0.1, 0.0),
    ("L/32", "jft", 7, 6e-4, "linear", 0.1, 0.0),
    ("L/16", "jft", 7, 4e-4, "linear", 0.1, 0.0),
    ("H/14", "jft", 14, 3e-4, "linear", 0.1, 0.0),
    ("R50x1+B/16", "jft", 7, 8e-4, "linear", 0.1, 0.0),
    ("R50x1+B/32", "jft", 7, 8e-4, "linear", 0.1, 0.0),
    ("R50x1+L/32", "jft", 7, 2e-4, "linear", 0.1, 0.0),
    ("R50x1+L/16", "jft", 7, 4e-4, "linear", 0.1, 0.0),
    ("B/16", "imagenet21k", 90, 1e-3, "linear", 0.03, 0.1),
    ("B/32", "imagenet21k", 90, 1e-3, "linear", 0.03, 0.1),
    ("L/16", "imagenet21k", 90, 1e-3, "linear", 0.03, 0.1),
    ("L/32", "imagenet21k", 90, 1e-3, "linear", 0.03, 0.1),
    ("B/16", "imagenet2012", 300, 3e-3, "cosine", 0.3, 0.1),
    ("H/14", "imagenet2012", 300, 3e-3, "cosine", 0.3, 0.1),
])
def test_pretrain_has_the_papers_table3_row(variant, data, epochs, lr, decay,
                                            weight_decay, dropout):
  config = pretrain.get_config(f"variant={variant},data={data}")
  assert (config.total_epochs, config.lr.base, config.lr.decay) == (epochs, lr, decay)
  assert (config.optim.weight_decay, config.model.dropout_rate) == (weight_decay, dropout)
  # What every row shares (Table 3's caption, Appendix B.1).
  assert (config.optim.name, config.optim.b1, config.optim.b2) == ("adam", 0.9, 0.999)
  assert (config.global_batch, config.lr.warmup_steps, config.image_size) == (4096, 10_000, 224)
  assert config.optim.grad_clip_norm == 1.0
  config_checks.check_config(config, num_devices=1, process_count=1)


def test_pretrain_on_imagenet_has_the_papers_300_epochs_and_strong_regularisation():
  config = pretrain.get_config("variant=B/16,data=imagenet2012")
  assert config.total_epochs == 300 and config.global_batch == 4096
  assert (config.lr.base, config.lr.decay, config.lr.warmup_steps) == (3e-3, "cosine", 10_000)
  assert (config.optim.weight_decay, config.model.dropout_rate) == (0.3, 0.1)
  assert (config.optim.b1, config.optim.b2, config.optim.grad_clip_norm) == (0.9, 0.999, 1.0)
  assert config.data.num_classes == 1000 and config.model.representation_size == 768


@pytest.mark.parametrize("aug, randaug, alpha", [
    ("none", None, 0.0), ("light1", "randaug(2, 0, increasing=False)", 0.0),
    ("medium2", "randaug(2, 15, increasing=False)", 0.5),
    ("strong2", "randaug(2, 20, increasing=False)", 0.8)])
def test_pretrain_takes_augregs_presets(aug, randaug, alpha):
  import numpy as np
  import tensorflow as tf
  from vit_jax.data import preprocess
  config = pretrain.get_config(f"variant=B/16,data=imagenet21k,aug={aug}")
  assert config.mixup.alpha == alpha
  expected = ("decode|inception_crop(224)|flip_lr|" + (f"{randaug}|" if randaug else "")
              + "value_range(-1,1)|onehot(21843)")
  assert config.pp.train == expected
  assert "randaug" not in config.pp.eval
  # The string runs: randaug gets the crop's uint8 pixels.
  image = tf.io.encode_jpeg(np.random.RandomState(0).randint(0, 256, (40, 50, 3), np.uint8))
  out = preprocess.parse(config.pp.train)(
      {"image": image, "label": tf.constant(3, tf.int64), "_rng": tf.constant([1, 2], tf.int64)})
  assert out["image"].shape == (224, 224, 3) and out["labels"].shape == (21843,)
  config_checks.check_config(config, num_devices=1, process_count=1)


def test_pretrain_names_the_augreg_presets_for_an_unknown_aug():
  with pytest.raises(ValueError, match=r"unknown aug='medium'; the AugReg presets are none, "
                     r"light1, light2, medium1, medium2, strong1, strong2"):
    pretrain.get_config("variant=B/16,data=imagenet21k,aug=medium")


@pytest.mark.parametrize("arg", ["variant=S/16,data=jft", "variant=B/16,data=cifar10"])
def test_pretrain_without_a_table3_row_lists_the_rows(arg):
  with pytest.raises(ValueError, match=r"configs/pretrain.py has no recipe for variant="
                     r".* jft: B/16, B/32, L/32, L/16, H/14, .*R50x1\+L/16; "
                     r"imagenet21k: any ViT or hybrid; imagenet2012: any ViT or hybrid"):
    pretrain.get_config(arg)


def test_finetune_config_has_the_papers_defaults():
  config = finetune.get_config("variant=B/16,data=cifar10,res=384,init=/x")
  assert (config.optim.name, config.optim.momentum) == ("sgd", 0.9)
  assert config.optim.weight_decay == 0.0 and config.optim.grad_clip_norm == 1.0
  assert config.global_batch == 512 and config.total_steps == 10_000
  assert (config.lr.warmup_steps, config.lr.decay) == (500, "cosine")
  assert config.lr.base in (0.001, 0.003, 0.01, 0.03)  # CIFAR's grid
  assert config.model.representation_size is None and config.model.head_bias_init == 0.0
  assert config.image_size == 384 and config.init == "/x" and config.ema_decay == 0
  assert config.data.num_classes == 10 and config.loss == "softmax_xent"
  assert finetune.get_config("data=imagenet2012").total_steps == 20_000
  assert finetune.get_config("variant=B/16,data=cifar10").image_size == 384  # res=0: the paper's


# Table 4 of the ViT paper: steps and the lr grid by dataset.
@pytest.mark.parametrize("data, steps, grid", [
    ("imagenet2012", 20_000, (0.003, 0.01, 0.03, 0.06)),
    ("cifar10", 10_000, (0.001, 0.003, 0.01, 0.03)),
    ("cifar100", 10_000, (0.001, 0.003, 0.01, 0.03)),
    ("oxford_iiit_pet", 500, (0.001, 0.003, 0.01, 0.03)),
    ("oxford_flowers102", 500, (0.001, 0.003, 0.01, 0.03)),
])
def test_finetune_has_the_papers_table4_steps_and_grid(data, steps, grid):
  assert finetune.TABLE4[data] == (steps, grid)
  assert finetune.steps_and_lrs(data) == (steps, grid)
  config = finetune.get_config(f"data={data},init=/x")
  assert config.total_steps == steps and config.lr.base in grid
  assert config.image_size == 384 and config.global_batch == 512
  config_checks.check_config(config, num_devices=1, process_count=1)


def test_finetune_takes_vtabs_setting_for_every_vtab_task_and_10k_elsewhere():
  assert finetune.VTAB_STEPS_LRS == (2_500, (0.01,))
  assert finetune.steps_and_lrs("vtab_dtd") == finetune.VTAB_STEPS_LRS
  assert finetune.steps_and_lrs("fashion_mnist") == (10_000, (0.01,))
  config = finetune.get_config("data=fashion_mnist")
  assert (config.total_steps, config.lr.base, config.lr.warmup_steps) == (10_000, 0.01, 500)
  vtab = [name for name in common.DATASETS if name.startswith("vtab_")]
  for name in vtab:  # the presets, where configs/common.py has them
    config = finetune.get_config(f"data={name}")
    assert (config.total_steps, config.lr.base, config.lr.warmup_steps) == (2_500, 0.01, 250)


@pytest.mark.parametrize("steps, warmup", [(500, 50), (2_500, 250), (5_000, 500),
                                           (20_000, 500), (7, 0)])
def test_finetune_warmup_is_a_tenth_of_the_run_at_most_500(steps, warmup):
  assert finetune.get_config(f"steps={steps}").lr.warmup_steps == warmup


def test_finetune_warmup_follows_total_steps_set_on_the_command_line():
  config = parse_flags("--config=configs/finetune.py:data=oxford_iiit_pet",
                       "--config.total_steps=300")
  assert (config.total_steps, config.lr.warmup_steps) == (300, 30)
  config = parse_flags("--config=configs/finetune.py:data=oxford_iiit_pet",
                       "--config.total_steps=300", "--config.lr.warmup_steps=100")
  assert (config.total_steps, config.lr.warmup_steps) == (300, 100)
  unpickled = pickle.loads(pickle.dumps(finetune.get_config("data=cifar10")))
  unpickled.total_steps = 1_000
  assert unpickled.lr.warmup_steps == 100


@pytest.mark.parametrize("variant, res, grid", [("L/16", 512, 32), ("H/14", 518, 37)])
def test_finetune_on_imagenet_of_the_largest_models_is_table2s(variant, res, grid):
  config = finetune.get_config(f"variant={variant},data=imagenet2012,init=/x")
  assert (config.image_size, config.ema_decay) == (res, 0.9999)
  assert config.image_size // int(variant.split("/")[1]) == grid
  assert f"inception_crop({res})" in config.pp.train
  config_checks.check_config(config, num_devices=1, process_count=1)
  # An explicit res keeps the Polyak averaging; other datasets have neither.
  assert finetune.get_config(f"variant={variant},data=imagenet2012,res=448").image_size == 448
  other = finetune.get_config(f"variant={variant},data=cifar10")
  assert other.ema_decay == 0 and other.image_size in (384, 378)
  assert finetune.get_config("variant=B/16,data=imagenet2012").image_size == 384


def test_finetune_of_h14_takes_the_grid_of_the_papers_384_px():
  config = finetune.get_config("variant=H/14,data=cifar10,init=/x")
  assert config.image_size == 378  # 27x27 patches, as 384 px made at /14
  config_checks.check_config(config, num_devices=1, process_count=1)


def test_arg_values_keep_the_type_of_their_default():
  config = finetune.get_config("res=512,steps=20,lr=0.03")
  assert config.image_size == 512 and isinstance(config.image_size, int)
  assert config.total_steps == 20 and config.lr.base == 0.03


def test_unknown_arg_names_it_and_lists_the_valid_ones():
  with pytest.raises(ValueError, match=r"unknown config argument 'varaint'.*valid keys: .*variant"):
    pretrain.get_config("varaint=B/16")


def test_arg_of_the_wrong_type_is_named():
  with pytest.raises(ValueError, match=r"res='big': expected int"):
    finetune.get_config("res=big")


def test_arg_without_value_is_an_error():
  with pytest.raises(ValueError, match=r"'res' is not key=value"):
    finetune.get_config("res")


def test_unknown_dataset_lists_the_presets():
  with pytest.raises(ValueError, match=r"unknown dataset 'imagenet22k'; valid: .*imagenet21k"):
    pretrain.get_config("data=imagenet22k")


def test_unknown_variant_lists_the_valid_ones():
  with pytest.raises(ValueError, match=r"unknown ViT variant 'X/16'.*Ti, S, B, L, H"):
    pretrain.get_config("variant=X/16")


def test_unknown_demo_stage_is_named():
  with pytest.raises(ValueError, match=r"stage='train'; valid: pretrain, finetune"):
    demo.get_config("stage=train")


def test_configs_are_locked_so_a_typo_in_an_override_fails():
  config = demo.get_config("stage=pretrain")
  with pytest.raises(AttributeError, match="global_bacth"):
    config.global_bacth = 8
  with pytest.raises(AttributeError, match="dropout"):
    config.model.dropout = 0.1


def test_overrides_give_a_typed_copy_and_leave_the_config_alone():
  config = pretrain.get_config("variant=B/16,data=imagenet21k")
  other = common.with_overrides(
      config, "model.remat=True, image_size=384,lr.base=3e-4,"
              "model.representation_size=None,model.layer_norm_implementation=flax")
  assert other.model.remat is True and other.image_size == 384
  assert other.lr.base == 3e-4 and other.model.representation_size is None
  assert other.model.layer_norm_implementation == "flax"
  assert (config.model.remat, config.image_size, config.lr.base) == (False, 224, 1e-3)
  assert config.model.representation_size == 768
  assert config.model.layer_norm_implementation == "auto"


@pytest.mark.parametrize("overrides, message", [
    ("model.rematt=True", r"'model.rematt': no 'rematt' there; valid keys: .*remat"),
    ("image_size.x=1", r"'image_size.x': no 'x' there; valid keys: none, it is not a block"),
    ("model=1", r"'model' names a block; set one of its keys: .*remat"),
    ("model.remat=sometimes", r"model.remat='sometimes': expected a bool"),
    ("model.remat", r"'model.remat' is not key=value"),
])
def test_bad_overrides_name_the_key(overrides, message):
  with pytest.raises(ValueError, match=message):
    common.with_overrides(pretrain.get_config("variant=B/16"), overrides)


def test_every_dataset_preset_has_what_the_pipeline_reads():
  for name in common.DATASETS:
    data = common.dataset_config(name)
    assert data.num_classes > 0 and data.train_split and data.eval_splits
    assert data.prepare


def parse_flags(*argv):
  """The config that `python -m vit_jax.main` would get from ``argv``."""
  from absl import flags
  argv = ["main", *argv]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


def test_fields_unset_by_default_can_be_set_on_the_command_line():
  config = parse_flags("--config=configs/finetune.py:variant=Ti/16",
                       "--config.model.representation_size=192",
                       "--config.data.data_dir=/data/tfds")
  assert config.model.representation_size == 192
  assert config.data.data_dir == "/data/tfds"
  config = parse_flags("--config=configs/pretrain.py:variant=Ti/16,steps=1000",
                       "--config.total_steps=2000")
  assert (config.total_steps, config.total_epochs) == (2000, None)
  assert pretrain.get_config("variant=Ti/16").total_epochs == 90


def test_finetune_keeps_adams_betas_so_adam_can_be_chosen():
  from vit_jax.train import optim
  config = parse_flags("--config=configs/finetune.py", "--config.optim.name=adam")
  assert (config.optim.b1, config.optim.b2) == (0.9, 0.999)
  optim.make_optimizer(config.optim, 0.01)  # raised KeyError 'b1' before


def test_image_size_and_class_count_overrides_reach_the_preprocessing():
  config = parse_flags("--config=configs/pretrain.py:variant=Ti/16", "--config.image_size=384")
  assert config.pp.train == "decode|inception_crop(384)|flip_lr|value_range(-1,1)|onehot(21843)"
  assert config.pp.eval == ("decode|resize_small(438)|central_crop(384)|value_range(-1,1)"
                            "|onehot(21843)")
  config = parse_flags("--config=configs/finetune.py", "--config.data.num_classes=7",
                       "--config.image_size=32")
  assert config.pp.train == "decode|inception_crop(32)|flip_lr|value_range(-1,1)|onehot(7)"
  assert config.pp.eval == "decode|resize(32)|value_range(-1,1)|onehot(7)"
  unpickled = pickle.loads(pickle.dumps(config))  # multi-process tests pickle configs
  unpickled.image_size = 48
  assert unpickled.pp.eval == "decode|resize(48)|value_range(-1,1)|onehot(7)"


def test_a_preprocessing_string_set_outright_replaces_its_template():
  config = parse_flags("--config=configs/pretrain.py:variant=Ti/16",
                       "--config.pp.train=decode|resize(64)|value_range(-1,1)|onehot(5)",
                       "--config.image_size=384")
  assert config.pp.train == "decode|resize(64)|value_range(-1,1)|onehot(5)"
  assert "central_crop(384)" in config.pp.eval


def test_an_unknown_preprocessing_template_field_is_named():
  config = pretrain.get_config("variant=Ti/16")
  with pytest.raises(ValueError, match=r"\{imagesize\} in the preprocessing template "
                     r"'resize\(\{imagesize\}\)'; valid: \{image_size\}, \{num_classes\}, "
                     r"\{eval_resize\}"):
    common.pp_strings(config, train="resize({imagesize})")


STOCK_CONFIGS = {
    "pretrain i21k": lambda: pretrain.get_config("variant=B/16,data=imagenet21k"),
    "pretrain jft": lambda: pretrain.get_config("variant=L/16,data=jft"),
    "pretrain imagenet": lambda: pretrain.get_config("variant=B/16,data=imagenet2012"),
    "finetune": lambda: finetune.get_config("variant=B/16,data=cifar10,res=384,init=/x"),
    "finetune pets": lambda: finetune.get_config("variant=B/16,data=oxford_iiit_pet,init=/x"),
    "finetune h14 imagenet": lambda: finetune.get_config("variant=H/14,data=imagenet2012,"
                                                         "init=/x"),
    "demo pretrain": lambda: demo.get_config("stage=pretrain"),
    "demo finetune": lambda: demo.get_config("stage=finetune,init=/x"),
    "benchmark": lambda: benchmark.get_config(),
    "bit upstream": lambda: bit.get_config("stage=upstream,variant=R50x1,data=imagenet21k"),
    "bit hyperrule": lambda: bit.get_config("stage=hyperrule,variant=R50x1,data=cifar10,"
                                            "init=/x"),
    "demo resnet": lambda: demo.get_config("stage=pretrain,variant=R26x1"),
    "demo hybrid": lambda: demo.get_config("stage=finetune,variant=R26x1+Ti/16,init=/x"),
}
# Numeric fields whose valid values depend on more than the field: the layout
# sizes (-1, or a divisor of the device count, checked by sharding.axis_sizes)
# and the published split sizes (a table the cost estimate reads).
NOT_RANGED = ("mesh.data", "mesh.fsdp", "mesh.model", "data.published_sizes.")


def numeric_leaves(node, prefix=""):
  for key, value in node.items():
    if hasattr(value, "items"):
      yield from numeric_leaves(value, f"{prefix}{key}.")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      yield f"{prefix}{key}"


@pytest.mark.parametrize("name", STOCK_CONFIGS)
def test_every_numeric_field_of_the_stock_configs_has_a_range_and_is_in_it(name):
  config = STOCK_CONFIGS[name]()
  unranged = [field for field in numeric_leaves(config)
              if field not in config_checks.NUMERIC_FIELDS
              and not field.startswith(NOT_RANGED)]
  assert not unranged, unranged
  config_checks.check_numeric_fields(config)


def has_field(config, dotted):
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node:
      return False
    node = node[part]
  return True


def out_of_range(valid):
  """A value the range refuses: below its low end, else above its high end."""
  if valid.low is not None:
    return valid.low if valid.low_open else valid.low - 1
  if valid.high is not None:
    return valid.high if valid.high_open else valid.high + 1
  return float("nan")


def assert_refused_with_its_range(field, bad):
  """Sets ``field`` to ``bad`` in a stock config that has it; the error names
  the value as the config holds it and the field's valid range."""
  # The demo has the tiny model's fields; the pre-training config pre_logits.
  config = next(c for c in (STOCK_CONFIGS["demo pretrain"](), STOCK_CONFIGS["pretrain i21k"]())
                if has_field(c, field))
  *parents, leaf = field.split(".")
  node = config
  for part in parents:
    node = node[part]
  with config.unlocked():
    node[leaf] = bad
  bad = node[leaf]  # as the config holds it: an int given to a float field is a float
  with pytest.raises(ValueError) as error:
    config_checks.check_config(config, num_devices=1, process_count=1)
  valid = config_checks.NUMERIC_FIELDS[field]
  assert str(error.value) == f"config.{field}={bad!r} must be {valid.describe()}"


@pytest.mark.parametrize("field", config_checks.NUMERIC_FIELDS)
def test_a_numeric_field_out_of_its_range_is_named_with_what_is_valid(field):
  assert_refused_with_its_range(field, out_of_range(config_checks.NUMERIC_FIELDS[field]))


@pytest.mark.parametrize("field", [field for field, valid in config_checks.NUMERIC_FIELDS.items()
                                   if valid.high is not None and valid.low is not None])
def test_a_numeric_field_past_the_high_end_of_its_range_is_named_too(field):
  """An EMA decay of 1 never moves the average, a dropout rate of 1 drops
  everything: a range's high end is checked as its low end is."""
  valid = config_checks.NUMERIC_FIELDS[field]
  assert_refused_with_its_range(field, valid.high if valid.high_open else valid.high + 1)


@pytest.mark.parametrize("epochs, examples, batch, steps", [
    (2.3, 50_000, 10, 11_500),  # 2.3 * 50,000 is 114999.99... in floats
    (0.57, 100, 1, 57),
    (7, 1_281_167, 4096, 2_189),
    (0.01, 100, 32, 1),  # less than a batch still trains a step
])
def test_epochs_count_as_written_and_a_run_takes_at_least_a_step(epochs, examples, batch, steps):
  config = STOCK_CONFIGS["demo pretrain"]()
  with config.unlocked():
    config.total_steps, config.total_epochs, config.global_batch = None, epochs, batch
  assert config_checks.resolve_total_steps(config, examples) == steps


def test_a_width_its_heads_do_not_divide_is_refused():
  config = common.with_overrides(STOCK_CONFIGS["demo pretrain"](),
                                 "model.hidden_size=30,model.num_heads=4")
  with pytest.raises(ValueError, match=r"^the width 30 \(config.model.hidden_size, else "
                                       r"Ti/7's\) is not divisible by its 4 heads"):
    config_checks.check_config(config, num_devices=1, process_count=1)


@pytest.mark.parametrize("field, values", [("shots", (0,)), ("shots", ()), ("seeds", (-1,))])
def test_a_probe_of_no_shots_or_a_negative_seed_is_refused(field, values):
  config = STOCK_CONFIGS["demo pretrain"]()
  with config.unlocked():
    config.fewshot[field] = values
  low = config_checks.PROBE_COUNT_LOWS[field]
  with pytest.raises(ValueError) as error:
    config_checks.check_config(config, num_devices=1, process_count=1)
  assert str(error.value) == (f"config.fewshot.{field}={values!r} must be one or more "
                              f"integers >= {low}")


def string_leaves(node, prefix=""):
  for key, value in node.items():
    if hasattr(value, "items"):
      yield from string_leaves(value, f"{prefix}{key}.")
    elif isinstance(value, str):
      yield f"{prefix}{key}"


# String fields that are no choice among a few: names, paths, regexes,
# preprocessing strings (each checked where it is read, with its own error).
FREE_STRINGS = ("variant", "init", "data.name", "data.data_dir", "data.pattern", "data.label",
                "data.train_split", "data.prepare", "data.eval_splits.", "pp.",
                "optim.weight_decay_params", "fewshot.train_split", "fewshot.test_split")


@pytest.mark.parametrize("name", STOCK_CONFIGS)
def test_every_choice_field_of_the_stock_configs_is_listed_and_valid(name):
  config = STOCK_CONFIGS[name]()
  unlisted = [field for field in string_leaves(config)
              if field not in config_checks.CHOICES and not field.startswith(FREE_STRINGS)]
  assert not unlisted, unlisted
  config_checks.check_choices(config)


@pytest.mark.parametrize("field", config_checks.CHOICES)
def test_a_choice_field_naming_no_choice_is_named_with_the_choices(field):
  config = STOCK_CONFIGS["demo pretrain"]()
  *parents, leaf = field.split(".")
  node = config
  for part in parents:
    node = node[part]
  with config.unlocked():
    node[leaf] = "bogus"
  with pytest.raises(ValueError) as error:
    config_checks.check_config(config, num_devices=1, process_count=1)
  valid = config_checks.CHOICES[field]
  assert str(error.value) == f"config.{field}='bogus'; valid: {', '.join(valid)}"
  assert len(valid) >= 2 and "bogus" not in valid


@pytest.mark.parametrize("field, value, message", [
    ("optim.weight_decay_params", "([", "config.optim.weight_decay_params='([' is "
     "no regex: unterminated character set at position 1"),
    ("mesh.rules", (("(", "fsdp"),), "config.mesh.rules regex '(': missing ), "
     "unterminated subpattern at position 0"),
    ("mesh.rules", ((".*", "shard"),), "config.mesh.rules entry ('.*', 'shard'): "
     "expected (regex, rule) with rule one of "),
])
def test_a_malformed_regex_field_is_named(field, value, message):
  config = STOCK_CONFIGS["demo pretrain"]()
  parent, leaf = field.split(".")
  with config.unlocked():
    config[parent][leaf] = value
  with pytest.raises(ValueError) as error:
    config_checks.check_config(config, num_devices=1, process_count=1)
  assert str(error.value).startswith(message)


BIT_VARIANTS = [f"R{depth}x{width}" for depth in bit_models.VARIANTS
                for width in bit_models.WIDTH_FACTORS]


@pytest.mark.parametrize("stage", bit.STAGES)
@pytest.mark.parametrize("variant", BIT_VARIANTS)
def test_every_bit_stage_and_variant_passes_the_config_checks(stage, variant):
  config = bit.get_config(f"stage={stage},variant={variant}")
  config_checks.check_config(config, num_devices=1, process_count=1)
  assert set(config.model) == set(common.RESNET_MODEL_FIELDS)
  assert "posemb_resample" not in config


def test_layer_decay_of_a_resnet_is_refused_before_anything_is_built():
  config = bit.get_config("stage=hyperrule,variant=R50x1,data=cifar10")
  config.optim.layer_decay = 0.75
  with pytest.raises(ValueError, match=r"^config.optim.layer_decay=0.75 scales the learning "
                                       r"rate of a ViT's blocks by depth, and R50x1 has no "
                                       r"such blocks; unset it$"):
    config_checks.check_config(config, num_devices=1, process_count=1)
  config.optim.layer_decay = 1.0  # none
  config_checks.check_config(config, num_devices=1, process_count=1)


def test_bit_upstream_has_the_papers_recipe():
  config = bit.get_config("stage=upstream,variant=R50x1,data=imagenet21k")
  assert (config.optim.name, config.optim.momentum, config.optim.grad_clip_norm) == ("sgd", 0.9, 0)
  assert config.global_batch == 4096 and config.lr.base == pytest.approx(0.03 * 4096 / 256)
  assert (config.lr.warmup_steps, config.lr.decay, config.lr.decay_factor) == (5000, "step", 0.1)
  assert config.total_epochs == 90
  assert [b * 90 for b in config.lr.boundaries] == pytest.approx([30, 60, 80])
  # L2 1e-4 through momentum 0.9 is decoupled 1e-3 (configs/bit.py).
  assert config.optim.weight_decay == pytest.approx(1e-4 / (1 - 0.9))
  assert config.loss == "sigmoid_xent" and config.model.head_bias_init == -10.0
  assert config.mixup.alpha == 0 and config.image_size == 224
  assert "inception_crop(224)|flip_lr" in config.pp.train
  assert bit.get_config("stage=upstream,data=imagenet2012").loss == "softmax_xent"
  jft = bit.get_config("stage=upstream,data=jft")
  assert jft.total_epochs == 40
  assert [b * 40 for b in jft.lr.boundaries] == pytest.approx([10, 23, 30, 37])


def test_bit_upstream_lr_follows_the_global_batch():
  config = parse_flags("--config=configs/bit.py:stage=upstream", "--config.global_batch=1024")
  assert config.lr.base == pytest.approx(0.03 * 1024 / 256)


def test_step_boundaries_can_be_set_on_the_command_line():
  config = parse_flags("--config=configs/bit.py:stage=upstream",
                       "--config.lr.boundaries=(0.5,0.75)")
  assert tuple(config.lr.boundaries) == (0.5, 0.75)


@pytest.mark.parametrize("data, examples, steps, warmup, boundaries, res, mixup", [
    # small: Flowers' 2,040 images of several hundred px (the reference's 500 steps,
    # 100 warm-up, decays at 200, 300, 400)
    ("oxford_flowers102", 2_040, 500, 100, (0.4, 0.6, 0.8), (448, 384), 0.0),
    # medium, small images: CIFAR-10's 49,000 of 32x32 px
    ("cifar10", 49_000, 10_000, 500, (0.3, 0.6, 0.9), (160, 128), 0.1),
    # large: ImageNet's 1,268,355
    ("imagenet2012", 1_268_355, 20_000, 500, (0.3, 0.6, 0.9), (448, 384), 0.1),
])
def test_bit_hyperrule_by_dataset_size(data, examples, steps, warmup, boundaries, res, mixup):
  config = bit.get_config(f"stage=hyperrule,variant=R50x1,data={data},init=/x")
  assert bit.hyperrule(data)["examples"] == examples
  assert (config.total_steps, config.lr.warmup_steps) == (steps, warmup)
  assert tuple(config.lr.boundaries) == boundaries and config.lr.decay == "step"
  assert config.image_size == res[1] and config.mixup.alpha == mixup
  assert config.pp.train.startswith(f"decode|resize({res[0]})|random_crop({res[1]})|flip_lr")
  assert config.pp.eval.startswith(f"decode|resize({res[1]})|")
  assert (config.optim.name, config.optim.momentum, config.optim.weight_decay) == ("sgd", 0.9, 0)
  assert config.global_batch == 512 and config.lr.base == 0.003
  assert config.loss == "softmax_xent" and config.model.head_bias_init == 0.0
  assert config.init == "/x"


def test_bit_hyperrule_res_moves_the_resize_with_the_crop():
  config = bit.get_config("stage=hyperrule,data=imagenet2012,res=480,steps=100")
  assert config.total_steps == 100
  assert config.pp.train.startswith("decode|resize(560)|random_crop(480)|")
  config = parse_flags("--config=configs/bit.py:stage=hyperrule,data=cifar10",
                       "--config.image_size=256")
  assert config.pp.train.startswith("decode|resize(320)|random_crop(256)|")


@pytest.mark.parametrize("arg, message", [
    ("variant=R50x1+B/16", r"variant='R50x1\+B/16' is not a BiT ResNet.*configs/pretrain.py"),
    ("stage=upstream,res=384", r"stage=upstream does not read res=384; it reads epochs, steps"),
    ("stage=hyperrule,epochs=9", r"stage=hyperrule does not read epochs=9"),
    ("stage=finetune", r"stage='finetune'; valid: upstream, hyperrule"),
])
def test_bit_config_refuses_what_it_cannot_run(arg, message):
  with pytest.raises(ValueError, match=message):
    bit.get_config(arg)


def test_a_vit_field_of_a_resnet_config_is_an_unknown_override():
  with pytest.raises(ValueError, match=r"'model.dropout_rate': no 'dropout_rate' there; "
                     r"valid keys: conv_implementation, dtype, head_bias_init, "
                     r"param_dtype, remat"):
    common.with_overrides(bit.get_config("stage=upstream"), "model.dropout_rate=0.1")


@pytest.mark.parametrize("variant", ["R50x1+B/16", "R50x1+B/32", "R50x1+L/16",
                                     "R50x1+L/32", "R26x1+S/32"])
def test_hybrids_take_the_vit_recipes(variant):
  pre = pretrain.get_config(f"variant={variant},data=imagenet21k")
  assert pre.model.representation_size == {"B": 768, "L": 1024, "S": 384}[variant[6]]
  fine = finetune.get_config(f"variant={variant},data=cifar10,init=/x")
  for config in (pre, fine):
    config_checks.check_config(config, num_devices=1, process_count=1)


def test_demo_without_a_variant_is_the_vit_demo():
  assert demo.get_config("stage=pretrain") == demo.get_config("stage=pretrain,variant=Ti/7")
  config = demo.get_config("stage=pretrain")
  assert config.variant == "Ti/7" and config.image_size == 21
  assert demo.get_config("stage=finetune").image_size == 28
  assert (config.model.hidden_size, config.model.num_layers) == (128, 6)


def test_demo_trains_a_resnet_and_a_hybrid_with_the_vits_pipeline_and_optimizer():
  vit = demo.get_config("stage=pretrain")
  resnet = demo.get_config("stage=pretrain,variant=R26x1")
  hybrid = demo.get_config("stage=pretrain,variant=R26x1+Ti/16")
  for config in (resnet, hybrid):
    config_checks.check_config(config, num_devices=1, process_count=1)
    for field in ("optim", "lr", "global_batch", "total_steps", "loss", "mixup", "data"):
      assert config[field] == vit[field], field
  assert set(resnet.model) == set(common.RESNET_MODEL_FIELDS) and resnet.image_size == 21
  assert "posemb_resample" not in resnet
  # The hybrid has the ViT's Transformer and its 3x3 grid: 48 px at /16.
  assert hybrid.model.hidden_size == 128 and hybrid.image_size == 48
  assert demo.get_config("stage=finetune,variant=R26x1+Ti/16").image_size == 64
  with pytest.raises(ValueError, match=r"variant='Ti'; valid: a ViT"):
    demo.get_config("variant=Ti")


@pytest.mark.parametrize("module", [pretrain, finetune])
def test_the_vit_recipes_point_a_resnet_to_the_bit_configs(module):
  with pytest.raises(ValueError, match=r"variant='R50x1' is a BiT ResNet, whose "
                                       r"recipes are configs/bit.py"):
    module.get_config("variant=R50x1")


@pytest.mark.parametrize("suite, benchmark", [("demo", "digits"), ("paper", "cifar10")])
def test_transfer_res_sets_every_suites_fine_tuning_size_and_its_preprocessing(
    suite, benchmark):
  config = transfer.get_config(f"suite={suite},init=runs/x,variant=Ti/7,res=35,"
                               f"benchmarks={benchmark}")
  finetune_config = config.benchmarks[benchmark].finetune
  assert finetune_config.image_size == 35
  assert finetune_config.pp.eval.startswith("decode|resize(35)|")


@pytest.mark.parametrize("module, arg", [
    (pretrain, "variant=L/16,data=jft,epochs=14,steps=1000"),
    (bit, "stage=upstream,epochs=14,steps=1000"),
])
def test_epochs_and_steps_together_are_refused_as_one_would_be_ignored(module, arg):
  name = module.__name__.replace(".", "/")
  with pytest.raises(ValueError, match=f"^{name}.py: epochs=14 and steps=1000 both give "
                     f"the run's length; give one of them$"):
    module.get_config(arg)


def test_the_stock_configs_take_a_transformer_shape_and_default_to_the_variants():
  from vit_jax.models import build
  config = finetune.get_config("variant=S/16,data=cifar10,init=/x")
  model = build.model_from_config(config)
  assert (model.hidden_size, model.num_layers, model.mlp_dim, model.num_heads) == (
      384, 12, 1536, 6)
  config = common.with_overrides(config, "model.hidden_size=96,model.num_layers=3,"
                                         "model.mlp_dim=192,model.num_heads=2")
  model = build.model_from_config(config)
  assert (model.hidden_size, model.num_layers, model.mlp_dim, model.num_heads,
          model.patch_size) == (96, 3, 192, 2, 16)
  config_checks.check_config(config, num_devices=1, process_count=1)
  with pytest.raises(ValueError, match=r"config.model.num_heads=0 .*None takes the variant's"):
    config_checks.check_config(common.with_overrides(config, "model.num_heads=0"),
                               num_devices=1, process_count=1)


@pytest.mark.parametrize("field, value, message", [
    ("boundaries", (0.1, 0.6, 0.8), r"config.lr.boundaries=\(0.1, 0.6, 0.8\): the decay at "
     r"0.1 of the run \(step 50 of 500\) is not after the warm-up"),
    ("boundaries", (0.6, 0.3), r"config.lr.boundaries=\(0.6, 0.3\) must be increasing"),
])
def test_a_schedule_the_trainer_would_refuse_is_refused_by_the_config_checks(
    field, value, message):
  """Before the data is read, and by --dry_run and the cost estimate, which
  run the same checks."""
  config = bit.get_config("stage=hyperrule,variant=R50x1,data=oxford_iiit_pet,init=/x")
  assert config.total_steps == 500 and config.lr.decay == "step"
  config.lr[field] = value
  with pytest.raises(ValueError, match=message):
    config_checks.check_config(config, num_devices=1, process_count=1)
