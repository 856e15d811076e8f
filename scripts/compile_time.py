r"""Seconds to compile a config's train step, its blocks unrolled and scanned.

  python scripts/compile_time.py --config=configs/benchmark.py:variant=H/14 --batch=2

The step is `vit_jax.train.steps.jit_train_step`, the function the training
loop compiles, lowered on abstract arguments (`jax.ShapeDtypeStruct`s with
the run's shardings), so neither the parameters nor the optimizer state are
allocated: ViT-H's train state alone would be 7.6 GB in float32. Each
layout is timed in a fresh process of its own (no cache of the other's
traces) and both run on one device. Prints one JSON object:
``{"unrolled_s", "scanned_s", "scanned_over_unrolled"}``.
"""
import json
import os
import subprocess
import sys
import time

from absl import app, flags
from ml_collections import config_flags

from vit_jax.runtime import cli

FLAGS = cli.command_flags(__name__)
_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/benchmark.py", "Config whose train step is compiled.",
    lock_config=True, flag_values=FLAGS)
_BATCH = flags.DEFINE_integer("batch", 2, "Global batch of the step.", lower_bound=1,
                              flag_values=FLAGS)
_ONE = flags.DEFINE_bool("one", False, "Compile the config as given, once, and print "
                         "its seconds (what each layout's process runs).",
                         flag_values=FLAGS)


def compile_seconds(config, batch_size):
  """Seconds to lower and compile ``config``'s train step for ``batch_size`` images."""
  import jax
  import jax.numpy as jnp

  from vit_jax.models import build
  from vit_jax.train import losses, optim, sharding, steps

  mesh = sharding.make_mesh(config.mesh)
  model = build.model_from_config(config)
  schedule = optim.make_schedule(config.lr, config.total_steps)
  tx = optim.make_optimizer(config.optim, schedule)
  abstract = jax.eval_shape(lambda: steps.initial_state(
      build.init_params(model, config.image_size, seed=0), tx, config))
  shardings = sharding.state_shardings(mesh, abstract, config.mesh)
  state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                       abstract, shardings)
  batch_sharding = sharding.batch_sharding(mesh)
  size, classes = config.image_size, config.data.num_classes
  batch = {"image": jax.ShapeDtypeStruct((batch_size, size, size, 3), jnp.float32,
                                         sharding=batch_sharding),
           "labels": jax.ShapeDtypeStruct((batch_size, classes), jnp.float32,
                                          sharding=batch_sharding)}
  step = steps.jit_train_step(model, tx, losses.get_loss(config.loss), schedule, config,
                              mesh, shardings)
  start = time.perf_counter()
  step.lower(state, batch).compile()
  return time.perf_counter() - start


def _last_error(stderr):
  """The last line of a layout process's stderr, which says why it failed: its
  one-line error (``error: `` dropped), or its traceback's exception."""
  lines = [line.strip() for line in stderr.splitlines() if line.strip()]
  if not lines:
    return "it printed nothing on stderr"
  return lines[-1].removeprefix("error: ")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _ONE.value:
    print(compile_seconds(_CONFIG.value, _BATCH.value))
    return
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "1"}
  seconds = {}
  for layout, scan in (("unrolled", False), ("scanned", True)):
    out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--one",
                          f"--config.model.scan={scan}"],
                         env=env, capture_output=True, text=True)
    if out.returncode:
      raise ValueError(f"the {layout} step (--config.model.scan={scan}) did not "
                       f"compile: {_last_error(out.stderr)}")
    seconds[layout] = float(out.stdout.strip().splitlines()[-1])
  print(json.dumps({"unrolled_s": round(seconds["unrolled"], 1),
                    "scanned_s": round(seconds["scanned"], 1),
                    "scanned_over_unrolled": round(seconds["scanned"] / seconds["unrolled"], 3)}))


if __name__ == "__main__":
  cli.run(main)
