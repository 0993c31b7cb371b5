"""What machine we are on, and the speed choices that depend on it (decided at run time)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path

import torch
import torch.nn.functional as F

from unetkit.errors import UnetkitError


def memory_bytes() -> float:
    """This machine's memory (4 GiB where the system does not say)."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 4 * 2.0**30


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UnetkitError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UnetkitError(f"device {name!r} asked for, but this machine has no CUDA GPU; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UnetkitError(f"device {name!r}: this machine has {torch.cuda.device_count()} GPU(s); use cuda:0 or cpu")
    if device.type not in ("cpu", "cuda"):  # mps, meta, xpu...: not what unetkit trains or predicts on
        raise UnetkitError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


ISA_LIMIT_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def cpu_description() -> str:
    """CPU model and the SIMD flags that decide conv speed, for logs and benchmarks."""
    model = platform.processor() or platform.machine()
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    wanted = ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]
    have = [flag for flag in wanted if flag in flags]
    described = f"{model}; flags: {' '.join(have) or 'none of ' + '/'.join(wanted)}; threads: {torch.get_num_threads()}"
    # These variables hold PyTorch's kernels below what the flags offer (e.g. to stand in for an
    # AVX2-only CPU), so a log or benchmark must say so.
    limits = [f"{name}={os.environ[name]}" for name in ISA_LIMIT_VARIABLES if os.environ.get(name)]
    return described + (f"; ISA limited by {' '.join(limits)}" if limits else "")


def fastest_call(call: Callable[[], object], repeats: int, give_up_after: float = float("inf")) -> float:
    """The shortest of `repeats` timed calls, after one untimed call that allocates and picks the
    kernels. That first call already taking over `give_up_after` seconds returns inf at once, so
    a probe spends no more time on a path it can already see is hopeless."""
    start = time.perf_counter()
    call()
    if time.perf_counter() - start > give_up_after:
        return float("inf")
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def channels_last_is_faster(
    device: torch.device,
    dtype: torch.dtype | None,
    channels: int = 32,
    size: int = 96,
    backward: bool = False,
) -> bool:
    """Time a 3x3 conv (channels -> channels on a size x size input) in both memory layouts and
    say whether NHWC won; with `backward`, the conv's backward pass too, as a training step runs.

    On GPUs with tensor cores NHWC is the native layout for 16-bit convs; on CPUs it depends on
    the oneDNN kernels for that CPU, so we measure instead of guessing. Training needs its own
    measurement at the real size: with AVX2 kernels (no AVX-512), fp32, the NHWC conv forward
    was as fast as NCHW but its backward took twice as long on 64 x 256 x 256 activations, and the
    paper U-Net trained 1.4x slower in NHWC, while on small inputs NHWC still won.

    Timed once per question (and thread count) in a process, then kept: a layout decides how a
    bf16 convolution rounds, and two predicts of one image in one process (the band engine's check
    against memory, napari's repeated runs) gave probabilities 0.002 apart, and a mask a pixel
    apart, when a busy machine made the probe answer differently the second time."""
    if device.type == "cuda":
        return dtype is not None
    if device.type != "cpu":
        return False
    return _cpu_channels_last_is_faster(dtype, channels, size, backward, torch.get_num_threads())


@cache
def _cpu_channels_last_is_faster(dtype: torch.dtype | None, channels: int, size: int, backward: bool, _: int) -> bool:
    timings = []
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(1 if backward else 2, channels, size, size).to(memory_format=layout)
        weight = torch.randn(channels, channels, 3, 3).to(memory_format=layout)
        x.requires_grad_(backward)
        weight.requires_grad_(backward)
        with torch.set_grad_enabled(backward):
            timings.append(fastest_call(partial(_conv_step, x, weight, dtype, backward), 2 if backward else 3))
    return timings[1] < timings[0]


def _conv_step(x: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype | None, backward: bool) -> None:
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        y = F.conv2d(x, weight, padding=1)
    if backward:
        y.backward(torch.ones_like(y))
