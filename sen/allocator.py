"""Keep the memory of large CPU tensors in the process between forward passes: :func:`keep_freed_memory`.

glibc's ``malloc`` hands out blocks above its mmap threshold (128 KB at first, raised as the process frees
such blocks, but never past 32 MB) as fresh pages from the kernel, and returns them on ``free``. A batch of
64 crystals allocates edge activations of several MB a few hundred times per forward pass, so each pass
faults in and zeroes the same memory again. With the threshold fixed at 32 MB and freed memory kept up to
256 MB at the top of the heap, the forward pass of 1,000 test-split crystals in batches of 64 took 2.62 ms a
crystal against 3.29 ms without (``SEN_KEEP_FREED_MEMORY=0 python benchmarks/bench_pipeline.py`` against the
same without the variable, 2026-12-02). The process keeps (does not return to the kernel) up to what one
batch needed, which it would need again for the next batch.

The setting is process-wide, so :class:`sen.Predictor` applies it on a CPU once, at its first batch of
:data:`sen.predict.BATCH_MEMORY_KEPT` crystals or more (a server predicting one crystal at a time, such as
the app's, gains nothing from it), unless the environment
sets ``SEN_KEEP_FREED_MEMORY=0`` (or the process already tunes ``malloc`` with ``MALLOC_*`` variables or
another allocator). It does nothing where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

#: glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks below this come from the heap, and are reused there (glibc refuses more than 32 MB on 64-bit).
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory at the top of the heap kept for reuse, not returned to the kernel.
TRIM_THRESHOLD = 256 * 1024 * 1024

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds for this process (once); True if they are set."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("SEN_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    if any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD")):
        return False  # the process chose its allocator settings itself
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        version = libc.gnu_get_libc_version  # only glibc has it (not musl)
        version.restype = ctypes.c_char_p
        gnu = version()
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    if not gnu:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied
