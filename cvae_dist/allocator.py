"""glibc's allocator told to keep the memory of freed tensors, so that a CPU step does not give it back to the kernel.

glibc hands an allocation above its mmap threshold (at most 32 MB, as it adapts) memory of its own
from the kernel and gives it back on free; PyTorch's CPU allocator does not cache, so every
activation of that size costs fresh pages that the kernel zeroes on the next step. Measured on a
2-core machine (AMD EPYC, AVX2): `python -m cvae_dist.evaluate --samples 10` of a tiny-preset run
took 27 s, 13.6 of them in the kernel, and 15 s (2.6 in the kernel) with the thresholds below; the
demo's first epoch spent 26 to 31 s in the kernel, and 7 to 8 (with a 512 MB trim threshold then).
docs/benchmarks.md has the table. jemalloc or tcmalloc (LD_PRELOAD) do this by themselves, and are left alone.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt's parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Above the largest activation of the lab network at the batches a CPU trains or evaluates with.
MMAP_THRESHOLD = 256 << 20
# Free memory at the top of the heap kept for the next step rather than given back.
TRIM_THRESHOLD = 128 << 20
# The user's own settings of glibc's allocator, which win.
USER_SETTINGS = ("GLIBC_TUNABLES", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (and the loader workers it forks);
    whether it did: not off glibc, nor where the environment sets the allocator's tunables."""
    if platform.libc_ver()[0] != "glibc" or any(name in os.environ for name in USER_SETTINGS):
        return False
    libc = ctypes.CDLL("libc.so.6")
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
