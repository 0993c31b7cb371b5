"""Test helpers: tiny synthetic data sets (bright shapes on a noisy background, masks in user
values) and running the CLI in-process."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from unetkit.cli import main

# Options that make a training run take about a second on a CPU.
TINY_TRAIN = (
    "--epochs",
    "1",
    "--base-channels",
    "4",
    "--depth",
    "2",
    "--patch-size",
    "32",
    "--patches-per-image",
    "1",
    "--no-progress",
    "--amp",
    "off",
    "--no-report",  # tests/report/test_report.py covers the report
)


def make_shapes(
    root: Path,
    count: int = 8,
    size: tuple[int, int] = (48, 48),
    values: tuple[int, ...] = (0, 255),
    rgb: bool = False,
    seed: int = 0,
    mask_suffix: str = "",
    prefix: str = "img",
) -> tuple[Path, Path]:
    """`count` images with one filled rectangle or disc per non-background value.
    Class k's shape has intensity proportional to k, so the task is learnable from pixels."""
    rng = np.random.default_rng(seed)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    height, width = size
    yy, xx = np.mgrid[:height, :width]
    for index in range(count):
        mask = np.full(size, values[0], dtype=np.uint8)
        image = rng.normal(0.15, 0.05, size)
        for k, value in enumerate(values[1:], start=1):
            cy, cx = rng.integers(8, height - 8), rng.integers(8, width - 8)
            radius = rng.integers(5, 9)
            if (index + k) % 2:
                shape = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
            else:
                shape = (abs(yy - cy) <= radius) & (abs(xx - cx) <= radius)
            mask[shape] = value
            image[shape] = 0.25 + 0.7 * k / (len(values) - 1) + rng.normal(0, 0.03, shape.sum())
        pixels = (np.clip(image, 0, 1) * 255).astype(np.uint8)
        if rgb:
            pixels = np.stack([pixels, pixels // 2 + 60, 255 - pixels], axis=-1)
        Image.fromarray(pixels).save(images / f"{prefix}{index:02d}.png")
        Image.fromarray(mask).save(masks / f"{prefix}{index:02d}{mask_suffix}.png")
    return images, masks


def nuclei_with_ids(folder: Path, count: int, size: int = 96, per_image: int = 7) -> tuple[Path, Path]:
    """Fluorescent nuclei and their instance masks, uint16, ids numbered on across the images (as
    a user's corrected masks often are): few images, so few ids that no rule can be sure of."""
    images, masks = folder / "images", folder / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:size, :size]
    next_id = 1
    for index in range(count):
        image, labels = rng.normal(12, 3, (size, size)), np.zeros((size, size), np.uint16)
        for k in range(per_image):
            cy, cx = 14 + 34 * (k // 3) + rng.integers(-3, 4), 14 + 34 * (k % 3) + rng.integers(-3, 4)
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(5, 9) ** 2
            image[inside] = rng.uniform(90, 200)
            labels[inside] = next_id
            next_id += 1
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(images / f"n{index}.png")
        tifffile.imwrite(masks / f"n{index}.tif", labels)
    return images, masks


def run_cli(capsys, *args: object) -> tuple[int, str, str]:
    """Run `unetkit ARGS` in this process; returns (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    """Exit code 2 and exactly one line on stderr, no traceback, containing every needle."""
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder that `build(folder)` fills once for the whole run, shared by pytest-xdist's
    workers: a module fixture is otherwise built again in each worker that runs one of its tests
    (the two-rank torchrun run cost each worker 7-11 s of the 3-minute suite). Tests only read it."""
    from filelock import FileLock  # torch's own dependency

    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # one run's workers share the parent
    folder = root / f"shared-{name}"
    with FileLock(str(folder) + ".lock"):
        if not (folder / ".built").is_file():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed part-way
            folder.mkdir()
            build(folder)
            (folder / ".built").touch()
    return folder
