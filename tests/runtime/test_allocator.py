"""runtime/allocator.py: a CPU Predictor keeps freed activation maps in the heap, so the next
forward's maps are not faulted in from the kernel again; a user's own malloc settings win."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

# Where glibc put a live 64 MiB tensor, in a fresh process, after a CPU Predictor is built (which
# keeps freed memory) or not: mallinfo2's hblkhd counts the bytes in blocks mapped one per
# allocation (given back to the kernel on free, fresh zeroed pages the next time).
WHERE = """
import ctypes, sys, torch
class MallInfo2(ctypes.Structure):
    names = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
    _fields_ = [(name, ctypes.c_size_t) for name in names.split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "predictor":
    from pathlib import Path
    import unetkit
    from unetkit.inference import Predictor
    Predictor(Path(unetkit.__file__).parent / "zoo" / "em-membranes.safetensors", device="cpu")
from unetkit.runtime import allocator
before = libc.mallinfo2().hblkhd
x = torch.ones(16 * 2**20)
mapped = libc.mallinfo2().hblkhd - before
del x
print(allocator.keep_freed_memory(), mapped)
"""


def mapped_bytes(mode: str, **env: str) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", WHERE, mode], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    kept, mapped = done.stdout.split()
    return kept, int(mapped)


def test_a_cpu_predictor_keeps_freed_memory_for_the_next_tensor():
    size = 64 * 2**20
    _, mapped = mapped_bytes("alone")
    assert mapped >= size  # glibc's default: a tensor this large is a mapping of its own
    kept, mapped = mapped_bytes("predictor")
    assert kept == "True" and mapped < size  # in the heap, kept there when freed


def test_the_users_own_malloc_settings_are_left_alone():
    kept, mapped = mapped_bytes("predictor", MALLOC_MMAP_THRESHOLD_="131072")
    assert kept == "False" and mapped >= 64 * 2**20
