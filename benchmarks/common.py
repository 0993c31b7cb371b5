"""Shared pieces: the two model shapes, run settings, timing, CPU description, the GEMM ceiling,
FLOP counting and a small synthetic PNG data set."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from unetkit.models import UNet
from unetkit.runtime.amp import cpu_has_native_bf16, resolve_amp
from unetkit.runtime.hardware import cpu_description


@dataclass(frozen=True)
class ModelSpec:
    """A U-Net shape and the augmentation its recipe trains with."""

    name: str
    base_channels: int
    depth: int
    upsampling: str
    elastic: bool  # the paper uses elastic deformation; the demo recipe turns it off

    def model_args(self) -> dict:
        # One input channel (gray), one output logit (binary masks 0/255), as in the demo.
        return {
            "in_channels": 1,
            "num_classes": 1,
            "base_channels": self.base_channels,
            "depth": self.depth,
            "upsampling": self.upsampling,
        }

    def build(self) -> UNet:
        return UNet(**self.model_args())


PAPER = ModelSpec("paper", base_channels=64, depth=4, upsampling="transposed", elastic=True)
RECIPE = ModelSpec("recipe", base_channels=16, depth=4, upsampling="bilinear", elastic=False)
TINY = ModelSpec("tiny", base_channels=4, depth=2, upsampling="bilinear", elastic=False)  # tests only


@dataclass
class Settings:
    """Everything a run measures; `full()` is the default run, `quick()` the smoke test."""

    models: list[ModelSpec] = field(default_factory=lambda: [PAPER, RECIPE])
    sizes: list[int] = field(default_factory=lambda: [256, 512])
    # Training batch per (model name, size): small, since the paper U-Net at 512^2 is ~1.15 TFLOP
    # per image per training step. Every variant (unetkit, bare, naive) uses the same batch.
    train_batch: dict[tuple[str, int], int] = field(
        default_factory=lambda: {("paper", 256): 2, ("paper", 512): 1, ("recipe", 256): 4, ("recipe", 512): 2}
    )
    infer_batches: list[int] = field(default_factory=lambda: [1, 8])
    iters: int = 3  # timed repetitions (each one training step or one inference call)
    warmup: int = 1  # untimed repetitions first (oneDNN builds its kernels on the first call)
    max_case_seconds: float = 20.0  # stop repeating a case after this long (at least one timed rep)
    gemm_size: int = 2048
    memory_image: int = 4096
    memory_tile: int = 512
    memory_models: list[str] = field(default_factory=lambda: ["recipe"])
    memory_train_steps: int = 2
    onnx: bool = True

    def batch_for(self, spec: ModelSpec, size: int) -> int:
        return self.train_batch.get((spec.name, size), 1)

    @classmethod
    def full(cls) -> Settings:
        return cls()

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            sizes=[64, 96],
            train_batch={},  # batch 1 everywhere
            infer_batches=[1, 8],
            iters=2,
            max_case_seconds=2.0,
            memory_image=1024,
            memory_tile=256,
            memory_train_steps=1,
        )


# --- timing ---


def measure(fn: Callable[[], object], warmup: int, reps: int, max_seconds: float = float("inf")) -> dict:
    """Call `fn` `warmup` times untimed, then up to `reps` times timed (at least once, fewer when
    the case has run longer than `max_seconds`); returns the times and their median."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    started = time.perf_counter()
    for _ in range(max(1, reps)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        if time.perf_counter() - started > max_seconds:
            break
    return {"median_s": statistics.median(times), "times_s": [round(t, 5) for t in times]}


# --- the machine ---


def cpu_info() -> dict:
    amp = resolve_amp("auto", torch.device("cpu"))
    return {
        "cpu": cpu_description(),
        "native_bf16": cpu_has_native_bf16(),
        "amp_auto": amp.name,
        "amp_reason": amp.reason,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def cpu_slug() -> str:
    """A short file-name-safe CPU name for the default JSON path."""
    model = cpu_description().split(";", 1)[0]
    slug = "".join(c if c.isalnum() else "-" for c in model.lower()).strip("-")
    while "--" in slug:
        slug = slug.replace("--", "-")
    return slug or platform.machine()


def gemm_ceiling(n: int, dtype: torch.dtype = torch.float32, reps: int = 5) -> float:
    """GFLOP/s of an n x n x n matrix product (best of `reps`): what this CPU and torch's BLAS/oneDNN
    reach on the friendliest possible workload, the ceiling a conv net's throughput is compared to."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


@cache
def model_gflop(spec: ModelSpec, size: int, training: bool) -> float:
    """GFLOP per image (one size x size image) counted by FlopCounterMode on the meta device (no
    real compute): forward only, or forward + backward for a training step. Counts convolutions and
    matrix products only (pooling, BN, ReLU, upsampling and the optimizer are not counted)."""
    with torch.device("meta"):
        model = spec.build()
        x = torch.randn(1, 1, size, size, requires_grad=False)
        with FlopCounterMode(display=False) as counter:
            out = model(x)
            if training:
                out.sum().backward()
    return counter.get_total_flops() / 1e9


# --- data ---


def write_synthetic_pngs(root: Path, count: int, side: int, seed: int = 0) -> tuple[Path, Path]:
    """`count` gray PNG images (side x side) with bright discs on a noisy background, and their
    0/255 masks, like the demo's EM membranes in file format (8-bit gray PNG)."""
    rng = np.random.default_rng(seed)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:side, :side]
    for index in range(count):
        mask = np.zeros((side, side), dtype=bool)
        for _ in range(max(3, side // 32)):
            cy, cx = rng.integers(0, side, 2)
            radius = rng.integers(max(2, side // 64), max(3, side // 12))
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
        image = rng.normal(0.2, 0.05, (side, side)) + 0.6 * mask
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(images / f"{index:03d}.png")
        Image.fromarray((mask * 255).astype(np.uint8)).save(masks / f"{index:03d}.png")
    return images, masks


def save_results(path: Path, results: dict) -> Path:
    """Write a benchmark's results as indented JSON (creating the folder); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path
