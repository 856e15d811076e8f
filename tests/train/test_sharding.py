"""Partition rules, FSDP memory and results, and resuming on another mesh."""
import json
import os
import re
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from configs import common
from conftest import tiny_config
from vit_jax import models, train, tree_util
from vit_jax.models import activation_sharding, build, pretrained
from vit_jax.train import losses, optim, sharding, steps


def mesh_config(**overrides):
  config = ml_collections.ConfigDict(dict(common.base_config().mesh))
  config.update(overrides)
  return config


def abstract_train_state(model, tx, image_size):
  def init():
    params = build.init_params(model, image_size, seed=0)
    return steps.initial_state(params, tx, ml_collections.ConfigDict({"ema_decay": 0.9999}))
  return jax.eval_shape(init)


def specs_by_name(shardings):
  return {name: s.spec for name, s in tree_util.flatten_named(shardings)}


def test_mesh_sizes_take_the_rest_and_bad_sizes_name_the_config_keys():
  for sizes, shape in (({}, (8, 1, 1)), ({"data": 1, "fsdp": -1}, (1, 8, 1)),
                       ({"data": 2, "fsdp": -1}, (2, 4, 1))):
    mesh = sharding.make_mesh(mesh_config(**sizes))
    assert dict(mesh.shape) == dict(zip(("data", "fsdp", "model"), shape))
  for data, fsdp in ((3, -1), (-1, -1), (2, 2)):
    with pytest.raises(ValueError, match=r"config.mesh data=.* does not cover the 8 devices") as e:
      sharding.make_mesh(mesh_config(data=data, fsdp=fsdp))
    # Fixed sizes on a CPU host: the error says how to get that many devices.
    assert ("JAX_NUM_CPU_DEVICES=4" in str(e.value)) == ((data, fsdp) == (2, 2))


def test_first_matching_rule_decides_and_optimizer_state_follows_its_parameter():
  model = models.get_model("Ti/4", num_classes=10, hidden_size=32, num_layers=1,
                           mlp_dim=64, num_heads=2)
  tx = optim.make_optimizer(common.base_config().optim, optax.constant_schedule(0.1))
  state = abstract_train_state(model, tx, 16)
  config = mesh_config(data=2, fsdp=-1, fsdp_min_size=1024, rules=(
      ("head/.*", "replicate"), (".*/MlpBlock_3/.*", "fsdp"), ("embedding/.*", "fsdp")))
  mesh = sharding.make_mesh(config)
  specs = specs_by_name(sharding.state_shardings(mesh, state, config))
  mlp = "Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"  # (32, 64)
  assert specs[f"params/{mlp}"] == P(None, "fsdp")  # the largest dimension
  assert specs["params/embedding/kernel"] == P(None, None, None, "fsdp")  # (4, 4, 3, 32)
  assert specs["params/head/kernel"] == P()  # 'replicate' matched first
  assert specs["params/Transformer/encoderblock_0/MlpBlock_3/Dense_0/bias"] == P()  # 64 < 1024
  attention = "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"
  assert specs[f"params/{attention}"] == P()  # no rule matched
  shadows = 0
  for name, spec in specs.items():
    for prefix in ("opt_state/1/mu/", "opt_state/1/nu/", "ema_params/"):
      if name.startswith(prefix):
        assert spec == specs["params/" + name[len(prefix):]], name
        shadows += 1
  assert shadows == 3 * len(jax.tree.leaves(state["params"]))
  assert specs["step"] == P() and specs["opt_state/1/count"] == P()
  text = sharding.describe(mesh, state["params"], config)
  assert "'head/.*' -> replicate" in text
  assert f"{mlp} (32, 64) -> {P(None, 'fsdp')}\n" in text
  assert f"{attention} (32, 2, 16) -> {P()} (no rule matched)\n" in text
  assert re.search(r"\nparameters: \d+\.\d MiB per device of \d+\.\d MiB", text)


def test_an_unknown_rule_is_an_error_that_lists_the_valid_ones():
  params = {"head": {"kernel": jax.ShapeDtypeStruct((8, 8), jnp.float32)}}
  config = mesh_config(fsdp=-1, data=1, rules=((".*", "shard"),))
  with pytest.raises(ValueError, match=r"config.mesh.rules entry .*fsdp, replicate"):
    sharding.param_shardings(sharding.make_mesh(config), params, config)


@pytest.mark.slow
def test_fsdp_keeps_a_sixth_of_the_b16_state_per_device():
  """Per-device bytes of params + Adam state, replicated vs 8-way FSDP.

  Counted from the shardings of the abstract state (nothing materialised)
  and from the compiled train step's memory analysis (its arguments: the
  state and a batch of 8 images). The threshold shards every weight matrix.
  """
  config = common.base_config()
  model = models.get_model("B/16", num_classes=1000, **config.model)
  schedule = optax.constant_schedule(1e-3)
  tx = optim.make_optimizer(config.optim, schedule)
  state = abstract_train_state(model, tx, 224)
  del state["ema_params"]
  batch = {"image": jax.ShapeDtypeStruct((8, 224, 224, 3), jnp.float32),
           "labels": jax.ShapeDtypeStruct((8, 1000), jnp.float32)}
  counted, compiled = {}, {}
  for layout, (data, fsdp) in {"replicated": (-1, 1), "fsdp": (1, -1)}.items():
    layout_config = mesh_config(data=data, fsdp=fsdp, fsdp_min_size=2 ** 16)
    mesh = sharding.make_mesh(layout_config)
    shardings = sharding.state_shardings(mesh, state, layout_config)
    if layout == "fsdp":
      specs = specs_by_name(shardings)
      matrices = [n for n, leaf in tree_util.flatten_named(state["params"])
                  if leaf.ndim >= 2 and leaf.size > 768]
      assert len(matrices) == 2 + 12 * 6 + 1  # embedding, posemb, 6 per block, head
      assert all("fsdp" in specs["params/" + n] for n in matrices)
    counted[layout] = sharding.bytes_per_device(state, shardings)
    step = jax.jit(
        steps.make_train_step(model, tx, losses.get_loss(config.loss), schedule,
                              config, mesh),
        in_shardings=(shardings, sharding.batch_sharding(mesh)),
        out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
    analysis = step.lower(state, batch).compile().memory_analysis()
    compiled[layout] = analysis.argument_size_in_bytes
  counters = sum(leaf.size * 4 for leaf in jax.tree.leaves(state) if leaf.ndim == 0)
  assert counted["replicated"] == 3 * 4 * 86_567_656 + counters  # params, mu, nu
  assert counted["fsdp"] <= counted["replicated"] / 6
  assert compiled["fsdp"] <= compiled["replicated"] / 6
  image_bytes = 224 * 224 * 3 * 4 + 1000 * 4
  # One of the 8 images; the schedule's int32 count is not an argument: the
  # step sets it from "step" without reading it.
  assert compiled["replicated"] - counted["replicated"] == image_bytes - 4


def params_of(workdir):
  return pretrained.read_params(workdir)


def losses_of(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {r["step"]: r["loss"] for r in map(json.loads, f) if r["split"] == "train"}


FSDP = {"mesh.data": 1, "mesh.fsdp": -1, "mesh.fsdp_min_size": 256}


@pytest.mark.slow
def test_a_train_step_under_fsdp_equals_data_parallel(fashion_data_dir, tmp_path):
  """SGD: Adam would turn the rounding noise of the attention key bias's zero
  gradient (softmax ignores a shift of all logits) into steps of the full lr."""
  common_overrides = dict(total_steps=2, log_every=1, eval_every=2, checkpoint_every=2,
                          **{"optim.name": "sgd", "lr.warmup_steps": 0})
  train.train_and_evaluate(tiny_config(fashion_data_dir, **common_overrides),
                           str(tmp_path / "data"))
  train.train_and_evaluate(tiny_config(fashion_data_dir, **common_overrides, **FSDP),
                           str(tmp_path / "fsdp"))
  data, fsdp = params_of(str(tmp_path / "data")), params_of(str(tmp_path / "fsdp"))
  assert not np.allclose(data["head"]["kernel"], 0)  # zero-initialised head moved
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               data, fsdp)
  np.testing.assert_allclose(list(losses_of(str(tmp_path / "data")).values()),
                             list(losses_of(str(tmp_path / "fsdp")).values()), rtol=1e-6)


@pytest.mark.slow
def test_an_fsdp_checkpoint_on_8_devices_resumes_data_parallel_on_4(fashion_data_dir, tmp_path):
  """The run stopped after its step-3 checkpoint is a copy of that step."""
  straight = str(tmp_path / "straight")
  train.train_and_evaluate(
      tiny_config(fashion_data_dir, total_steps=6, log_every=1, eval_every=6,
                  checkpoint_every=3, **FSDP), straight)
  resumed = str(tmp_path / "resumed")
  shutil.copytree(os.path.join(straight, "checkpoints", "3"),
                  os.path.join(resumed, "checkpoints", "3"))
  summary = train.train_and_evaluate(
      tiny_config(fashion_data_dir, total_steps=6, log_every=1, eval_every=6,
                  checkpoint_every=3), resumed, devices=jax.devices()[:4])
  assert summary["step"] == 6 and summary["examples_seen"] == 6 * 32
  before, after = losses_of(straight), losses_of(resumed)
  assert sorted(after) == [4, 5, 6]
  np.testing.assert_allclose([after[s] for s in (4, 5, 6)],
                             [before[s] for s in (4, 5, 6)], rtol=1e-5)
  assert before[6] < before[1]


@pytest.mark.parametrize("model_axis", [1, 2])
def test_fsdp_never_splits_the_layer_axis_of_scanned_blocks(model_axis):
  """12 layers of width 8: the layer axis is the largest dimension fsdp=4
  divides, and splitting it would make each step of the scan gather every
  layer. The widest other dimension fsdp divides is split instead, as the
  same block's is without scan."""
  shape = dict(hidden_size=8, num_layers=12, mlp_dim=16, num_heads=2)
  layout_config = mesh_config(data=1, fsdp=4, model=model_axis, fsdp_min_size=1)
  mesh = sharding.abstract_mesh(layout_config, 4 * model_axis)
  specs = {}
  for scan in (False, True):
    model = models.get_model("Ti/4", num_classes=10, scan=scan, **shape)
    params = build.abstract_params(model, 8)
    specs[scan] = specs_by_name(sharding.param_shardings(mesh, params, layout_config))
  stacked = {name: spec for name, spec in specs[True].items() if "/encoderblock/" in name}
  assert len(stacked) > 10
  for name, spec in stacked.items():
    assert len(spec) == 0 or spec[0] is None, (name, spec)
    unrolled = specs[False][name.replace("/encoderblock/", "/encoderblock_0/")]
    assert tuple(spec)[1:] == tuple(unrolled), (name, spec, unrolled)


def test_fsdp_splits_a_bit_resnets_convolutions_like_dense_kernels():
  """R50x1 under 8-way FSDP: every kernel over the threshold is split, on the
  largest dimension 8 divides (output channels for most, the 3x3's input
  channels where they are wider), and GroupNorm's vectors stay replicated."""
  model = models.get_model("R50x1", num_classes=1000)
  params = build.abstract_params(model, 224)
  layout_config = mesh_config(data=1, fsdp=-1, fsdp_min_size=2 ** 16)
  mesh = sharding.make_mesh(layout_config)
  specs = specs_by_name(sharding.param_shardings(mesh, params, layout_config))
  kernels = {name: leaf for name, leaf in tree_util.flatten_named(params)
             if name.endswith("/kernel") and leaf.size >= 2 ** 16}
  assert len(kernels) > 40
  for name, leaf in kernels.items():
    dim = list(specs[name]).index("fsdp")
    assert leaf.shape[dim] == max(leaf.shape), (name, leaf.shape, specs[name])
  assert all(specs[name] == P() for name in specs if "group_norm" in name)
  per_device = sharding.bytes_per_device(
      params, sharding.param_shardings(mesh, params, layout_config))
  total = sum(leaf.size * 4 for leaf in jax.tree.leaves(params))
  assert per_device < total / 7, (per_device, total)


@pytest.mark.parametrize("variant, mib", [
    ("B/16", (991, 127, 250, None, 128)),
    ("G/14", (21108, 2650, 5287, 2674, 2650)),
])
def test_the_per_device_state_table_of_multi_host_md(variant, mib):
  """docs/multi_host.md's parameters + Adam moments a device on 8 devices:
  data parallel, FSDP, data 2 x FSDP 4, model 8 (None: refused), FSDP 4 x
  model 2; from shapes on abstract meshes, so ViT-G costs seconds."""
  config = common.base_config()
  model = models.get_model(variant, num_classes=1000, **config.model)
  tx = optim.make_optimizer(config.optim, optax.constant_schedule(1e-3))
  state = abstract_train_state(model, tx, 224)
  del state["ema_params"]
  counted = []
  for data, fsdp, model_axis in ((-1, 1, 1), (1, -1, 1), (2, -1, 1), (1, 1, 8), (1, 4, 2)):
    layout = mesh_config(data=data, fsdp=fsdp, model=model_axis, fsdp_min_size=2**18)
    try:
      shardings = sharding.state_shardings(
          sharding.abstract_mesh(layout, 8), state, layout)
    except sharding.ModelAxisError:
      counted.append(None)
      continue
    counted.append(round(sharding.bytes_per_device(state, shardings) / 2**20))
  assert tuple(counted) == mib


def test_dropout_and_stochastic_depth_draw_the_same_masks_however_the_batch_is_split():
  # A run's random masks must not depend on its mesh: FSDP, data parallel
  # and a resume on fewer devices train on the same numbers.
  model = models.get_model("Ti/8", num_classes=4, hidden_size=32, num_layers=3, mlp_dim=64,
                           num_heads=2, dropout_rate=0.1, drop_path_rate=0.5)
  params = build.init_params(model, 16, seed=0)
  params["head"]["kernel"] = jnp.ones_like(params["head"]["kernel"])  # not the zero head
  images = jax.random.uniform(jax.random.key(1), (16, 16, 16, 3), minval=-1, maxval=1)
  mesh = sharding.make_mesh(mesh_config())  # data: 8

  def forward(params, images, mesh=None):
    with activation_sharding.under(mesh):  # as the train step traces the model
      return model.apply({"params": params}, images, train=True,
                         rngs={"dropout": jax.random.key(2)})

  whole = jax.jit(forward)(params, images)  # one device, no mesh
  assert len(whole.sharding.device_set) == 1
  split = jax.jit(forward, static_argnums=2)(
      params, jax.device_put(images, sharding.batch_sharding(mesh)), mesh)
  assert len(split.sharding.device_set) == 8
  np.testing.assert_allclose(np.asarray(split), np.asarray(whole), rtol=1e-5, atol=1e-5)
  deterministic = model.apply({"params": params}, images, train=False)
  assert not np.allclose(whole, deterministic)  # the masks did something


def leaves(**shapes):
  """{name: float32 ShapeDtypeStruct}, ``a__b`` standing for ``a/b``."""
  tree = {}
  for name, shape in shapes.items():
    *parents, leaf = name.split("__")
    node = tree
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = jax.ShapeDtypeStruct(shape, jnp.float32)
  return tree


def test_fsdp_splits_the_widest_dimension_it_divides_from_fsdp_min_size_elements_on():
  """fsdp=4, fsdp_min_size=64: a split dimension must divide evenly (10 does
  not, so the 8 beside it is split), a parameter none of whose dimensions 4
  divides stays whole, and the threshold counts: 64 elements split, 60 do
  not, though 4 divides their first dimension."""
  params = leaves(wide_not_divisible=(10, 8), none_divisible=(10, 7), at_threshold=(4, 16),
                  below_threshold=(4, 15), third_dimension=(10, 6, 4))
  config = mesh_config(data=1, fsdp=-1, fsdp_min_size=64, rules=((".*", "fsdp"),))
  specs = specs_by_name(sharding.param_shardings(
      sharding.abstract_mesh(config, 4), params, config))
  assert specs == {"wide_not_divisible": P(None, "fsdp"), "none_divisible": P(),
                   "at_threshold": P(None, "fsdp"), "below_threshold": P(),
                   "third_dimension": P(None, None, "fsdp")}


def test_the_first_matching_rule_wins_and_replicate_keeps_a_parameter_whole():
  """'replicate' before a catch-all 'fsdp': the head, which both match and
  fsdp could split, stays whole on every device; the rest is split."""
  params = leaves(head__kernel=(64, 16), pre_logits__kernel=(64, 16))
  config = mesh_config(data=1, fsdp=-1, fsdp_min_size=1,
                       rules=(("head/.*", "replicate"), (".*", "fsdp")))
  mesh = sharding.abstract_mesh(config, 8)
  specs = specs_by_name(sharding.param_shardings(mesh, params, config))
  assert specs == {"head/kernel": P(), "pre_logits/kernel": P("fsdp", None)}
  assert sharding.bytes_per_device(params, sharding.param_shardings(mesh, params, config)) == (
      4 * (64 * 16 + 64 * 16 // 8))


def test_a_rule_applies_only_where_its_regex_matches_the_whole_name():
  """'Dense_0/kernel' names the top-level parameter alone: a block's
  MlpBlock_3/Dense_0/kernel ends with it and Dense_0/kernel_scale starts
  with it, and both stay replicated (no rule matched)."""
  params = leaves(Dense_0__kernel=(64, 16), MlpBlock_3__Dense_0__kernel=(64, 16),
                  Dense_0__kernel_scale=(64, 16))
  config = mesh_config(data=1, fsdp=-1, fsdp_min_size=1, rules=(("Dense_0/kernel", "fsdp"),))
  mesh = sharding.abstract_mesh(config, 8)
  specs = specs_by_name(sharding.param_shardings(mesh, params, config))
  assert specs == {"Dense_0/kernel": P("fsdp", None), "MlpBlock_3/Dense_0/kernel": P(),
                   "Dense_0/kernel_scale": P()}
  assert f"MlpBlock_3/Dense_0/kernel (64, 16) -> {P()} (no rule matched)\n" in (
      sharding.describe(mesh, params, config))


def test_bytes_per_device_count_each_parameters_own_dtype():
  """bfloat16 parameters take 2 bytes an element, int8 1: a plan for a
  bfloat16 model is half that of a float32 one."""
  params = {"kernel": jax.ShapeDtypeStruct((64, 16), jnp.bfloat16),
            "codes": jax.ShapeDtypeStruct((64, 16), jnp.int8),
            "scale": jax.ShapeDtypeStruct((16,), jnp.float32)}
  config = mesh_config(data=1, fsdp=-1, fsdp_min_size=1024, rules=((".*", "fsdp"),))
  mesh = sharding.abstract_mesh(config, 8)
  assert sharding.bytes_per_device(params, sharding.param_shardings(mesh, params, config)) == (
      64 * 16 // 8 * 2 + 64 * 16 // 8 * 1 + 16 * 4)


def test_a_batch_is_split_over_data_and_fsdp_and_whole_on_each_model_device():
  """data=2 x fsdp=2 x model=2: four slices of 4 rows, in order, each held
  by the two devices of one model group, which see the same examples."""
  mesh = sharding.make_mesh(mesh_config(data=2, fsdp=2, model=2))
  batch = jax.device_put(np.arange(16 * 3, dtype=np.float32).reshape(16, 3),
                         sharding.batch_sharding(mesh))
  rows_by_device = {shard.device: tuple(np.asarray(shard.data)[:, 0] // 3)
                    for shard in batch.addressable_shards}
  assert sorted(set(rows_by_device.values())) == [
      tuple(range(start, start + 4)) for start in (0, 4, 8, 12)]
  for group in mesh.devices.reshape(-1, 2):  # the model axis is the last
    assert rows_by_device[group[0]] == rows_by_device[group[1]]
