"""Where the train step's device time goes: a profiler trace and its top kernels.

`profile_train_step` runs a compiled, warmed-up `benchmarking.TrainStep`
under `jax.profiler.trace` and returns the trace JSON that the Perfetto UI
(ui.perfetto.dev) opens. `top_kernels` reads that JSON and ranks what ran by
total time. On a GPU those are the kernels (and copies) on the streams of the
'/device:GPU:N' processes, timed by the device itself. A CPU has no device
process: XLA:CPU runs each HLO op (a thunk) on the host's threads, and those
events, the ones that carry an `hlo_op`, stand in for kernels. A while loop's
thunk encloses its body's thunks on the same thread, so only the innermost
events of a thread are counted, never a span and what it holds.
"""
import collections
import gzip
import json
import os
import pathlib

import jax

PERFETTO_TRACE = "perfetto_trace.json.gz"
GPU_KERNELS = "gpu kernels"
CPU_XLA_OPS = "cpu xla ops"


def profile_train_step(step, *, steps, logdir):
  """Path of the trace of ``steps`` runs of ``step`` (compiled, warmed up).

  ``step`` has `run` and `sync`, as `benchmarking.TrainStep`. The trace ends
  after a sync, so it holds the device's work of every step.
  """
  step.sync()  # what ran before is not in the trace
  with jax.profiler.trace(logdir, create_perfetto_trace=True):
    for _ in range(steps):
      step.run()
    step.sync()
  return latest_trace(logdir)


def latest_trace(logdir):
  """The Perfetto trace of the newest run under ``logdir``, as jax writes it."""
  runs = pathlib.Path(logdir) / "plugins" / "profile"
  traces = sorted(runs.glob(f"*/{PERFETTO_TRACE}"), key=os.path.getmtime)
  if not traces:
    raise FileNotFoundError(f"no profiler trace: looked for {runs}/*/{PERFETTO_TRACE}")
  return str(traces[-1])


def top_kernels(trace_path, n=10, *, steps):
  """The ``n`` kernels of most total time in a Chrome/Perfetto trace JSON.

  Returns ``source`` (`GPU_KERNELS` or `CPU_XLA_OPS`: what counted), the
  number of ``devices``, ``busy_ms`` (the counted events' total time, summed
  over devices and over the streams or threads that run them at once, so it
  may exceed the wall time), ``busy_ms_per_step`` (per step and per device),
  and ``top_kernels``: rows of name, ``total_ms``, ``ms_per_step`` (per
  device), ``share_pct`` of ``busy_ms`` and ``count`` (runs over all steps
  and devices).
  """
  opener = gzip.open if str(trace_path).endswith(".gz") else open
  with opener(trace_path, "rt") as f:
    events = json.load(f)
  if isinstance(events, dict):
    events = events["traceEvents"]
  source, kernels, devices, threads = _device_events(events)
  if not kernels:
    raise ValueError(f"{trace_path}: no {source} there; the threads looked at: "
                     f"{sorted(threads)}")
  kernels = _innermost(kernels)
  total_us, count = collections.Counter(), collections.Counter()
  for event in kernels:
    total_us[event["name"]] += event["dur"]
    count[event["name"]] += 1
  busy_us = sum(total_us.values())
  per_step = steps * devices
  rows = [{"name": name, "total_ms": us / 1e3, "ms_per_step": us / 1e3 / per_step,
           "share_pct": 100 * us / busy_us, "count": count[name]}
          for name, us in total_us.most_common(n)]
  return {"source": source, "devices": devices, "busy_ms": busy_us / 1e3,
          "busy_ms_per_step": busy_us / 1e3 / per_step, "top_kernels": rows}


def _device_events(events):
  """(source, the complete events that are its work, how many devices, the
  names of the threads looked at)."""
  names = {}  # (pid, tid or None) -> the process's or thread's name
  for event in events:
    if event.get("ph") == "M" and event.get("name") in ("process_name", "thread_name"):
      names[event["pid"], event.get("tid")] = event["args"]["name"]
  gpus = {pid for (pid, tid), name in names.items()
          if tid is None and name.startswith("/device:GPU:")}
  complete = [e for e in events if e.get("ph") == "X" and "dur" in e]
  if gpus:
    # A GPU process's threads are its streams, and a "CUPTI overhead" line.
    threads = {name for (pid, tid), name in names.items()
               if pid in gpus and tid is not None}
    kernels = [e for e in complete if e["pid"] in gpus
               and names.get((e["pid"], e.get("tid")), "").startswith("Stream")]
    return GPU_KERNELS, kernels, len(gpus), threads
  # Thunk events name their op and device; the executor's own spans do not.
  kernels = [e for e in complete if "hlo_op" in e.get("args", {})]
  devices = {e["args"].get("device_ordinal") for e in kernels}
  threads = {name for (pid, tid), name in names.items() if tid is not None}
  return CPU_XLA_OPS, kernels, len(devices), threads


def _innermost(events):
  """``events`` less those that enclose another on the same thread."""
  by_thread = collections.defaultdict(list)
  for event in events:
    by_thread[event["pid"], event.get("tid")].append(event)
  leaves = []
  for thread in by_thread.values():
    thread.sort(key=lambda e: (e["ts"], -e["dur"]))
    for event, after in zip(thread, thread[1:] + [None]):
      end = event["ts"] + event["dur"]
      # Containment, not overlap: back-to-back kernels may overlap by rounding.
      if after is None or not (after["ts"] < end and after["ts"] + after["dur"] <= end):
        leaves.append(event)
  return leaves
