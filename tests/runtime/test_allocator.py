"""runtime/allocator.py: a CPU Predictor keeps freed activation maps in the heap, so the next
forward's maps are not faulted in from the kernel again; a user's own malloc settings win."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

# Page faults of a second 64 MiB tensor after the first is freed, in a fresh process, after a CPU
# Predictor is built (which keeps freed memory) or not.
FAULTS = """
import resource, sys, torch
if sys.argv[1] == "predictor":
    from pathlib import Path
    import unetkit
    from unetkit.inference import Predictor
    Predictor(Path(unetkit.__file__).parent / "zoo" / "em-membranes.safetensors", device="cpu")
from unetkit.runtime import allocator
x = torch.ones(16 * 2**20)
del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.ones(16 * 2**20)
print(allocator.keep_freed_memory(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str, **env: str) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", FAULTS, mode], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    kept, count = done.stdout.split()
    return kept, int(count)


def test_a_cpu_predictor_keeps_freed_memory_for_the_next_tensor():
    pages = 64 * 2**20 // 4096
    kept, plain = faults("alone")
    assert plain > pages // 2  # glibc's default: a tensor this large is fresh pages each time
    kept, reused = faults("predictor")
    assert kept == "True" and reused < pages // 10


def test_the_users_own_malloc_settings_are_left_alone():
    kept, count = faults("predictor", MALLOC_MMAP_THRESHOLD_="131072")
    assert kept == "False" and count > 64 * 2**20 // 4096 // 2
