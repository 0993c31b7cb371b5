"""Freed CPU memory kept for the next allocation, instead of fresh pages from the kernel.

glibc's malloc serves an allocation above its mmap threshold (which grows with use to at most
32 MiB) with new pages, which the kernel zeroes on first touch, and hands them back on free. A
U-Net's activation maps are that large (16 channels of 4 x 512^2 bf16 tiles: 32 MiB), so every
forward faulted in and zeroed each map again: 35-40% of a tile's time on an AMX CPU (38.7 ->
25.3 ms a 512^2 tile of the em-membranes model, 598 -> 700 MiB peak; benchmarks/NOTES.md, issue
36). This is what PyTorch's CPU tuning guide gets from jemalloc or tcmalloc; mallopt gets it from
the glibc already loaded. It changes the whole process (unetkit is then its own), so it is called
where unetkit computes on a CPU (the Predictor, the Trainer's model), once, and left alone where
the user has chosen an allocator or glibc's settings already."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# Allocations up to this size come from the heap and return to it (larger ones, e.g. a whole slide
# held by the caller, still go back to the kernel), and at most this much free memory is kept at
# the heap's top. 256 MiB each: as fast as 1 GiB on 512^2 tiles (25.3 vs 25.0 ms); a lower trim
# threshold (128 MiB) gave back memory a forward then faulted in again (33.2 ms).
KEPT_BYTES = 256 * 2**20
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_kept: bool | None = None  # decided once per process


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to KEPT_BYTES, once per process; whether it is so.
    Not done where malloc is not glibc's, is another allocator (LD_PRELOAD jemalloc or tcmalloc), or
    its thresholds are already set (MALLOC_*_THRESHOLD_ or GLIBC_TUNABLES)."""
    global _kept
    if _kept is None:
        _kept = (
            _user_has_not_chosen() and _mallopt(M_MMAP_THRESHOLD, KEPT_BYTES) and _mallopt(M_TRIM_THRESHOLD, KEPT_BYTES)
        )
    return _kept


def _user_has_not_chosen() -> bool:
    chosen = any(name.startswith("MALLOC_") and name.endswith("THRESHOLD_") for name in os.environ)
    preloaded = any(word in os.environ.get("LD_PRELOAD", "") for word in ("jemalloc", "tcmalloc", "mimalloc"))
    return platform.libc_ver()[0] == "glibc" and not (
        chosen or preloaded or "malloc" in os.environ.get("GLIBC_TUNABLES", "")
    )


def _mallopt(parameter: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(parameter, value))
    except (OSError, AttributeError):  # no such library or function: malloc stays as it is
        return False
