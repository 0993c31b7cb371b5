"""Prediction over a folder of many small images: `python -m benchmarks.many_images
--checkpoint runs/demo/best.pt [--count 1000]`.

Cuts `count` 256 x 256 gray crops from the bundled ISBI slices into a temporary folder (PNG, as a
microscope would save them), then predicts the folder twice, each time with `unetkit predict` in a
fresh child process: `--workers 0` (before: one image at a time, all in one thread, batches of one)
and the default --workers (after: decoding and writing in threads, images batched). For each:
images/s as predict reports it (the loop over the images), the child's seconds (with start-up
and model loading) and its peak RSS (VmHWM read by the child itself: ru_maxrss would inherit
this process's peak, see benchmarks/memory.py). Both runs use the same engine (--backend, --amp),
resolved once here, so only the pipeline differs; the masks of the two runs are compared.
Writes benchmarks/results/many-images-<date>-<cpu>-<count>.json unless --json says elsewhere.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.common import cpu_slug, save_results
from unetkit.data import read_image
from unetkit.demo import DEMO_DATA
from unetkit.inference import InferenceOptions
from unetkit.inference.predictor import DEFAULT_BATCH_SIZE
from unetkit.runtime.amp import resolve_amp
from unetkit.runtime.hardware import cpu_description

SIDE = 256
REPO_ROOT = Path(__file__).resolve().parent.parent
# The child: unetkit's CLI in this process, then its own peak RSS (VmHWM, kB) on the last line.
CHILD = (
    "import re, sys\nfrom unetkit.cli import main\ncode = main(sys.argv[1:])\n"
    "status = open('/proc/self/status').read()\n"
    "print('VmHWM_kB', re.search(r'VmHWM:\\s+(\\d+)', status).group(1), flush=True)\nsys.exit(code)\n"
)


def write_crops(folder: Path, count: int, seed: int = 0) -> None:
    """`count` SIDE x SIDE gray PNG crops at random places in the 30 bundled 512 x 512 slices."""
    folder.mkdir(parents=True)
    paths = sorted(DEMO_DATA.glob("images/*.png"))
    slices = [(read_image(path)[:, :, 0] * 255).round().astype(np.uint8) for path in paths]
    rng = np.random.default_rng(seed)
    for index in range(count):
        pixels = slices[index % len(slices)]
        top, left = rng.integers(0, pixels.shape[0] - SIDE + 1), rng.integers(0, pixels.shape[1] - SIDE + 1)
        Image.fromarray(pixels[top : top + SIDE, left : left + SIDE]).save(folder / f"{index:05d}.png")


def timed(checkpoint: str, images: Path, out: Path, engine: list[str], workers: int) -> dict:
    """images/s as predict reports it, the child's seconds and its peak RSS (MiB)."""
    command = [sys.executable, "-c", CHILD, "predict", "--checkpoint", checkpoint, str(images), "--out", str(out)]
    command += [*engine, "--workers", str(workers), "--no-progress"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    said = re.search(r"wrote (\d+) mask\(s\) .* in ([\d.]+) s \(([\d.]+) images/s\)", done.stdout)
    peak = re.search(r"VmHWM_kB (\d+)", done.stdout)
    if done.returncode or not said or not peak:
        raise SystemExit(f"predict failed:\n{(done.stdout + done.stderr)[-2000:]}")
    return {
        "workers": workers,
        "images_per_second": float(said.group(3)),
        "predict_seconds": float(said.group(2)),
        "process_seconds": round(seconds, 1),
        "peak_rss_mib": round(int(peak.group(1)) / 1024),
        "engine_said": done.stdout.splitlines()[0],
    }


def agreement(first: Path, second: Path) -> float:
    """The fraction of mask pixels the two runs agree on."""
    same = total = 0
    for path in sorted(first.glob("*.png")):
        a, b = np.asarray(Image.open(path)), np.asarray(Image.open(second / path.name))
        same, total = same + int((a == b).sum()), total + a.size
    return same / total


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.many_images", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="e.g. runs/demo/best.pt")
    parser.add_argument("--count", type=int, default=1000, help="images in the folder (1000)")
    parser.add_argument("--workers", type=int, default=InferenceOptions().workers, help="for the after run")
    parser.add_argument("--backend", default="torch", help="for both runs (torch; auto would time it per run)")
    parser.add_argument("--amp", help="for both runs (default: what auto picks here, resolved once)")
    parser.add_argument("--json", type=Path, help="where to write the results")
    args = parser.parse_args(argv)
    amp = args.amp or {None: "off", torch.bfloat16: "bf16"}[resolve_amp("auto", torch.device("cpu")).dtype]
    engine = ["--backend", args.backend, "--amp", amp]
    print(f"CPU: {cpu_description()}", flush=True)
    results: dict = {"cpu": cpu_description(), "count": args.count, "side": SIDE, "engine": engine}
    results["batch_size"] = DEFAULT_BATCH_SIZE
    with tempfile.TemporaryDirectory(prefix="unetkit-many-") as folder:
        work = Path(folder)
        started = time.perf_counter()
        write_crops(work / "images", args.count)
        results["write_seconds"] = round(time.perf_counter() - started, 1)
        for name, workers, out in (("before", 0, "sequential"), ("after", args.workers, "batched")):
            results[name] = timed(args.checkpoint, work / "images", work / out, engine, workers)
            print(f"{name}: {json.dumps(results[name])}", flush=True)
        results["speedup"] = round(results["after"]["images_per_second"] / results["before"]["images_per_second"], 2)
        results["mask_agreement"] = round(agreement(work / "sequential", work / "batched"), 6)
    print(json.dumps(results, indent=2))
    date = datetime.now().strftime("%Y-%m-%d-%H%M")
    path = args.json or REPO_ROOT / "benchmarks" / "results" / f"many-images-{date}-{cpu_slug()}-{args.count}.json"
    print(f"wrote {save_results(path, results)}")
    return results


if __name__ == "__main__":
    main()
