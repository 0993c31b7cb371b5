"""Two channels from real data (issue 22): `python -m benchmarks.channels [--time 3m]`.

Each dsb2018-dev image becomes channel 1 of a 16-bit two-channel TIFF whose channel 0 is an
ISBI 2012 electron-microscopy slice cut to its size: a real image with structure everywhere and
no nuclei. The masks are dsb2018-dev's nuclei. unetkit trains on the train split with the
defaults, then `evaluate` scores the val split as it is and with channel 1 set to 0. If the
nuclei channel is read and used, the first scores close to dsb2018-dev alone and the second
collapses. The two-channel files go to a temporary folder; the shared data is only read.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np
import tifffile

from benchmarks.accuracy import DATA, RESULTS, run_timed
from benchmarks.common import cpu_slug, save_results
from unetkit.cli import parse_duration
from unetkit.data.io import read_image
from unetkit.runtime.hardware import cpu_description


def two_channel_set(folder: Path, names: list[str], zero_nuclei: bool = False) -> tuple[Path, Path]:
    """images/<name>.tif (EM slice, nuclei) as uint16 YXS, and masks/ linking to the nuclei masks."""
    images, masks = folder / "images", folder / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    slices = sorted((DATA / "isbi2012" / "images").iterdir())
    for index, name in enumerate(names):
        nuclei = read_image(next((DATA / "dsb2018-dev" / "images").glob(f"{name}.*"))).mean(axis=2)
        em = read_image(slices[index % len(slices)])[..., 0]
        em = np.tile(em, (nuclei.shape[0] // em.shape[0] + 1, nuclei.shape[1] // em.shape[1] + 1))
        pixels = np.stack([em[: nuclei.shape[0], : nuclei.shape[1]], 0 * nuclei if zero_nuclei else nuclei], -1)
        pixels = (pixels * 65535).round().astype(np.uint16)
        tifffile.imwrite(images / f"{name}.tif", pixels, photometric="minisblack", planarconfig="contig")
        mask = next((DATA / "dsb2018-dev" / "masks").glob(f"{name}.*"))
        (masks / mask.name).symlink_to(mask.resolve())
    return images, masks


def evaluate(unetkit: list[str], checkpoint: Path, folders: tuple[Path, Path], report: Path, log: Path) -> dict:
    images, masks = folders
    command = [*unetkit, "evaluate", "--checkpoint", str(checkpoint), "--images", str(images), "--masks", str(masks)]
    run_timed([*command, "--json", str(report), "--no-progress"], log, "")
    result = json.loads(report.read_text())
    objects = result.get("objects", {})
    return {"ap50": objects.get("ap50"), "ap50_90": objects.get("ap50_90"), "per_class": result["per_class"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.channels", description=__doc__.split("\n")[0])
    parser.add_argument("--time", type=parse_duration, default=180.0, help="training budget (3m)")
    parser.add_argument("--out", type=Path, default=Path("runs") / "channels", help="run folder and logs")
    args = parser.parse_args(argv)
    split = json.loads((DATA / "dsb2018-dev" / "split.json").read_text())
    out = args.out / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    print(f"CPU: {cpu_description()}; training budget {args.time:g} s", flush=True)
    unetkit = [sys.executable, "-m", "unetkit.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        train = two_channel_set(Path(tmp) / "train", split["train"])
        val = two_channel_set(Path(tmp) / "val", split["val"])
        zeroed = two_channel_set(Path(tmp) / "val-zeroed", split["val"], zero_nuclei=True)
        command = [*unetkit, "train", "--images", str(train[0]), "--masks", str(train[1]), "--out", str(out / "run")]
        run_timed([*command, "--time", f"{args.time:g}", "--no-progress"], out / "train.log", "AMP:")
        checkpoint = out / "run" / "best.pt"
        results = {"cpu": cpu_description(), "time_budget_s": args.time, "when": out.name}
        results["val"] = evaluate(unetkit, checkpoint, val, out / "val.json", out / "val.log")
        results["val_nuclei_channel_zeroed"] = evaluate(unetkit, checkpoint, zeroed, out / "zeroed.json", out / "z.log")
    for name in ("val", "val_nuclei_channel_zeroed"):
        row = results[name]
        print(f"{name}: AP@0.5 {row['ap50']}, AP@0.5:0.9 {row['ap50_90']}")
    save_results(RESULTS / f"channels-{datetime.now():%Y-%m-%d-%H%M}-{cpu_slug()}.json", results)
    return results


if __name__ == "__main__":
    main()
