"""Automatic mixed precision (AMP): run the convolutions in 16-bit floats where the hardware is
faster at them, keep the weights and the loss in float32.

  CUDA: fp16 autocast + GradScaler (fp16's small range underflows small gradients, so the loss is
        scaled up before backward and the gradients scaled back down), or bf16 where the GPU has
        it (bf16 has fp32's range, so no scaler is needed).
  CPU:  bf16 autocast only where the CPU has native bf16 instructions (AVX-512 BF16 or AMX).
        Without them, bf16 is emulated and a conv ran ~10x slower than fp32 on an AVX2-only CPU
        here; with them it ran ~2.5x faster (AMD EPYC). So `auto` asks the CPU at run time, and
        then times one small conv both ways, because the flag alone can mislead: a VM may pass
        the flag through while oneDNN is held to AVX2 (ONEDNN_MAX_CPU_ISA), and then bf16 is
        emulated again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache

import torch
import torch.nn.functional as F

AMP_MODES = ("auto", "off", "fp16", "bf16")


@dataclass(frozen=True)
class AmpPolicy:
    dtype: torch.dtype | None  # None: no autocast, plain fp32
    use_scaler: bool
    reason: str

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def name(self) -> str:
        return {None: "off", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.dtype]

    @property
    def compute_dtype(self) -> str:
        """What the convolutions compute in: fp32, fp16 or bf16."""
        return "fp32" if self.dtype is None else self.name

    def autocast(self, device: torch.device) -> torch.autocast:
        return torch.autocast(device.type, dtype=self.dtype or torch.float32, enabled=self.enabled)


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 in hardware (AVX-512 BF16 or AMX), not by emulation."""
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, name, None)
        if check is not None and check():
            return True
    return False


@cache
def cpu_bf16_conv_is_faster() -> bool:
    """Time one small 3x3 conv in fp32 and under bf16 autocast, alternately, on one thread, and say
    whether bf16 won (about 11 ms where bf16 is native). One thread, because on two a busy machine
    made every call wait for a descheduled thread (25-37 ms instead of 0.2-0.3) and fp32 won 4 probes
    in 5 on an AMX CPU where bf16 is the faster; alone, bf16 won 6 in 6 under the same load, by
    0.31 against 0.55 ms (benchmarks/NOTES.md). Cached: the answer does not change within a process."""
    x = torch.randn(2, 32, 48, 48)
    weight = torch.randn(32, 32, 3, 3)

    def seconds(bf16: bool) -> float:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            start = time.perf_counter()
            F.conv2d(x, weight, padding=1)
            return time.perf_counter() - start

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seconds(False), seconds(True)  # the first calls pick (and compile) the kernels
        fp32, bf16 = zip(*((seconds(False), seconds(True)) for _ in range(5)), strict=True)
    finally:
        torch.set_num_threads(threads)
    return min(bf16) < min(fp32)


def resolve_amp(mode: str, device: torch.device) -> AmpPolicy:
    if mode not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, not {mode!r}")
    if mode == "off":
        return AmpPolicy(None, False, "AMP off as requested")
    if device.type == "cuda":
        if mode == "fp16":
            return AmpPolicy(torch.float16, True, "fp16 autocast with GradScaler as requested")
        if mode == "bf16" or torch.cuda.is_bf16_supported():
            return AmpPolicy(torch.bfloat16, False, "bf16 autocast: the GPU supports bf16 (no scaler needed)")
        return AmpPolicy(torch.float16, True, "fp16 autocast with GradScaler: the GPU has no bf16")
    if device.type == "cpu":
        if mode == "fp16":
            return AmpPolicy(None, False, "fp16 AMP is for CUDA; on the CPU training stays fp32")
        native = cpu_has_native_bf16()
        if mode == "bf16":
            note = "" if native else " (this CPU has no native bf16: expect it to be slower than fp32)"
            return AmpPolicy(torch.bfloat16, False, "bf16 autocast as requested" + note)
        if native and cpu_bf16_conv_is_faster():
            return AmpPolicy(torch.bfloat16, False, "bf16 autocast: this CPU has native bf16 (AVX-512 BF16/AMX)")
        if native:
            return AmpPolicy(
                None, False, "fp32: this CPU reports native bf16, but a bf16 conv ran slower than fp32 here"
            )
        return AmpPolicy(None, False, "fp32: this CPU has no native bf16, where bf16 runs slower than fp32")
    return AmpPolicy(None, False, f"fp32: no AMP on device type {device.type}")
