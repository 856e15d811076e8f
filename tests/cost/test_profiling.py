"""`profiling`: a train step's trace, and its kernels ranked by device time."""
import gzip
import json
import re

import jax
import jax.numpy as jnp
import pytest

from vit_jax.cost import benchmarking, profiling

STEPS = 2
HLO_NAME = re.compile(r"^[a-z][a-z0-9_-]*(\.\d+)?$")  # e.g. ynn_fusion.41, all-reduce.2


def tiny_config():
  from configs import benchmark

  config = benchmark.get_config("variant=Ti/16,res=32")
  config.unlock()
  config.model.update(hidden_size=32, num_layers=2, mlp_dim=64, num_heads=2)
  config.data.num_classes = 10
  config.lock()
  return config


@pytest.fixture(scope="module")
def cpu_trace(tmp_path_factory):
  step = benchmarking.TrainStep(tiny_config(), batch_size=8)
  step.run()  # warm-up
  logdir = tmp_path_factory.mktemp("profile")
  return profiling.profile_train_step(step, steps=STEPS, logdir=logdir), logdir


def test_the_trace_is_the_perfetto_json_of_the_run_in_the_logdir(cpu_trace):
  trace, logdir = cpu_trace
  assert trace.startswith(str(logdir / "plugins" / "profile"))
  assert trace.endswith("/perfetto_trace.json.gz")
  with gzip.open(trace) as f:
    assert json.load(f)["traceEvents"]


def test_on_cpu_the_top_xla_ops_run_once_per_step_on_every_device(cpu_trace):
  result = profiling.top_kernels(cpu_trace[0], n=5, steps=STEPS)
  devices = jax.device_count()  # 8, from conftest
  assert (result["source"], result["devices"]) == (profiling.CPU_XLA_OPS, devices)
  rows = result["top_kernels"]
  assert len(rows) == 5
  totals = [row["total_ms"] for row in rows]
  assert totals == sorted(totals, reverse=True)
  assert 0 < sum(row["share_pct"] for row in rows) <= 100
  for row in rows:
    assert HLO_NAME.match(row["name"]), row["name"]
    assert row["count"] == STEPS * devices, row  # no loops in this model
    assert row["ms_per_step"] == pytest.approx(row["total_ms"] / (STEPS * devices))
    assert row["share_pct"] == pytest.approx(100 * row["total_ms"] / result["busy_ms"])
  assert result["busy_ms_per_step"] == pytest.approx(result["busy_ms"] / (STEPS * devices))


def test_on_cpu_every_op_is_counted_and_the_shares_add_up_to_all(cpu_trace):
  rows = profiling.top_kernels(cpu_trace[0], n=10**6, steps=STEPS)["top_kernels"]
  assert sum(row["share_pct"] for row in rows) == pytest.approx(100)
  assert any("fusion" in row["name"] for row in rows)
  # The matmuls: XLA's dots, or the YNNPACK fusions XLA:CPU makes of them.
  assert any(row["name"].startswith(("dot", "ynn_fusion")) for row in rows)


class _ScanStep:
  """A jitted three-iteration loop, run as `profile_train_step` runs a step."""

  def __init__(self):
    def body(carry, _):
      return jnp.tanh(carry @ carry) + 1, None
    self.loop = jax.jit(lambda x: jax.lax.scan(body, x, None, length=3)[0])
    self.x = jnp.ones((64, 64))
    self.out = self.loop(self.x)

  def run(self):
    self.out = self.loop(self.x)

  def sync(self):
    self.out.block_until_ready()


def test_on_cpu_a_while_loop_counts_its_body_not_its_own_span(tmp_path):
  trace = profiling.profile_train_step(_ScanStep(), steps=STEPS, logdir=tmp_path)
  result = profiling.top_kernels(trace, n=100, steps=STEPS)
  names = [row["name"] for row in result["top_kernels"]]
  assert not any(name.startswith("while") for name in names), names
  # The body runs three times a step; the matmul is in every run of it.
  assert 3 * STEPS in {row["count"] for row in result["top_kernels"]}


def _gpu_trace(path):
  """A GPU run as jax's profiler writes it: host threads, a device's streams."""
  events = [
      {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/host:CPU"}},
      {"ph": "M", "pid": 1, "tid": 5, "name": "thread_name", "args": {"name": "python"}},
      {"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "/device:GPU:0"}},
      {"ph": "M", "pid": 2, "tid": 7, "name": "thread_name",
       "args": {"name": "Stream #7(Kernel)"}},
      {"ph": "M", "pid": 2, "tid": 8, "name": "thread_name",
       "args": {"name": "Stream #8(MemcpyH2D)"}},
      {"ph": "M", "pid": 2, "tid": 9, "name": "thread_name",
       "args": {"name": "CUPTI overhead"}},
      # The host: Python, and an op launched from it; neither is device time.
      {"ph": "X", "pid": 1, "tid": 5, "ts": 0, "dur": 5000, "name": "PjitFunction(f)"},
      {"ph": "X", "pid": 1, "tid": 5, "ts": 10, "dur": 900, "name": "fusion.1",
       "args": {"hlo_op": "fusion.1"}},
      # Two steps of a gemm and a fusion, and one copy on another stream.
      {"ph": "X", "pid": 2, "tid": 7, "ts": 100, "dur": 300, "name": "sm90_gemm"},
      {"ph": "X", "pid": 2, "tid": 7, "ts": 400, "dur": 100, "name": "loop_fusion"},
      {"ph": "X", "pid": 2, "tid": 7, "ts": 600, "dur": 300, "name": "sm90_gemm"},
      {"ph": "X", "pid": 2, "tid": 7, "ts": 900, "dur": 100, "name": "loop_fusion"},
      {"ph": "X", "pid": 2, "tid": 8, "ts": 50, "dur": 50, "name": "MemcpyH2D"},
      {"ph": "X", "pid": 2, "tid": 9, "ts": 0, "dur": 1000, "name": "overhead"},
  ]
  with gzip.open(path, "wt") as f:
    json.dump({"displayTimeUnit": "ns", "traceEvents": events}, f)
  return path


def test_on_gpu_only_the_device_streams_count_with_exact_shares(tmp_path):
  result = profiling.top_kernels(_gpu_trace(tmp_path / "t.trace.json.gz"), n=2,
                                 steps=2)
  assert (result["source"], result["devices"]) == (profiling.GPU_KERNELS, 1)
  assert result["busy_ms"] == pytest.approx(0.85)  # 600 + 200 + 50 us
  assert result["busy_ms_per_step"] == pytest.approx(0.425)
  assert result["top_kernels"] == [
      {"name": "sm90_gemm", "total_ms": pytest.approx(0.6),
       "ms_per_step": pytest.approx(0.3), "share_pct": pytest.approx(6000 / 85),
       "count": 2},
      {"name": "loop_fusion", "total_ms": pytest.approx(0.2),
       "ms_per_step": pytest.approx(0.1), "share_pct": pytest.approx(2000 / 85),
       "count": 2}]


def test_a_logdir_without_a_trace_names_where_it_looked(tmp_path):
  with pytest.raises(FileNotFoundError, match=re.escape(
      f"no profiler trace: looked for {tmp_path}/plugins/profile/*/perfetto_trace.json.gz")):
    profiling.latest_trace(tmp_path)


def test_a_trace_without_device_work_names_the_threads_it_had(tmp_path):
  path = tmp_path / "host_only.json"
  path.write_text(json.dumps([
      {"ph": "M", "pid": 1, "tid": 5, "name": "thread_name", "args": {"name": "python"}},
      {"ph": "X", "pid": 1, "tid": 5, "ts": 0, "dur": 10, "name": "PjitFunction(f)"}]))
  with pytest.raises(ValueError, match=re.escape(
      f"{path}: no cpu xla ops there; the threads looked at: ['python']")):
    profiling.top_kernels(path, steps=1)
