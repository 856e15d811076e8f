"""`steps.training_parts`: the one place a config's model, optimizer and state are built."""
import jax
import numpy as np

from vit_jax.cost import estimate
from vit_jax.train import optim, steps


def tiny_config():
  from configs import pretrain

  config = pretrain.get_config("variant=Ti/4,data=imagenet21k,steps=10")
  config.unlock()
  config.model.update(hidden_size=16, num_layers=1, mlp_dim=32, num_heads=2,
                      **estimate.ACCELERATOR_KERNELS)
  config.data.num_classes = 10
  config.lr.warmup_steps = 2
  config.update(image_size=8, seed=3, ema_decay=0.999)
  config.lock()
  return config


def test_a_jitted_init_takes_the_seed_traced_and_defaults_to_the_configs():
  parts = steps.training_parts(tiny_config(), total_steps=10)
  init = jax.jit(parts.init_params)  # one program for every seed
  default = jax.tree.leaves(jax.jit(lambda: parts.init_params())())
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(init(3)), default))
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(init(4)), default))


def test_the_abstract_state_is_the_initial_states_shapes_with_the_ema_copy():
  parts = steps.training_parts(tiny_config(), total_steps=10)
  state = jax.jit(lambda: parts.initial_state(parts.init_params()))()
  assert jax.tree.structure(parts.abstract_state()) == jax.tree.structure(state)
  assert jax.tree.map(lambda x: (x.shape, x.dtype), parts.abstract_state()) == (
      jax.tree.map(lambda x: (x.shape, x.dtype), state))
  assert "ema_params" in state


def test_the_schedule_decays_over_the_given_total_steps():
  config = tiny_config()
  short = steps.training_parts(config, total_steps=10).schedule
  long = steps.training_parts(config, total_steps=40).schedule
  expected = optim.make_schedule(config.lr, 40)
  assert [long(step) for step in (0, 5, 39)] == [expected(step) for step in (0, 5, 39)]
  assert long(9) > short(9)
