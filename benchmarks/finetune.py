"""Fine-tuning a ready-made model against training from scratch, on few images and little time:
`python -m benchmarks.finetune [--model nuclei] [--images 8 32] [--time 1m 3m]`.

For each count of training images (the first N of dsb2018-dev's train split, by file name: the
names are hashes, so that is a random draw) and each budget, it runs `unetkit train --time T`
twice, from scratch and with `--init-from MODEL`, then `unetkit evaluate` on the val split
(benchmarks/accuracy.py's run_dataset: the same evaluation as the accuracy table). The ready-made
model never saw the val images. `--train-options` adds options to the --init-from runs (e.g. an
LR to compare). Results: benchmarks/results/finetune-<date>-<cpu>.json; the table goes in
benchmarks/NOTES.md.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from benchmarks.accuracy import DATA, RESULTS, run_dataset
from benchmarks.common import cpu_slug, save_results
from unetkit.cli import parse_duration
from unetkit.runtime.hardware import cpu_description


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.finetune", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="nuclei", help="the ready-made model to start from (default nuclei)")
    parser.add_argument("--data", type=Path, default=DATA, help=f"the data sets' folder (default {DATA})")
    parser.add_argument("--images", type=int, nargs="+", default=[8, 32], help="training image counts")
    parser.add_argument("--time", type=parse_duration, nargs="+", default=[60.0, 180.0], help="budgets")
    parser.add_argument("--starts", nargs="+", default=["scratch", "init"], choices=["scratch", "init"])
    parser.add_argument("--untouched", action="store_true", help="also score MODEL as shipped (the bar of issue 33)")
    parser.add_argument("--train-options", default="", help="more options for the --init-from runs")
    parser.add_argument("--out", type=Path, default=Path("runs") / "finetune", help="run folders and logs")
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_description()}", flush=True)
    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    rows = [untouched(args.model, args.data, args.out / stamp)] if args.untouched else []
    for count in args.images:
        for seconds in args.time:
            for start in args.starts:
                extra = ["--init-from", args.model, *args.train_options.split()] if start == "init" else []
                out = args.out / stamp / f"{count}-{seconds:g}-{start}"
                out.mkdir(parents=True)
                row = run_dataset("dsb2018-dev", seconds, args.data, out, extra, subset=count)
                rows.append({**row, "train_images": count, "seconds": seconds, "start": start, "options": extra})
                print(table(rows), flush=True)
    path = RESULTS / f"finetune-{datetime.now():%Y-%m-%d-%H%M}-{cpu_slug()}.json"
    save_results(path, {"cpu": cpu_description(), "model": args.model, "rows": rows, "table": table(rows)})
    print(f"results: {path}")


def untouched(model: str, data: Path, out: Path) -> dict:
    """MODEL as shipped, scored on the val split as the runs are: what a loop that starts from it
    must never end below (issue 33)."""
    import json
    import subprocess
    import sys
    import tempfile

    from benchmarks.accuracy import split_folders

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        images, masks = split_folders(data / "dsb2018-dev", Path(tmp))["val"]
        report = out / "untouched-eval.json"
        command = [sys.executable, "-m", "unetkit.cli", "evaluate", "--model", model, "--images", str(images)]
        subprocess.run([*command, "--masks", str(masks), "--json", str(report), "--no-progress"], check=True)
    scores = json.loads(report.read_text())
    objects = {key: scores.get("objects", {}).get(key) for key in ("ap50", "ap50_90")}
    per_class = [{"value": row["mask_value"], "dice": row["dice"]} for row in scores["per_class"]]
    return {"train_images": 0, "seconds": 0.0, "start": "untouched", "options": [], "objects": objects,
            "per_class": per_class, "epochs": 0}  # fmt: skip


def table(rows: list[dict]) -> str:
    lines = ["| images | budget | start | epochs | AP@0.5 | AP@0.5:0.9 | object Dice |", "|---" * 7 + "|"]
    for row in rows:
        objects = row.get("objects") or {}
        dice = next((c["dice"] for c in row.get("per_class", []) if c["value"] == 1), None)
        shown = [objects.get("ap50"), objects.get("ap50_90"), dice]
        cells = " | ".join("n/a" if value is None else f"{value:.3f}" for value in shown)
        start = " ".join([row["start"], *row["options"][2:]])
        run = f"| {row['train_images']} | {row['seconds']:g} s | {start} | {row.get('epochs', 'n/a')}"
        lines.append(f"{run} | {cells} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
