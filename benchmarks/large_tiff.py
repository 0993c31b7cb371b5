"""Out-of-core prediction of a whole-slide-size image: `python -m benchmarks.large_tiff
--checkpoint runs/demo/best.pt [--side 20000]`.

Writes an RGB tiled TIFF of side x side pixels (a mosaic of the bundled ISBI slices, uncompressed,
written tile by tile), predicts it with `unetkit predict --out-of-core on` in a child process
(peak RSS from wait4, seconds, tiles/s), then predicts a crop of it (4096 px or just above, on the
slide's tile grid) in memory (`--out-of-core off`) and counts the pixels where the two masks agree
on that crop. With
`--probabilities` and/or `--instances` both runs also write those, and the crop's probabilities
(largest difference) and objects (adapted Rand error) are compared away from the crop's edges.
The slide's time is also given as a share of its tiles' convolution ceiling (conv_ceiling.py),
measured before and after the slide; the faster of the two counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from benchmarks.conv_ceiling import conv_ceiling
from unetkit.data import read_image
from unetkit.demo import DEMO_DATA
from unetkit.inference import InferenceOptions
from unetkit.runtime.hardware import cpu_description

CROP = 4096  # at least; rounded up to end on the slide's tile grid (crop_side)


def write_mosaic(path: Path, side: int, tile: int = 512) -> None:
    """An RGB tiled TIFF of the demo slices, written one 512 x 512 tile at a time."""
    slices = [(read_image(DEMO_DATA / "images" / f"{i:02d}.png")[:, :, 0] * 255).astype(np.uint8) for i in range(30)]

    def tiles():
        for row in range(0, side, tile):
            for col in range(0, side, tile):
                gray = slices[(row // tile * 7 + col // tile) % len(slices)]
                yield np.repeat(gray[:, :, None], 3, axis=2)

    tifffile.imwrite(path, tiles(), shape=(side, side, 3), dtype=np.uint8, tile=(tile, tile), bigtiff=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.large_tiff", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="e.g. runs/demo/best.pt")
    parser.add_argument("--side", type=int, default=20000, help="the image's side in pixels (20000)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--probabilities", action="store_true", help="also write and compare the probabilities")
    parser.add_argument("--instances", action="store_true", help="also write and compare the objects")
    parser.add_argument("--tile", type=int, help="predict's --tile for both runs (default: predict's own)")
    parser.add_argument("--batch-size", type=int, help="predict's --batch-size out of core (default: predict's own)")
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_description()}", flush=True)
    # A whole-slide image is over the default pixel limit (data/limits.py): raised as a user would.
    os.environ.setdefault("UNETKIT_MAX_PIXELS", str(max(2**28, args.side * args.side)))
    extra = ["--probabilities"] * args.probabilities + ["--instances"] * args.instances
    extra += ["--tile", str(args.tile)] if args.tile else []
    results: dict = {"cpu": cpu_description(), "side": args.side, "outputs": ["mask", *extra]}
    with tempfile.TemporaryDirectory(prefix="unetkit-large-") as folder:
        work = Path(folder)
        started = time.perf_counter()
        write_mosaic(work / "slide.tif", args.side)
        results["write_seconds"] = round(time.perf_counter() - started, 1)
        # The model's own convolutions alone for the slide's tiles, in this process before and after
        # the child's run (never beside it: two cores); the slide's share of the faster of the two,
        # start-up included. One ceiling alone read 2.7x its usual time on a shared EPYC once
        # (0.2995 against 0.108-0.112 s a tile minutes later: benchmarks/NOTES.md, eleventh slice).
        batch = ["--batch-size", str(args.batch_size)] if args.batch_size else []
        before = conv_ceiling(args.checkpoint, args.side, args.tile, args.batch_size)
        results["out_of_core"] = timed(args.checkpoint, work / "slide.tif", work / "big", "on", extra + batch)
        after = conv_ceiling(args.checkpoint, args.side, args.tile, args.batch_size)
        ceiling = min(before, after, key=lambda c: c["ceiling_seconds"])
        both = [c["ceiling_seconds"] for c in (before, after)]
        results["conv_ceiling"] = {**ceiling, "ceiling_seconds_before_and_after": both}
        results["out_of_core"]["tiles_per_second"] = round(ceiling["tiles"] / results["out_of_core"]["seconds"], 2)
        share = results["conv_ceiling"]["ceiling_seconds"] / results["out_of_core"]["seconds"]
        results["out_of_core"]["share_of_conv_ceiling"] = round(share, 3)
        print(json.dumps(results, indent=2), flush=True)
        # A crop on the slide's tile grid (a multiple of its step) whose last tile ends at its
        # edge (crop_side), in the slide's tile size: the crop's tiles are the slide's.
        overlap = InferenceOptions().overlap  # predict's, as both runs use it
        step, crop = ceiling["tile"] - overlap, crop_side(ceiling["tile"], overlap)
        top = (args.side - crop) // 2 // step * step
        extra += [] if args.tile else ["--tile", str(ceiling["tile"])]
        with tifffile.TiffFile(work / "slide.tif") as tiff:
            import zarr

            pixels = zarr.open(tiff.aszarr(), mode="r")
            tifffile.imwrite(work / "crop.tif", np.asarray(pixels[top : top + crop, top : top + crop]))
        results["in_memory_crop"] = timed(args.checkpoint, work / "crop.tif", work / "small", "off", extra)
        with tifffile.TiffFile(work / "big" / "slide.tif") as tiff:
            big = zarr.open(tiff.aszarr(), mode="r")[top : top + crop, top : top + crop]
        from PIL import Image

        small = np.asarray(Image.open(work / "small" / "crop.png"))
        same = np.asarray(big) == small
        results["crop_agreement"] = round(float(same.mean()), 5)
        # The crop alone has no context beyond its edges: compare also away from them.
        results["crop_agreement_256px_in"] = round(float(same[256:-256, 256:-256].mean()), 5)
        results.update(compare_extras(work, top, crop, args.probabilities, args.instances))
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


def crop_side(tile: int, overlap: int) -> int:
    """The side, CROP or just above, whose tiles end flush with it: tile + a whole number of steps
    (4096 for 512 px tiles; 4288 for 768, where 4096's last tile would start off the slide's grid)."""
    step = tile - overlap
    return tile + -(-(CROP - tile) // step) * step


def compare_extras(work: Path, top: int, crop: int, probabilities: bool, instances: bool) -> dict:
    """Probabilities (max difference) and objects (adapted Rand error, object count) of the
    slide against the in-memory crop's, at least 256 px in from the crop's edges."""
    import zarr

    from unetkit.scoring.objects import object_scores

    inner = (slice(top + 256, top + crop - 256),) * 2
    results = {}
    if probabilities:
        with tifffile.TiffFile(work / "big" / "slide_probs.tif") as tiff:
            big = np.asarray(zarr.open(tiff.aszarr(), mode="r")[(slice(None), *inner)])
        small = tifffile.imread(work / "small" / "crop_probs.tif")[:, 256:-256, 256:-256]
        results["crop_probability_max_difference_256px_in"] = float(np.abs(big - small).max())
    if instances:
        with tifffile.TiffFile(work / "big" / "slide_objects.tif") as tiff:
            big = np.asarray(zarr.open(tiff.aszarr(), mode="r")[inner])
            results["slide_objects"] = int(sum(1 for _ in open(work / "big" / "slide_objects.csv")) - 1)
        small = tifffile.imread(work / "small" / "crop_objects.tif")[256:-256, 256:-256]
        results["crop_objects_adapted_rand_error_256px_in"] = round(object_scores(small, big)["adapted_rand_error"], 5)
    return results


def timed(checkpoint: str, image: Path, out: Path, mode: str, extra: list[str]) -> dict:
    """Seconds and peak RSS (MiB) of one `unetkit predict` child process."""
    command = [sys.executable, "-m", "unetkit.cli", "predict", "--checkpoint", checkpoint, str(image), *extra]
    command += ["--out", str(out), "--out-of-core", mode, "--no-progress", "--tiling", "on"]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    output = process.stdout.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"predict failed:\n{output[-2000:]}")
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024), "said": output.strip()[-200:]}


if __name__ == "__main__":
    main()
