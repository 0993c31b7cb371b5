"""Quality against CPU minutes, unetkit's defaults against milesial/Pytorch-UNet's:
`python -m benchmarks.time_to_quality [--minutes 1 3 10 30] [--data ../shared/data/dsb2018-dev]`.

On dsb2018-dev (train 160 / val 40 fluorescence-nuclei images, instance masks), at each budget:
- unetkit: `unetkit train --images TRAIN --masks TRAIN --time T` with nothing else set (the
  recipe recognises the instance masks), then the objects of `Predictor.objects` on val;
- milesial: its train.py with its defaults (the paper's U-Net at 64 base channels with transposed
  convolutions, RMSprop lr 1e-5, batch 1, images at scale 0.5, 10% held out and scored five times
  an epoch for ReduceLROnPlateau, CE + Dice, --amp, clipping at 1), epochs until the budget is
  spent (its default is 5), the masks made binary (nucleus or not: its loader takes each mask
  value as a class, so a user must); then predict.py on val (scale 0.5, logits resized to the
  image, argmax), its objects the connected components of the mask (it has no object step).
Both scored by the same code: foreground Dice pooled over val, and AP at IoU 0.5 and 0.5:0.9
pooled as StarDist scores DSB2018 (unetkit.scoring.objects). Training time is wall clock on the
CPU at hand (printed), start-up included; one run per cell."""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import tifffile
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.measure import label

from benchmarks.accuracy import DATA, RESULTS, split_folders
from benchmarks.common import cpu_slug, save_results
from benchmarks.peers import MilesialUNet, milesial_dice_loss
from unetkit.data import read_image, read_mask
from unetkit.inference import InferenceOptions, Predictor
from unetkit.runtime.hardware import cpu_description
from unetkit.scoring.objects import mean_scores, object_scores

MILESIAL_SCALE = 0.5  # train.py's --scale default
TOOLS = ("unetkit", "milesial", "stardist")


def pairs(folders: tuple[Path, Path]) -> list[tuple[Path, Path]]:
    images, masks = folders
    return [(image, next(masks.glob(image.stem + ".*"))) for image in sorted(images.iterdir())]


def scores(pairs_: list[tuple[Path, Path]], predicted: list[np.ndarray]) -> dict:
    """Foreground Dice pooled over the images, and pooled AP of the objects (label images)."""
    inter = total = 0
    per_image = []
    for (_, mask_path), objects in zip(pairs_, predicted, strict=True):
        true = read_mask(mask_path)
        inter += int(((true > 0) & (objects > 0)).sum())
        total += int((true > 0).sum() + (objects > 0).sum())
        per_image.append(object_scores(true, objects))
    means = mean_scores(per_image)
    return {"foreground_dice": 2 * inter / total if total else 1.0, "ap50": means["ap50"], "ap50_90": means["ap50_90"]}


def unetkit_run(train: tuple[Path, Path], val: list[tuple[Path, Path]], seconds: float, out: Path) -> dict:
    command = [sys.executable, "-m", "unetkit.cli", "train", "--images", str(train[0]), "--masks", str(train[1])]
    command += ["--out", str(out), "--time", f"{seconds:g}", "--no-progress"]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    trained = time.perf_counter() - started
    predictor = Predictor(out / "best.pt", options=InferenceOptions(progress=False))
    predicted = [predictor.objects(predictor.logits(read_image(image), image))[0] for image, _ in val]
    epochs = sum(1 for _ in (out / "metrics.csv").open()) - 1
    return {"train_seconds": round(trained, 1), "epochs": epochs, **scores(val, predicted)}


def run_tool(
    tool: str, python: str | None, folders: dict, val: list[tuple[Path, Path]], seconds: float, out: Path
) -> dict:
    """One cell of the table: `tool` trained for `seconds` and scored on `val`."""
    if tool == "unetkit":
        return unetkit_run(folders["train"], val, seconds, out)
    if tool == "milesial":
        return milesial_run(folders["train"], val, seconds)
    return stardist_run(str(python), folders["train"], val, seconds, out)


def stardist_run(
    python: str, train: tuple[Path, Path], val: list[tuple[Path, Path]], seconds: float, out: Path
) -> dict:
    """StarDist's own training and prediction in its environment (stardist_peer.py), scored here."""
    script = Path(__file__).with_name("stardist_peer.py")
    command = [python, str(script), str(train[0]), str(train[1]), str(val[0][0].parent), str(out), f"{seconds:g}"]
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    said = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    predicted = [tifffile.imread(out / f"{image.stem}.tif") for image, _ in val]
    return {**said, **scores(val, predicted)}


def milesial_input(path: Path, scale: float, mask: bool = False) -> np.ndarray:
    """BasicDataset.preprocess: resized by `scale` (bicubic; nearest for masks), /255 for images."""
    source = Image.fromarray(read_mask(path) > 0) if mask else Image.open(path).convert("L")
    size = (int(scale * source.width), int(scale * source.height))
    resized = np.asarray(source.resize(size, Image.NEAREST if mask else Image.BICUBIC))
    return resized.astype(np.int64) if mask else resized[None].astype(np.float32) / 255


def milesial_dice(model: torch.nn.Module, items: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """evaluate.py: the mean over its validation images of the multiclass Dice, background left out."""
    model.eval()
    total = 0.0
    with torch.no_grad(), torch.autocast("cpu"):
        for image, mask in items:
            pred = model(torch.from_numpy(image)[None]).argmax(1)[0]
            true = torch.from_numpy(mask)
            inter, sets = 2 * ((pred == 1) & (true == 1)).sum(), (pred == 1).sum() + (true == 1).sum()
            total += float((inter + 1e-6) / (sets + 1e-6)) if sets else 1.0
    model.train()
    return total / max(1, len(items))


def milesial_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, image: np.ndarray, mask: np.ndarray
) -> None:
    """One step of train.py with --amp (bf16 on a CPU), batch 1."""
    x = torch.from_numpy(image)[None].contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(mask)[None]
    with torch.autocast("cpu"):
        pred = model(x)
        one_hot = F.one_hot(y, 2).permute(0, 3, 1, 2).float()
        loss = F.cross_entropy(pred, y) + milesial_dice_loss(F.softmax(pred, dim=1).float(), one_hot)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    loss.item()  # epoch_loss += loss.item(): a host sync every step, as train.py does


def milesial_train(train: list[tuple[Path, Path]], seconds: float) -> tuple[torch.nn.Module, int]:
    """train.py's loop with its defaults until `seconds` are spent; the model and its epochs."""
    started = time.perf_counter()
    torch.manual_seed(0)
    random.seed(0)
    items = [(milesial_input(i, MILESIAL_SCALE), milesial_input(m, MILESIAL_SCALE, mask=True)) for i, m in train]
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(0)).tolist()
    n_val = int(len(items) * 0.1)
    val, fit = [items[i] for i in order[:n_val]], [items[i] for i in order[n_val:]]
    model = MilesialUNet(1, 2).to(memory_format=torch.channels_last)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-5, weight_decay=1e-8, momentum=0.999, foreach=True)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "max", patience=5)
    every = max(1, len(fit) // 5)  # division_step: five validations an epoch
    epoch = step = 0
    while time.perf_counter() - started < seconds:
        epoch += 1
        for index in torch.randperm(len(fit)).tolist():
            milesial_step(model, optimizer, *fit[index])
            step += 1
            if step % every == 0:
                plateau.step(milesial_dice(model, val))
            if time.perf_counter() - started >= seconds:
                break
    return model, epoch


def milesial_run(train: tuple[Path, Path], val: list[tuple[Path, Path]], seconds: float) -> dict:
    started = time.perf_counter()
    model, epochs = milesial_train(pairs(train), seconds)
    trained = time.perf_counter() - started
    model.eval()
    predicted = []
    with torch.no_grad():  # predict.py: fp32, the logits resized to the image, argmax
        for image_path, _ in val:
            image = milesial_input(image_path, MILESIAL_SCALE)
            width, height = Image.open(image_path).size
            logits = F.interpolate(model(torch.from_numpy(image)[None]), (height, width), mode="bilinear")
            predicted.append(label(logits.argmax(1)[0].numpy() > 0, connectivity=1))
    return {"train_seconds": round(trained, 1), "epochs": epochs, **scores(val, predicted)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.time_to_quality", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 3, 10, 30], help="budgets (1 3 10 30)")
    parser.add_argument("--data", type=Path, default=DATA / "dsb2018-dev", help="the data set's folder")
    parser.add_argument("--json", type=Path, help="results file (default benchmarks/results/time-to-quality-...)")
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=["unetkit", "milesial"], help="(unetkit milesial)")
    parser.add_argument("--stardist-python", help="a Python with tensorflow-cpu and stardist installed (for stardist)")
    args = parser.parse_args(argv)
    tools = args.tools
    if "stardist" in tools and not args.stardist_python:
        parser.exit(
            2,
            "--tools stardist needs --stardist-python PATH: a Python where `pip install tensorflow-cpu stardist` ran\n",
        )
    if not (args.data / "split.json").is_file():
        parser.exit(2, f"{args.data}: no split.json here; pass --data DIR (e.g. ../shared/data/dsb2018-dev)\n")
    print(f"CPU: {cpu_description()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="unetkit-ttq-") as tmp:
        folders = split_folders(args.data, Path(tmp))
        val = pairs(folders["val"])
        for minutes in args.minutes:
            for tool in args.tools:
                row = run_tool(
                    tool, args.stardist_python, folders, val, minutes * 60, Path(tmp) / f"{minutes:g}-{tool}"
                )
                rows.append({"tool": tool, "minutes": minutes, **row})
                print(json.dumps(rows[-1]), flush=True)
    table = format_table(rows)
    print(table)
    results = {"cpu": cpu_description(), "data": str(args.data), "rows": rows, "table": table}
    path = args.json or RESULTS / f"time-to-quality-{datetime.now():%Y-%m-%d-%H%M}-{cpu_slug()}.json"
    print(f"results: {save_results(path, results)}")
    return results


def format_table(rows: list[dict]) -> str:
    lines = [
        "| minutes | tool | foreground Dice | AP@0.5 | AP@0.5:0.9 | epochs | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        shown = [f"{row[key]:.3f}" if row[key] is not None and not math.isnan(row[key]) else "n/a"
                 for key in ("foreground_dice", "ap50", "ap50_90")]  # fmt: skip
        lines.append(
            f"| {row['minutes']:g} | {row['tool']} | {' | '.join(shown)} | {row['epochs']} | {row['train_seconds']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
