"""`unetkit demo`: the whole path on the bundled ISBI 2012 EM membrane slices.

Slices 00-21 train, 22-24 validate (choose best.pt), 25-29 are held out: never trained or
selected on, and scored at their full 512x512 size against the original masks.
Training is the default `fast` recipe (see unetkit/train/recipes.py), nothing set by hand but the
run's length: a wall-clock budget of DEMO_SECONDS, sized for a 2-core CPU. The LR anneals over the
budget, so a faster CPU simply trains more epochs in the same time, and a slow or busy one still
trains DEMO_MIN_EPOCHS. What the recipe picks from the 22 training slices: full resolution (the
membranes are 2-3 px wide), 256x256 crops, four per slice and epoch, LR 4e-3, no elastic
deformation in a short run, and membrane pixels weighted 1.9x the cells' in the loss.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from unetkit.data import find_pairs
from unetkit.errors import UnetkitError
from unetkit.evaluate import evaluate_pairs, format_report
from unetkit.inference import Predictor, overlay, save_png
from unetkit.inference.outputs import output_name
from unetkit.report import write_report
from unetkit.runs import run_training
from unetkit.runtime.atomic import write_json
from unetkit.runtime.hardware import cpu_description
from unetkit.scoring.metrics import EvaluationReport
from unetkit.train import TrainConfig

DEMO_DATA = Path(__file__).parent / "demo_data" / "isbi2012"
TRAIN_SLICES = range(0, 22)
VAL_SLICES = range(22, 25)
HELDOUT_SLICES = range(25, 30)
DEMO_SECONDS = 130.0
DEMO_MIN_EPOCHS = 8  # fp32 on a quiet 2-core CPU trains ~13 in the budget; a busy machine still gets 8


def demo_config(out: str | Path, progress: bool = True, amp: str = "auto") -> TrainConfig:
    return TrainConfig(
        recipe="fast",
        time=DEMO_SECONDS,
        min_epochs=DEMO_MIN_EPOCHS,
        amp=amp,
        out=str(out),
        progress=progress,
        seed=0,
    )


def run_demo(out: str | Path = "runs/demo", progress: bool = True, amp: str = "auto") -> EvaluationReport:
    out = Path(out)
    pairs = find_pairs(DEMO_DATA / "images", DEMO_DATA / "masks")
    by_slice = {int(p.name): p for p in pairs}
    if sorted(by_slice) != list(range(30)):
        raise UnetkitError(f"{DEMO_DATA}: the bundled demo data is incomplete; reinstall unetkit")
    train_pairs = [by_slice[i] for i in TRAIN_SLICES]
    val_pairs = [by_slice[i] for i in VAL_SLICES]
    heldout_pairs = [by_slice[i] for i in HELDOUT_SLICES]

    print(f"unetkit demo: ISBI 2012 EM membranes ({DEMO_DATA / 'SOURCE.md'})")
    print(f"CPU: {cpu_description()}")
    started = time.perf_counter()
    # The report comes at the end, from the held-out slices rather than the validation ones. The
    # run's config names the bundled folders, so its folder resumes and reports as any run's does
    # (with no folder, `--resume` and `report` asked for --images: a red-team finding).
    cfg = dataclasses.replace(
        demo_config(out, progress, amp), report=False, images=str(DEMO_DATA / "images"), masks=str(DEMO_DATA / "masks")
    )
    result = run_training(cfg, train_pairs, val_pairs)
    trained = time.perf_counter() - started

    predictor = Predictor(result.best_checkpoint, amp=amp)
    overlays = out / "heldout"

    def write_outputs(pair, image, class_ids, _objects) -> None:
        save_png(overlays / output_name(pair.name, "mask"), predictor.mask_values.decode(class_ids))
        save_png(overlays / output_name(pair.name, "overlay"), overlay(image, class_ids))

    report = evaluate_pairs(predictor, heldout_pairs, progress=progress, on_prediction=write_outputs)
    write_json(out / "heldout.json", report.to_dict())
    total = time.perf_counter() - started
    by_value = {row.mask_value: row for row in report.per_class}
    print(format_report(report))
    print(
        f"held-out slices 25-29 at 512x512: cell interior (255) Dice {by_value[255].dice:.4f} "
        f"IoU {by_value[255].iou:.4f}; membrane (0) Dice {by_value[0].dice:.4f} "
        f"IoU {by_value[0].iou:.4f}"
    )
    objects = report.objects
    print(
        f"held-out cells as objects: adapted Rand error {objects['adapted_rand_error']:.4f}, "
        f"{objects['matches']} matched at IoU 0.5 / {objects['predicted_objects']} predicted / "
        f"{objects['true_objects']} true"
    )
    print(f"training {trained:.0f}s, total {total:.0f}s")
    print(f"checkpoint: {result.best_checkpoint}")
    print(f"logs: {out / 'metrics.csv'}, {out / 'curves.png'}")
    print(f"held-out evaluation: {out / 'heldout.json'}; masks and overlays: {overlays}/")
    write_report(out, pairs=heldout_pairs, source="held-out slices 25-29")
    return report
