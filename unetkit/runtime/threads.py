"""Threads for file work: decoding and resizing images release the GIL, so a thread pool scales
with the cores where processes would copy every array."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def parallel_map(function: Callable[[T], R], items: Sequence[T], workers: int | None = None) -> list[R]:
    """`[function(item) for item in items]` in threads: Pillow, tifffile, numpy and torch release
    the GIL while decoding and resizing, so this scales with the cores. The first exception (a
    bad file's UnetkitError) is raised as it would be in the plain loop."""
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(function, items))
