"""Tensor (Megatron) parallelism over the mesh's `model` axis.

A tiny ViT (hidden 64, 4 heads, MLP 128, 2 layers, 32 px, patch 8), so that
each train step compiles in seconds on CPU.
"""
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from conftest import tiny_config
from test_sharding import losses_of, mesh_config, params_of, specs_by_name
from vit_jax import models, train, tree_util
from vit_jax.models import build
from vit_jax.train import config_checks, losses, optim, sharding, steps

# The dimension (from the end) that the default rules split over `model`.
MODEL_DIMS = {"query/kernel": -2, "key/kernel": -2, "value/kernel": -2,
              "query/bias": -2, "key/bias": -2, "value/bias": -2, "out/kernel": -3,
              "Dense_0/kernel": -1, "Dense_0/bias": -1, "Dense_1/kernel": -2}
# ViT-22B's changes, with the blocks scanned (a leading layer axis).
VIT_22B_STYLE = {"model.parallel_block": True, "model.qk_norm": True,
                 "model.use_bias": False, "model.classifier": "map", "model.scan": True}


def tiny_vit_config(workdir, **overrides):
  return tiny_config(workdir, variant="Ti/8", image_size=32, global_batch=16, **{
      "model.hidden_size": 64, "model.num_heads": 4, "model.mlp_dim": 128,
      "model.num_layers": 2, "optim.name": "sgd", "lr.warmup_steps": 0,
      "mesh.fsdp_min_size": 1024,
      **overrides})


def one_step(config, state, batch):
  """The compiled train step on ``config.mesh``, and what it returns."""
  mesh = sharding.make_mesh(config.mesh)
  model = build.model_from_config(config)
  schedule = optim.make_schedule(config.lr, config.total_steps)
  tx = optim.make_optimizer(config.optim, schedule)
  shardings = sharding.state_shardings(mesh, jax.eval_shape(lambda: state), config.mesh)
  compiled = steps.jit_train_step(
      model, tx, losses.get_loss(config.loss), schedule, config, mesh, shardings,
  ).lower(state, batch).compile()
  new_state, metrics = compiled(jax.device_put(state, shardings),
                                jax.device_put(batch, sharding.batch_sharding(mesh)))
  return compiled, new_state, metrics


@pytest.mark.parametrize("options, model_split", [({}, 2 * 10), (VIT_22B_STYLE, 7 + 10)],
                         ids=["vit", "vit_22b_style_scanned"])
def test_a_megatron_step_equals_the_data_parallel_step_and_splits_the_work(
    tmp_path, options, model_split):
  """data=2 x fsdp=2 x model=2 against data=8: the same loss and parameters
  (SGD with momentum: Adam would magnify rounding noise, see test_sharding),
  the heads and MLP units of the parameters and momenta split over `model`
  (``model_split`` of them: 10 a block, 7 a scanned 22B block without q/k/v
  biases, 10 in its MAP head), and each device doing about an eighth of the
  work, where a model axis that only replicated the computation would leave
  it a quarter."""
  data_parallel = tiny_vit_config(str(tmp_path), **options)
  megatron = tiny_vit_config(str(tmp_path), **options, **{
      "mesh.data": 2, "mesh.fsdp": 2, "mesh.model": 2})
  tx = optim.make_optimizer(data_parallel.optim, optim.make_schedule(
      data_parallel.lr, data_parallel.total_steps))

  @jax.jit  # one compilation instead of an eager init's many small ones
  def initial_state():
    params = build.init_params(build.model_from_config(data_parallel), 32, seed=0)
    # A head that is not zero, so the step moves every parameter.
    params["head"]["kernel"] = 0.1 * jax.random.normal(
        jax.random.key(2), params["head"]["kernel"].shape)
    return steps.initial_state(params, tx, data_parallel)

  # On the host: each layout puts its own copy on the devices (the step
  # donates it) without compiling a reshard for every shape.
  state = jax.device_get(initial_state())
  batch = {"image": np.random.default_rng(1).normal(size=(16, 32, 32, 3)).astype(np.float32),
           "labels": np.eye(10, dtype=np.float32)[np.arange(16) % 10]}
  dp_step, dp_state, dp_metrics = one_step(data_parallel, state, batch)
  tp_step, tp_state, tp_metrics = one_step(megatron, state, batch)

  np.testing.assert_allclose(tp_metrics["loss"], dp_metrics["loss"], rtol=1e-6)
  np.testing.assert_allclose(tp_metrics["grad_norm"], dp_metrics["grad_norm"], rtol=1e-5)
  before = dict(tree_util.flatten_named(state["params"]))
  after = tree_util.flatten_named(tp_state["params"])
  moved = [name for name, leaf in after if not np.allclose(leaf, before[name])]
  assert sum(name.endswith("/query/kernel") for name in moved) in (2, 3)  # blocks, MAP
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               dp_state["params"], tp_state["params"])

  specs = specs_by_name(jax.tree.map(lambda x: x.sharding, tp_state))
  split = 0
  for name, leaf in after:
    spec = tuple(leaf.sharding.spec) + (None,) * (leaf.ndim - len(leaf.sharding.spec))
    dim = next((d for suffix, d in MODEL_DIMS.items() if name.endswith("/" + suffix)), None)
    assert (dim is not None and spec[dim] == "model") or "model" not in spec, (name, spec)
    split += dim is not None
    assert specs[f"opt_state/1/trace/{name}"] == leaf.sharding.spec, name  # the momentum
    if name.endswith("/query/kernel"):  # (layers?, 64, 4, 16): hidden over fsdp
      assert spec[-3:] == ("fsdp", "model", None), (name, spec)
  assert split == model_split

  flops = [step.cost_analysis()["flops"] for step in (dp_step, tp_step)]
  assert flops[1] < 1.25 * flops[0], flops  # measured 1.09; 2.0 if replicated


def test_rules_count_dimensions_from_the_end_under_a_stacked_layer_axis():
  """Scan-over-layers names and shapes (a leading axis of 12 layers), a MAP
  head, and qk LayerNorms on an abstract 2 x 2 x 2 mesh: the default rules
  split heads and MLP units over `model` either way."""
  def leaf(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)
  block = {"MultiHeadDotProductAttention_1": {
               "query": {"kernel": leaf(12, 64, 4, 16), "bias": leaf(12, 4, 16)},
               "out": {"kernel": leaf(12, 4, 16, 64), "bias": leaf(12, 64)},
               "query_ln": {"scale": leaf(12, 16)}},
           "MlpBlock_3": {"Dense_0": {"kernel": leaf(12, 64, 128), "bias": leaf(12, 128)},
                          "Dense_1": {"kernel": leaf(12, 128, 64)}}}
  params = {"Transformer": {"encoderblock": block},
            "MAPHead_0": {"MultiHeadDotProductAttention_0": {
                              "key": {"kernel": leaf(64, 4, 16)}},
                          "MlpBlock_0": {"Dense_1": {"kernel": leaf(128, 64)}}}}
  # 2048: kernels over fsdp too, biases over model alone.
  config = mesh_config(data=2, fsdp=2, model=2, fsdp_min_size=2048)
  mesh = sharding.abstract_mesh(config, 8)
  # A factored second moment: a row vector per layer, not the kernel's shape.
  state = {"params": params, "opt_state": {
      "mu": params, "v_row": {"Transformer": {"encoderblock": {"MlpBlock_3": {
          "Dense_0": {"kernel": leaf(12, 64)}}}}}}}
  specs = specs_by_name(sharding.state_shardings(mesh, state, config))
  stacked = "params/Transformer/encoderblock"
  assert specs[f"{stacked}/MultiHeadDotProductAttention_1/query/kernel"] == P(
      None, "fsdp", "model", None)
  assert specs[f"{stacked}/MultiHeadDotProductAttention_1/query/bias"] == P(None, "model", None)
  assert specs[f"{stacked}/MultiHeadDotProductAttention_1/out/kernel"] == P(
      None, "model", None, "fsdp")
  assert specs[f"{stacked}/MultiHeadDotProductAttention_1/query_ln/scale"] == P()
  assert specs[f"{stacked}/MlpBlock_3/Dense_0/kernel"] == P(None, "fsdp", "model")
  assert specs[f"{stacked}/MlpBlock_3/Dense_0/bias"] == P(None, "model")
  assert specs[f"{stacked}/MlpBlock_3/Dense_1/kernel"] == P(None, "model", "fsdp")
  assert specs["params/MAPHead_0/MultiHeadDotProductAttention_0/key/kernel"] == P(
      "fsdp", "model", None)
  assert specs["params/MAPHead_0/MlpBlock_0/Dense_1/kernel"] == P("model", "fsdp")
  assert specs["opt_state/mu/Transformer/encoderblock/MlpBlock_3/Dense_1/kernel"] == P(
      None, "model", "fsdp")
  assert specs["opt_state/v_row/Transformer/encoderblock/MlpBlock_3/Dense_0/kernel"] == P()
  # Per device: the kernels 1/4 (model and fsdp), the Dense_0 bias 1/2.
  mlp = {"Transformer": {"encoderblock": {"MlpBlock_3": {
      "Dense_0": block["MlpBlock_3"]["Dense_0"]}}}}
  assert sharding.bytes_per_device(mlp, sharding.param_shardings(mesh, mlp, config)) == (
      4 * (12 * 64 * 128 // 4 + 12 * 128 // 2))
  text = sharding.describe(mesh, params, config)
  assert text.startswith("mesh {'data': 2, 'fsdp': 2, 'model': 2}")
  assert (f"Transformer/encoderblock/MlpBlock_3/Dense_0/kernel (12, 64, 128) -> "
          f"{P(None, 'fsdp', 'model')}\n") in text


def test_with_one_model_device_the_default_rules_lay_out_a_vit_as_fsdp_does():
  params = build.abstract_params(
      models.get_model("Ti/8", num_classes=10, hidden_size=64, num_heads=4,
                       mlp_dim=128, num_layers=2), 32)
  for data, fsdp in ((-1, 1), (2, 4), (1, -1)):
    defaults = mesh_config(data=data, fsdp=fsdp, fsdp_min_size=1024)
    fsdp_only = mesh_config(data=data, fsdp=fsdp, fsdp_min_size=1024, rules=((".*", "fsdp"),))
    mesh = sharding.make_mesh(defaults)
    assert (specs_by_name(sharding.param_shardings(mesh, params, defaults))
            == specs_by_name(sharding.param_shardings(mesh, params, fsdp_only)))


def test_bad_model_rules_and_sizes_name_the_key_the_parameter_and_the_axis(tmp_path):
  kernel = {"Block": {"MlpBlock_3": {"Dense_1": {
      "kernel": jax.ShapeDtypeStruct((6, 64), jnp.float32)}}}}
  name = "Block/MlpBlock_3/Dense_1/kernel"
  mesh = sharding.abstract_mesh(mesh_config(data=2, model=4), 8)
  for rule in ("model:1", "model:-0", "model", "model:-x"):
    config = mesh_config(rules=((".*", rule),))
    with pytest.raises(ValueError, match=(
        rf"config.mesh.rules entry \('.\*', '{rule}'\): expected \(regex, rule\) with "
        r"rule one of fsdp, replicate, model:D \(D < 0, a dimension counted from the end")):
      sharding.param_shardings(mesh, kernel, config)
  with pytest.raises(ValueError, match=(
      rf"config.mesh.model=4 does not divide dimension -2 \(size 6\) of {name} \(6, 64\), "
      rf"which config.mesh.rules split over the model axis; .* replicates {name}")):
    sharding.param_shardings(mesh, kernel, mesh_config())
  # A rule that names a dimension the parameter lacks fails on one device too.
  with pytest.raises(ValueError, match=(
      rf"config.mesh.rules give {name} \(6, 64\) the rule 'model:-3', but it has 2 "
      r"dimensions")):
    sharding.param_shardings(sharding.abstract_mesh(mesh_config(), 1), kernel,
                             mesh_config(rules=((".*", "model:-3"),)))
  for sizes in ({"model": 3}, {"data": -1, "fsdp": -1, "model": 2}, {"model": 0}):
    with pytest.raises(ValueError, match=(
        r"config.mesh data=.* x fsdp=.* x model=.* does not cover the 8 devices")):
      sharding.make_mesh(mesh_config(**sizes))
  with pytest.raises(ValueError, match=r"config.mesh data=-1 x fsdp=1 x model=3 does not "
                     r"cover the 8 devices"):
    config_checks.check_config(tiny_vit_config(str(tmp_path), **{"mesh.model": 3}),
                               num_devices=8, process_count=1)
  # Each process feeds its own examples, so a model group must stay in one.
  devices = np.array([types.SimpleNamespace(process_index=i // 2) for i in range(8)])
  for model, fits in ((2, True), (4, False)):
    mesh = types.SimpleNamespace(devices=devices.reshape(8 // model, 1, model),
                                 shape={"model": model})
    if fits:
      sharding._check_model_groups_in_one_process(mesh)
    else:
      with pytest.raises(ValueError, match=r"config.mesh.model=4 spans several processes"):
        sharding._check_model_groups_in_one_process(mesh)


@pytest.mark.slow
def test_a_batch_only_the_data_axes_divide_trains_under_a_model_axis(fashion_data_dir, tmp_path):
  """The devices of a model group share their examples, so data=2 x model=4
  on 8 devices takes a global batch of 2 (every slice one example), and
  trains as data parallelism on 2 devices does; 3 is refused by name."""
  overrides = dict(global_batch=2, eval_batch=8, total_steps=2, log_every=1, eval_every=2,
                   checkpoint_every=2, **{"optim.name": "sgd", "lr.warmup_steps": 0,
                                          "model.num_heads": 4})
  data_parallel = str(tmp_path / "data")
  train.train_and_evaluate(tiny_config(fashion_data_dir, **overrides), data_parallel,
                           devices=jax.devices()[:2])
  megatron = str(tmp_path / "megatron")
  train.train_and_evaluate(tiny_config(fashion_data_dir, **overrides, **{
      "mesh.data": 2, "mesh.model": 4}), megatron)
  data, split = params_of(data_parallel), params_of(megatron)
  assert not np.allclose(data["head"]["kernel"], 0)  # zero-initialised head moved
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               data, split)
  np.testing.assert_allclose(list(losses_of(megatron).values()),
                             list(losses_of(data_parallel).values()), rtol=1e-6)
  with pytest.raises(ValueError, match=re.escape(
      "config.global_batch=3 must be divisible by config.accum_steps=1 x 2 batch shards "
      "(the 8 devices over config.mesh.model=4)")):
    config_checks.check_config(tiny_config(fashion_data_dir, **{
        **overrides, "global_batch": 3, "mesh.data": 2, "mesh.model": 4}),
        num_devices=8, process_count=1)


def test_the_batch_checks_count_batch_shards_micro_batches_and_processes(tmp_path):
  """data=2 x model=4 on 8 devices cuts a batch in 2 slices, not 8: a batch
  of 2 passes; so does each micro-batch of 2 under accum_steps=2, where
  micro-batches of 1 are refused; and a batch must divide among the
  processes too (lcm(2, 3) = 6)."""
  def check(process_count=1, **overrides):
    config_checks.check_config(
        tiny_config(str(tmp_path), **{"mesh.data": 2, "mesh.model": 4, "eval_batch": 8,
                                      **overrides}),
        num_devices=8, process_count=process_count)

  assert config_checks.batch_shards(mesh_config(data=2, model=4), 8) == (
      2, "2 batch shards (the 8 devices over config.mesh.model=4)")
  assert config_checks.batch_shards(mesh_config(data=2, fsdp=-1), 8) == (8, "8 devices")
  check(global_batch=2)
  check(global_batch=4, accum_steps=2)
  with pytest.raises(ValueError, match=re.escape(
      "config.global_batch=2 must be divisible by config.accum_steps=2 x 2 batch shards "
      "(the 8 devices over config.mesh.model=4); e.g. 4")):
    check(global_batch=2, accum_steps=2)
  check(global_batch=6, eval_batch=6, process_count=3)
  with pytest.raises(ValueError, match=re.escape(
      "config.global_batch=16 must be divisible by the 2 batch shards (the 8 devices over "
      "config.mesh.model=4) and the 3 processes; e.g. 12 or 18")):
    check(global_batch=16, process_count=3)
