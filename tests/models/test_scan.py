"""Scan over layers: the same model, and one layout in every file.

A scanned model must compute what the unrolled one computes from the same
(stacked) parameters, and whatever a run used, its npz export, its orbax
checkpoints and the files it loads are interchangeable with the unrolled
model's (`vit_jax.models.layer_stack`).
"""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import common
from trees import assert_trees_close, assert_trees_equal
from vit_jax import models, tree_util
from vit_jax.inference import export
from vit_jax.models import layer_stack, npz, pretrained
from vit_jax.train import checkpoints, optim, resume, sharding, steps

TINY = dict(hidden_size=32, num_layers=3, mlp_dim=64, num_heads=4)
IMAGES = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3), minval=-1, maxval=1)
LABELS = jax.nn.one_hot(jnp.array([1, 7]), 10)


def tiny_model(**overrides):
  return models.get_model("B/8", num_classes=10, **{**TINY, **overrides})


@functools.partial(jax.jit, static_argnames="model")
def init(model):
  params = model.init(jax.random.key(1), IMAGES, train=False)["params"]
  # The head starts at zero, which would hide every difference in the logits.
  head = params["head"]
  return {**params, "head": {**head, "kernel": 0.1 * jax.random.normal(
      jax.random.key(2), head["kernel"].shape)}}


@functools.partial(jax.jit, static_argnames="model")
def loss_and_grads(model, params):
  def loss(params):
    logits = model.apply({"params": params}, IMAGES, train=True)
    return optax.sigmoid_binary_cross_entropy(logits, LABELS).mean(), logits
  (value, logits), grads = jax.value_and_grad(loss, has_aux=True)(params)
  return value, logits, grads


@pytest.fixture(scope="module")
def unrolled_params():
  return init(tiny_model())


def test_scanned_blocks_are_one_subtree_with_a_leading_layer_axis(unrolled_params):
  scanned = jax.eval_shape(lambda: init(tiny_model(scan=True)))
  shapes = {name: leaf.shape for name, leaf in tree_util.flatten_named(scanned)}
  unrolled = {name: leaf.shape for name, leaf in tree_util.flatten_named(unrolled_params)}
  block_0 = "Transformer/encoderblock_0/"
  per_layer = {n[len(block_0):]: s for n, s in unrolled.items() if n.startswith(block_0)}
  assert {n[len("Transformer/encoderblock/"):]: s[1:] for n, s in shapes.items()
          if n.startswith("Transformer/encoderblock/")} == per_layer
  assert {s[0] for n, s in shapes.items() if "/encoderblock/" in n} == {3}
  outside = {n: s for n, s in unrolled.items() if "/encoderblock_" not in n}
  assert {n: s for n, s in shapes.items() if "/encoderblock/" not in n} == outside
  # The unrolled parameters, stacked, are exactly the scanned model's tree,
  # and unstacking gives them back bit for bit.
  stacked = layer_stack.stack(unrolled_params)
  assert jax.tree.structure(stacked) == jax.tree.structure(scanned)
  assert_trees_equal(layer_stack.unstack(stacked), unrolled_params)


@pytest.fixture(scope="module")
def unrolled_results(unrolled_params):
  """The unrolled model's loss, logits and gradients (remat changes none of them)."""
  return loss_and_grads(tiny_model(), unrolled_params)


@pytest.mark.parametrize("remat", [False, True])
def test_scanned_loss_logits_and_gradients_equal_the_unrolled_models(
    unrolled_params, unrolled_results, remat):
  loss, logits, grads = unrolled_results
  scanned_loss, scanned_logits, scanned_grads = loss_and_grads(
      tiny_model(remat=remat, scan=True), layer_stack.stack(unrolled_params))
  np.testing.assert_allclose(scanned_loss, loss, rtol=1e-6)
  np.testing.assert_allclose(scanned_logits, logits, rtol=1e-5, atol=1e-6)
  assert_trees_close(layer_stack.unstack(scanned_grads), grads, rtol=1e-5, atol=1e-6)


def test_npz_export_of_a_scanned_model_equals_the_unrolled_models(tmp_path, unrolled_params):
  npz.save_npz(unrolled_params, tmp_path / "unrolled.npz")
  npz.save_npz(layer_stack.stack(unrolled_params), tmp_path / "scanned.npz")
  with np.load(tmp_path / "unrolled.npz") as a, np.load(tmp_path / "scanned.npz") as b:
    assert sorted(a.files) == sorted(b.files)
    assert "Transformer/encoderblock_2/MlpBlock_3/Dense_0/kernel" in a.files
    for name in a.files:
      np.testing.assert_array_equal(b[name], a[name], err_msg=name)


def test_a_published_layout_file_fine_tunes_a_scanned_model(tmp_path, unrolled_params):
  path = str(tmp_path / "published.npz")
  npz.save_npz(unrolled_params, path)
  scanned_init = layer_stack.stack(jax.device_get(unrolled_params))
  scanned_init["head"] = {"kernel": np.zeros((32, 10), np.float32),
                          "bias": np.zeros(10, np.float32)}
  loaded = pretrained.load_pretrained(path, scanned_init, new_grid=(2, 2),
                                      num_prefix_tokens=1)
  want = layer_stack.stack(jax.device_get(unrolled_params))
  want["head"] = scanned_init["head"]  # fine-tuning's fresh head
  assert_trees_equal(loaded, want)


def train_state_fn(config):
  """params -> the train state of ``config``'s optimizer, compiled once."""
  tx = optim.make_optimizer(config.optim, optax.constant_schedule(1e-3))

  @jax.jit
  def train_state(params):
    state = steps.initial_state(params, tx, config)
    # One update, so that Adam's moments are no longer zeros (nor all alike).
    _, state["opt_state"] = tx.update(params, state["opt_state"], params)
    return state
  return train_state


def test_an_orbax_checkpoint_of_a_scanned_run_resumes_unrolled_and_back(
    tmp_path, unrolled_params):
  """Parameters, their EMA and Adam's moments, split over an FSDP mesh."""
  config = common.base_config()
  config.ema_decay = 0.9
  mesh_config = ml_collections.ConfigDict(
      dict(data=2, fsdp=4, fsdp_min_size=0, rules=((".*", "fsdp"),)))
  mesh = sharding.make_mesh(mesh_config)
  train_state = train_state_fn(config)

  def target(params):
    """The abstract train state of ``params``, as the run lays it on the mesh."""
    abstract = jax.eval_shape(train_state, params)
    shardings = sharding.state_shardings(mesh, abstract, mesh_config)
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shardings)

  scanned_target = target(layer_stack.stack(unrolled_params))
  scanned = jax.device_put(train_state(layer_stack.stack(unrolled_params)),
                           jax.tree.map(lambda a: a.sharding, scanned_target))
  unrolled_target = target(unrolled_params)
  progress = {"examples_seen": 64, "train_seconds": 1.0}

  scanned_run = checkpoints.make_manager(str(tmp_path / "scanned"))
  checkpoints.save(scanned_run, 4, scanned, progress)
  checkpoints.wait(scanned_run)
  resume.check_resumable(scanned_run, 4, unrolled_target, workdir=str(tmp_path))
  restored = checkpoints.restore(scanned_run, 4, unrolled_target)
  assert restored["progress"] == progress
  unrolled = restored["state"]
  assert_trees_equal(jax.device_get(unrolled),
                     layer_stack.unstack(jax.device_get(scanned)))
  assert (jax.tree.map(lambda a: a.sharding, unrolled)
          == jax.tree.map(lambda a: a.sharding, unrolled_target))

  unrolled_run = checkpoints.make_manager(str(tmp_path / "unrolled"))
  checkpoints.save(unrolled_run, 8, unrolled, progress)
  checkpoints.wait(unrolled_run)
  resume.check_resumable(unrolled_run, 8, scanned_target, workdir=str(tmp_path))
  back = checkpoints.restore(unrolled_run, 8, scanned_target)["state"]
  assert_trees_equal(jax.device_get(back), jax.device_get(scanned))
  assert (jax.tree.map(lambda a: a.sharding, back)
          == jax.tree.map(lambda a: a.sharding, scanned_target))
  # Fine-tuning and inference read the scanned run in the published layout.
  assert_trees_equal(pretrained.read_params(str(tmp_path / "scanned")),
                     layer_stack.unstack(jax.device_get(scanned["ema_params"])))
  # Another model is refused, named as the run that resumes calls its parameters.
  wider = jax.eval_shape(lambda: train_state(init(tiny_model(mlp_dim=128))))
  with pytest.raises(ValueError, match=r"parameter Transformer/encoderblock_0/MlpBlock_3/"
                     r"Dense_0/bias has shape \(64,\) in the checkpoint but \(128,\)"):
    resume.check_resumable(scanned_run, 4, wider, workdir=str(tmp_path))


def test_a_scanned_model_draws_each_layers_initial_values_afresh():
  """nn.scan splits the init key per layer, as the unrolled model gives each
  block its own: a from-scratch scanned run whose layers started as copies
  of one another would train another model."""
  stacked = init(tiny_model(scan=True))["Transformer"]["encoderblock"]
  kernels = [(name, leaf) for name, leaf in tree_util.flatten_named(stacked)
             if name.endswith("kernel")]
  assert len(kernels) == 6  # query, key, value, out, and the MLP's two
  for name, leaf in kernels:
    for i in range(3):
      for j in range(i):
        assert not np.array_equal(leaf[i], leaf[j]), (name, i, j)


def test_stacking_orders_twelve_blocks_by_number_not_by_name():
  """ViT-B has 12 blocks, and as strings 'encoderblock_10' sorts before
  'encoderblock_2': stacked in that order, a scanned model would run a
  published checkpoint's blocks out of order."""
  tree = {"Transformer": {layer_stack.block_name(i): {"w": np.full(2, i, np.float32)}
                          for i in reversed(range(12))}}
  stacked = layer_stack.stack(tree)
  np.testing.assert_array_equal(stacked["Transformer"]["encoderblock"]["w"][:, 0],
                                np.arange(12))
  assert_trees_equal(layer_stack.unstack(stacked), tree)


def test_blocks_that_skip_a_number_are_refused_when_stacked():
  tree = {"Transformer": {"encoderblock_0": {"w": np.zeros(2)},
                          "encoderblock_2": {"w": np.zeros(2)}}}
  with pytest.raises(ValueError, match=r"not numbered 0\.\.1; cannot stack them"):
    layer_stack.stack(tree)


def fsdp_temp_bytes(*, num_layers, fsdp):
  """XLA's temporary bytes a device for a scanned, rematerialised model's
  gradients, and the bytes of one layer's parameters.

  Eight devices, four examples each, the parameters split over ``fsdp`` of
  them (data parallel over the rest), traced under the mesh as the train
  step is, so that the model's activations keep the batch split.
  """
  model = models.get_model(
      "B/4", num_classes=10, hidden_size=64, num_layers=num_layers, mlp_dim=256,
      num_heads=2, scan=True, remat=True, attention_implementation="dot_product_attention",
      layer_norm_implementation="flax", dense_implementation="flax")
  mesh_config = ml_collections.ConfigDict(
      dict(data=8 // fsdp, fsdp=fsdp, model=1, fsdp_min_size=0, rules=((".*", "fsdp"),)))
  mesh = sharding.make_mesh(mesh_config)
  batch = sharding.batch_sharding(mesh)
  images = jax.ShapeDtypeStruct((32, 32, 32, 3), jnp.float32, sharding=batch)
  labels = jax.ShapeDtypeStruct((32, 10), jnp.float32, sharding=batch)
  params = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)["params"])
  shardings = sharding.param_shardings(mesh, params, mesh_config)
  params = jax.tree.map(lambda p, s: jax.ShapeDtypeStruct(p.shape, p.dtype, sharding=s),
                        params, shardings)

  def grads(params, images, labels):
    def loss(params):
      logits = model.apply({"params": params}, images, train=True)
      return optax.sigmoid_binary_cross_entropy(logits, labels).mean()
    return jax.grad(loss)(params)

  with jax.set_mesh(mesh):
    compiled = jax.jit(grads, out_shardings=shardings).lower(params, images, labels).compile()
  print(f"{num_layers} layers, fsdp={fsdp}: {compiled.memory_analysis().temp_size_in_bytes:,} "
        "temporary bytes a device")
  layer_bytes = sum(p.size * p.dtype.itemsize for p in jax.tree.leaves(
      params["Transformer"][layer_stack.STACKED_BLOCKS])) // num_layers
  return compiled.memory_analysis().temp_size_in_bytes, layer_bytes


def test_scan_with_fsdp_keeps_a_devices_share_of_the_batch_and_one_layer_at_a_time():
  """FSDP's activations are data parallel's, and a layer costs the input it keeps.

  Measured (XLA:CPU, jax 0.10.2): 2,471,848 bytes with fsdp=8 against
  2,791,568 data parallel; 6,393,056 with fsdp=8 before the model split its
  activations over the batch axes, when XLA carried the parameters' split of
  the hidden units into the scan's loop and kept the whole batch on every
  device. Two more layers cost 133,120 bytes: their two block inputs
  (4 x 65 tokens x 64 x 4 bytes each), not their gathered weights.
  """
  fsdp_2_layers, layer_bytes = fsdp_temp_bytes(num_layers=2, fsdp=8)
  assert fsdp_2_layers <= fsdp_temp_bytes(num_layers=2, fsdp=1)[0]
  per_layer = (fsdp_temp_bytes(num_layers=4, fsdp=8)[0] - fsdp_2_layers) / 2
  block_input = 4 * 65 * 64 * 4  # examples x tokens x hidden, float32
  # At most the input it keeps and a device's share of its gradient; all
  # layers' gathered weights held at once would add layer_bytes a layer.
  assert per_layer <= block_input + layer_bytes / 8, (per_layer, layer_bytes)


def distinct_rows(logits):
  """The distinct rows of ``logits`` (within float32 rounding) and their counts."""
  rows, counts = [], []
  for row in np.asarray(logits):
    for i, seen in enumerate(rows):
      if np.allclose(row, seen, rtol=1e-4, atol=1e-5):
        counts[i] += 1
        break
    else:
      rows.append(row)
      counts.append(1)
  return np.stack(rows), np.asarray(counts)


def test_stochastic_depth_drops_the_same_branches_scanned_or_unrolled():
  # Two blocks: the first's rate is 0 and the second's the whole 0.5, so 256
  # copies of one image end in one of four outcomes (the second block's
  # attention and MLP each kept, scaled by 2, or dropped), a quarter each.
  unrolled = tiny_model(num_layers=2, drop_path_rate=0.5)
  params = init(tiny_model(num_layers=2))
  images = jnp.repeat(IMAGES[:1], 256, axis=0)
  outcomes = {}
  for scan in (False, True):
    model = unrolled.clone(scan=scan)
    logits = jax.jit(model.apply, static_argnames="train")(
        {"params": layer_stack.stack(params) if scan else params}, images,
        train=True, rngs={"dropout": jax.random.key(scan)})
    outcomes[scan] = distinct_rows(logits)
  for rows, counts in outcomes.values():
    assert len(rows) == 4 and counts.min() > 256 * 0.15, counts
  for row in outcomes[True][0]:  # the same four outcomes
    assert min(np.abs(row - other).max() for other in outcomes[False][0]) < 1e-4
  # Both branches dropped: the second block passes its input on, so the
  # model is its first block alone.
  first_block_only = {**params, "Transformer": {
      k: v for k, v in params["Transformer"].items() if k != "encoderblock_1"}}
  expected = export.model_logits(tiny_model(num_layers=1), first_block_only, images[:1])
  assert min(np.abs(row - expected[0]).max() for row in outcomes[False][0]) < 1e-5


def test_an_adafactor_run_is_refused_a_resume_that_switches_scan(tmp_path, unrolled_params):
  """Adafactor keeps a stacked array's second moment by its own shape (a
  (layers, D) bias may be factored), so it is no stack of the layers' own."""
  config = common.base_config()
  config.optim.name = "adafactor"
  train_state = train_state_fn(config)
  run = checkpoints.make_manager(str(tmp_path / "run"))
  checkpoints.save(run, 4, train_state(unrolled_params), {"examples_seen": 64,
                                                          "train_seconds": 1.0})
  checkpoints.wait(run)
  resume.check_resumable(run, 4, jax.eval_shape(train_state, unrolled_params),
                         workdir=str(tmp_path))
  scanned = jax.eval_shape(train_state, layer_stack.stack(unrolled_params))
  with pytest.raises(ValueError) as error:
    resume.check_resumable(run, 4, scanned, workdir=str(tmp_path))
  assert str(error.value) == (
      f"{tmp_path}/run/checkpoints/4 was written with model.scan=False, and Adafactor's "
      f"factored second moments of stacked layers are not those of separate ones; resume "
      f"it with --config.model.scan=False (as {tmp_path}/config.json says)")
