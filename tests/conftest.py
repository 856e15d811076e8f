"""Test set-up: eight emulated CPU devices, no accelerators, no network.

XLA reads XLA_FLAGS when the backend starts, so it is set here, before any
test module imports jax.
"""
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# One JAX persistent compilation cache for the whole session: the test
# processes (pytest-xdist's workers inherit this environment) and the
# commands they start compile the same tiny programs again and again, and
# reading them back took a third off tests/train/test_faults.py. Every
# program is kept, however fast it compiled. A cache of a session's own
# keeps runs from sharing what an older jax or XLA wrote; only the process
# that made it (not a worker, nor a pytest that a test starts) removes it.
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _OWN_CACHE = tempfile.mkdtemp(prefix="vit_jax_tests_jax_cache_")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# The tests' programs are tiny and many: compiling them, not running them,
# is most of the suite's time, and LLVM's optimisations (which change no
# program's HLO, shardings or memory plan) a third of that
# (docs/benchmarks.md, "Test suite"). The commands the tests start inherit
# it, so a run in a subprocess and one in the test compute alike.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# `import tensorflow` imports Keras 3 (and scikit-learn through it) whether
# or not anything uses it: 2 to 3 s of every test process and of every
# command the tests start, which vit_jax never needs. Asked for the legacy
# Keras, tf_keras, which is not installed, TensorFlow skips the import.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import pytest  # noqa: E402  (after the environment above)

NUM_TRAIN, NUM_TEST = 512, 103  # 103: eval batches never divide it evenly


def pytest_unconfigure(config):
  """The session's compilation cache goes with it."""
  if _OWN_CACHE:
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def fashion_data_dir(tmp_path_factory):
  """A data_dir holding a tiny, learnable `fashion_mnist_local` dataset."""
  import fake_data

  manual_dir = tmp_path_factory.mktemp("fashion_manual")
  data_dir = tmp_path_factory.mktemp("fashion_tfds")
  fake_data.write_fashion_mnist_files(manual_dir, num_train=NUM_TRAIN,
                                      num_test=NUM_TEST)
  fake_data.build_fashion_mnist(manual_dir, data_dir)
  return str(data_dir)


def tiny_config(data_dir, **overrides):
  """The demo config shrunk to a model and run that take seconds on CPU."""
  from configs import demo

  config = demo.get_config(f"stage=pretrain,data_dir={data_dir}")
  config.unlock()
  config.model.update(hidden_size=32, num_layers=2, mlp_dim=64, num_heads=2)
  config.update(dict(variant="Ti/4", image_size=16, global_batch=32,
                     eval_batch=40, total_steps=12, log_every=4, eval_every=12,
                     checkpoint_every=4, keep_checkpoints=5))
  config.pp.update(dict(
      train="decode|resize(16)|flip_lr|value_range(-1,1)|onehot(10)",
      eval="decode|resize(16)|value_range(-1,1)|onehot(10)"))
  config.lr.update(dict(base=1e-2, warmup_steps=2))
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
      node = node[part]
    node[leaf] = value
  config.lock()
  return config
