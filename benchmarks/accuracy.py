"""The accuracy benchmark: `python -m benchmarks.accuracy [--time 5m] [--only NAME] [--data DIR]`.

For each real data set in ../shared/data (read-only, never copied: the splits are folders of
symbolic links in a temporary directory), it runs what a new user would run,
`unetkit train --images TRAIN --masks TRAIN --time T` with the defaults and only facts about the
data on the command line (CamVid's void id as --ignore-value), then
`unetkit evaluate --checkpoint best.pt` on the held-out split at full size, and prints and saves a
table: per-class and mean Dice/IoU, epochs, seconds until the first epoch starts and in all, peak
memory, and the CPU.

  isbi2012:   train slices 00-24 (the run holds out its own 10% for best.pt), test 25-29
  hc18-dev:   split.json train (262) / val (61), split by subject
  camvid-dev: split.json train (133, two streets) / val (50, a third street); id 11 (void) is ignored
  dsb2018-dev: split.json train (160) / val (40), fluorescence nuclei as instance masks (each
              nucleus its own id, recognised from the masks); objects scored as StarDist scores
              DSB2018: AP = TP / (TP + FP + FN) pooled over the images, at IoU 0.5 and 0.5:0.9
  dsb2018-dev-spread: the same, each image dimmed by its own gain of 1 to 100 (DERIVED); run
              only when named with --only, as it is a check of the normalisation, not a data set

Results: benchmarks/results/accuracy-<date>-<cpu>.json; the table goes in benchmarks/NOTES.md.
Run it on a quiet machine, before and after every change to a recipe, a default or a loss.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from datetime import datetime
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from benchmarks.common import cpu_slug, save_results
from unetkit.cli import parse_duration
from unetkit.runtime.hardware import cpu_description

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
RESULTS = Path(__file__).parent / "results"


def isbi_split(names: list[str]) -> dict[str, list[str]]:
    return {"train": [n for n in names if int(n) <= 24], "test": [n for n in names if int(n) >= 25]}


# name -> (the split to evaluate on, extra `train` options that state facts about the data)
DATASETS = {
    "isbi2012": ("test", []),
    "hc18-dev": ("val", []),
    "camvid-dev": ("val", ["--ignore-value", "11"]),
    "dsb2018-dev": ("val", []),  # instance masks: recognised from the masks (issue 21)
    "dsb2018-dev-spread": ("val", []),  # derived below (issue 22)
}
# Sets made from a shared one in the run's temporary folder (never saved): name -> its source.
# dsb2018-dev-spread: each dsb2018-dev image scaled by its own gain, 10**-2 to 1 (log-uniform,
# seeded by the file name) and saved as 16-bit: fluorescence whose brightness varies by two
# orders of magnitude from image to image, where dsb2018-dev's own spreads ~7-fold.
DERIVED = {"dsb2018-dev-spread": "dsb2018-dev"}
OBJECT_KEYS = ("adapted_rand_error", "ap", "f1", "ap50", "ap50_90", "true_objects", "predicted_objects")
# What the recipe chose, shown with each result.
PLAN_KEYS = ("scale", "patch_size", "patches_per_image", "lr", "orientation", "class_weights")
# The issue 10 bars, checked in the table: what must be reached in 5 CPU minutes.
BARS = {
    "isbi2012": "cell (255) Dice >= 0.945, membrane (0) Dice >= 0.78",
    "hc18-dev": "head (255) Dice >= 0.96",
    "camvid-dev": "mean IoU over the 11 classes >= 0.45, no class at IoU 0",
    "dsb2018-dev": "AP@0.5 >= 0.84 and AP@0.7 >= 0.65 with 10 minutes (issue 21)",
    "dsb2018-dev-spread": "near dsb2018-dev's own AP: brightness alone must not cost objects (issue 22)",
}


def spread_brightness(image: Path, out_dir: Path) -> None:
    """dsb2018-dev-spread's image (DERIVED): 8-bit `image` times a gain of 10**-2 to 1, as uint16."""
    gain = 10 ** (-2 * np.random.default_rng(zlib.crc32(image.stem.encode())).random())
    pixels = np.asarray(Image.open(image), np.float64) * 257 * gain
    tifffile.imwrite(out_dir / f"{image.stem}.tif", np.round(pixels).astype(np.uint16))


def split_folders(root: Path, work: Path, derived: bool = False) -> dict[str, tuple[Path, Path]]:
    """{split: (images dir, masks dir)} of symbolic links into `root`; with `derived`, the images
    are spread_brightness's copies instead."""
    names = sorted(p.stem for p in (root / "images").iterdir())
    split_file = root / "split.json"
    splits = json.loads(split_file.read_text()) if split_file.exists() else isbi_split(names)
    folders = {}
    for split, members in splits.items():
        for kind in ("images", "masks"):
            (work / split / kind).mkdir(parents=True)
            for path in (root / kind).iterdir():
                if path.stem in set(members) and derived and kind == "images":
                    spread_brightness(path, work / split / kind)
                elif path.stem in set(members):
                    (work / split / kind / path.name).symlink_to(path.resolve())
        folders[split] = (work / split / "images", work / split / "masks")
    return folders


def first_pairs(folders: tuple[Path, Path], count: int) -> tuple[Path, Path]:
    """Folders beside `folders` holding the links of their first `count` pairs (by file name)."""
    subset = []
    for folder in folders:
        target = folder.parent.parent / f"first{count}" / folder.name
        target.mkdir(parents=True)
        for link in sorted(folder.iterdir())[:count]:
            (target / link.name).symlink_to(link.resolve())
        subset.append(target)
    return subset[0], subset[1]


def run_timed(command: list[str], log_path: Path, marker: str) -> dict:
    """Run `command`, its output to `log_path` (and echoed), noting when a line starts with
    `marker`; returns seconds, seconds to the marker, peak RSS (MiB, from wait4) and exit code."""
    started = time.perf_counter()
    marked = None
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for line in process.stdout:
            log.write(line)
            print("    " + line, end="", flush=True)
            if marked is None and line.startswith(marker):
                marked = time.perf_counter() - started
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "seconds_to_marker": None if marked is None else round(marked, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024),  # Linux reports KiB
        "exit_code": process.returncode,
    }


def run_dataset(
    name: str, seconds: float | None, data_root: Path, out_root: Path, extra: list[str], subset: int | None = None
) -> dict:
    """Train on the set's training split (or the first `subset` of it, by name) for `seconds`
    (None: the epochs `extra` names) and evaluate."""
    eval_split, facts = DATASETS[name]
    out = out_root / name
    unetkit = [sys.executable, "-m", "unetkit.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        folders = split_folders(data_root / DERIVED.get(name, name), Path(tmp), derived=name in DERIVED)
        train_images, train_masks = folders["train"] if subset is None else first_pairs(folders["train"], subset)
        command = [*unetkit, "train", "--images", str(train_images), "--masks", str(train_masks)]
        budget = ["--time", f"{seconds:g}"] if seconds is not None else []
        command += ["--out", str(out), *budget, "--no-progress", *facts, *extra]
        print(f"{name}: {' '.join(command[2:])}", flush=True)
        train = run_timed(command, out_root / f"{name}-train.log", "AMP:")
        if train["exit_code"] != 0:
            return {"name": name, "error": f"train exited {train['exit_code']}", "train": train}
        images, masks = folders[eval_split]
        report_path = out_root / f"{name}-eval.json"
        command = [*unetkit, "evaluate", "--checkpoint", str(out / "best.pt"), "--images", str(images)]
        command += ["--masks", str(masks), "--json", str(report_path), "--no-progress"]
        evaluation = run_timed(command, out_root / f"{name}-eval.log", "")
    if evaluation["exit_code"] != 0:
        return {"name": name, "error": f"evaluate exited {evaluation['exit_code']}", "train": train}
    report = json.loads(report_path.read_text())
    epochs = sum(1 for _ in (out / "metrics.csv").open()) - 1  # a header, then one row an epoch
    config = json.loads((out / "config.json").read_text())
    return {
        "name": name,
        "evaluated_on": eval_split,
        "images": report["num_images"],
        "per_class": [
            {"value": row["mask_value"], "dice": row["dice"], "iou": row["iou"]} for row in report["per_class"]
        ],
        "mean_dice": report["mean_dice"],
        "mean_iou": report["mean_iou"],
        "mean_is": report["mean_is"],
        "objects": {key: report.get("objects", {}).get(key) for key in OBJECT_KEYS},
        "epochs": epochs,
        "seconds_to_first_epoch": train["seconds_to_marker"],
        "train_seconds": train["seconds"],
        "eval_seconds": evaluation["seconds"],
        "peak_rss_mib": max(train["peak_rss_mib"], evaluation["peak_rss_mib"]),
        "plan": {
            key: config.get(key)
            for key in ("scale", "patch_size", "patches_per_image", "lr", "orientation", "class_weights")
        },
        "bar": BARS[name],
    }


def format_table(rows: list[dict]) -> str:
    lines = [
        "| data set | split | per class Dice / IoU | mean Dice | mean IoU | objects: Rand error / AP@0.5 / "
        "AP@0.5:0.9 (pooled) | epochs | "
        "to 1st epoch | train s | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['name']} | {row['error']} | | | | | | | | |")
            continue
        classes = ", ".join(f"{c['value']}: {_show(c['dice'])} / {_show(c['iou'])}" for c in row["per_class"])
        objects = row.get("objects") or {}
        objects_shown = " / ".join(_show(objects.get(key)) for key in ("adapted_rand_error", "ap50", "ap50_90"))
        lines.append(
            f"| {row['name']} | {row['evaluated_on']} ({row['images']}) | {classes} | {_show(row['mean_dice'])} | "
            f"{_show(row['mean_iou'])} | {objects_shown} | {row['epochs']} | {row['seconds_to_first_epoch']} s | "
            f"{row['train_seconds']:.0f} | {row['peak_rss_mib']} |"
        )
    return "\n".join(lines)


def _show(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__.split("\n")[0])
    parser.add_argument("--time", type=parse_duration, default=300.0, help="training budget per data set (5m)")
    parser.add_argument("--only", action="append", choices=sorted(DATASETS), help="run only this data set")
    parser.add_argument("--data", type=Path, default=DATA, help=f"the data sets' folder (default {DATA})")
    parser.add_argument("--out", type=Path, default=Path("runs") / "accuracy", help="run folders and logs")
    parser.add_argument("--json", type=Path, help="results file (default benchmarks/results/accuracy-...)")
    parser.add_argument(
        "--epochs", type=int, help="experiments only: this many epochs instead of --time, so two versions of a "
        "change in numerics train as long as each other whatever their speed",
    )  # fmt: skip
    parser.add_argument(
        "--train-options", default="", help="experiments only, not the table: more train options, e.g. '--scale 0.25'"
    )
    args = parser.parse_args(argv)
    names = args.only or [name for name in DATASETS if name not in DERIVED]
    missing = [name for name in names if not (args.data / DERIVED.get(name, name) / "images").is_dir()]
    if missing:
        parser.exit(2, f"{args.data}: data set(s) {', '.join(missing)} not found; pass --data DIR\n")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_root = args.out / stamp
    out_root.mkdir(parents=True)
    budget = f"{args.epochs} epochs" if args.epochs else f"{args.time:g} s"
    print(f"CPU: {cpu_description()}; training budget {budget} per data set", flush=True)
    extra = args.train_options.split() + (["--epochs", str(args.epochs)] if args.epochs else [])
    seconds = None if args.epochs else args.time
    rows = [run_dataset(name, seconds, args.data, out_root, extra) for name in names]
    table = format_table(rows)
    print(table)
    results = {"cpu": cpu_description(), "time_budget_s": seconds, "train_options": extra, "when": stamp}
    results.update(rows=rows, table=table)
    path = args.json or RESULTS / f"accuracy-{datetime.now():%Y-%m-%d-%H%M}-{cpu_slug()}.json"
    save_results(path, results)
    print(f"results: {path}")
    return rows


if __name__ == "__main__":
    main()
