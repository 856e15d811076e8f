"""glibc malloc settings that make XLA:CPU train steps much faster.

XLA:CPU asks the allocator for gigabytes of fresh scratch memory every step.
With glibc's defaults, large blocks are mmap'ed and unmapped each time, so
every step faults its scratch memory in again, hundreds of thousands of
pages for a small ViT. Raising the mmap threshold, never trimming the heap
and asking for huge pages keeps that memory mapped between steps
(docs/benchmarks.md has what it buys; `scripts/benchmark.py` prints the page
faults per step, so the effect can be checked on any host). On accelerators
the host allocator is off the hot path and the settings change nothing.

glibc reads GLIBC_TUNABLES once, at process start, so a launcher that wants
them re-executes itself with the variable set. A GLIBC_TUNABLES already in
the environment, even an empty one, is the user's choice and is kept
(``GLIBC_TUNABLES= python -m vit_jax.main ...`` runs with glibc's defaults).
"""
import os
import platform
import sys

TUNABLES = ":".join((
    "glibc.malloc.hugetlb=1",
    "glibc.malloc.mmap_threshold=33554432",  # 32 MiB
    "glibc.malloc.trim_threshold=17179869184",  # 16 GiB: never trim
    "glibc.malloc.top_pad=1073741824",  # grow the heap 1 GiB at a time
))


def reexec_with_tunables():
  """Restarts this Python command with `TUNABLES`, unless the user chose.

  Call it first thing in a launcher's ``__main__`` block, before jax starts.
  Does nothing off glibc (macOS, musl) or when GLIBC_TUNABLES is set.
  """
  if "GLIBC_TUNABLES" in os.environ or platform.libc_ver()[0] != "glibc":
    return
  os.environ["GLIBC_TUNABLES"] = TUNABLES
  # orig_argv keeps `-m vit_jax.main` and the interpreter's own flags.
  os.execv(sys.executable, [sys.executable] + sys.orig_argv[1:])
