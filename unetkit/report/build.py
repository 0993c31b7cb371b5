"""`unetkit report RUN_DIR`: one self-contained HTML file about a run. What the options were and
where it ran, how training went, how good best.pt is per class (and per object), where it is
confused, and its worst and best images side by side with the truth. Images are embedded, so
the file opens from disk with no network; HTML comes from a Jinja2 template (autoescaped)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import unetkit.report.figures as figures
from unetkit.core.atomic import atomic_write
from unetkit.data import Pair, find_pairs
from unetkit.data.io import read_pair
from unetkit.errors import UnetkitError
from unetkit.evaluate import evaluate_pairs
from unetkit.inference import InferenceOptions, Predictor

WORST, BEST = 3, 1  # example images shown
VERDICTS = ((0.9, "good"), (0.7, "usable"), (0.0, "weak"))  # Dice at least -> the word


def run_pairs(config: dict, images: str | None, masks: str | None) -> tuple[list[Pair], str]:
    """The labelled images to show: the given folders, else the run's own validation images."""
    if images or masks:
        if not (images and masks):
            raise UnetkitError("give both --images and --masks, or neither (the run's validation images)")
        return find_pairs(images, masks), f"{images}"
    resolved = config.get("resolved", {})
    if config.get("val_images"):
        return find_pairs(config["val_images"], config["val_masks"], config.get("mask_suffix")), "validation folder"
    names = set(resolved.get("val_images") or [])
    if not names:
        raise UnetkitError("the run had no validation images; give --images DIR --masks DIR to report on")
    pairs = [
        p for p in find_pairs(config["images"], config["masks"], config.get("mask_suffix")) if p.image.name in names
    ]
    return pairs, "the run's validation images"


def verdict(dice: float | None) -> str:
    if dice is None:
        return "absent from these images"
    return next(word for floor, word in VERDICTS if dice >= floor)


def examples(predictor: Predictor, pairs: Sequence[Pair], per_image: list[dict]) -> list[dict]:
    """The worst and best images by Dice, with their panels."""
    ranked = sorted(range(len(per_image)), key=lambda i: per_image[i]["dice"])
    chosen = ranked[:WORST] + [i for i in ranked[-BEST:] if i not in ranked[:WORST]]
    shown = []
    for rank, index in enumerate(chosen):
        pair = pairs[index]
        image, mask = read_pair(pair.image, pair.mask)
        truth = predictor.mask_values.encode(mask, pair.mask)
        prediction = predictor.class_ids(image, pair.image)
        kind = "worst" if rank < WORST else "best"
        title = f"{kind}: {pair.image.name}, Dice {per_image[index]['dice']:.3f}"
        shown.append({"kind": kind, "name": pair.image.name, "dice": per_image[index]["dice"],
                      "png": figures.example(image, truth, prediction, title)})  # fmt: skip
    return shown


def read_history(run: Path) -> list[dict]:
    import csv

    with (run / "metrics.csv").open() as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def write_report(
    run: str | Path,
    images: str | None = None,
    masks: str | None = None,
    out: str | Path | None = None,
    log: Callable[[str], None] = print,
    pairs: Sequence[Pair] | None = None,
    source: str = "",
) -> Path:
    """Write the report of the run folder `run` (default `run/report.html`); returns its path.
    The images come from `images`/`masks`, or `pairs` (named by `source`), else the run's
    validation images."""
    run = Path(run)
    for needed in ("config.json", "metrics.csv", "best.pt"):
        if not (run / needed).is_file():
            raise UnetkitError(f"{run / needed}: not found; give the folder of a finished 'unetkit train' run")
    config = json.loads((run / "config.json").read_text())
    if pairs is None:
        pairs, source = run_pairs(config, images, masks)
    if not pairs:
        raise UnetkitError(f"{source}: no image/mask pairs to report on")
    predictor = Predictor(run / "best.pt", options=InferenceOptions(backend="torch"))
    report = evaluate_pairs(predictor, pairs, progress=False)
    history = read_history(run)
    values = predictor.mask_values.values
    classes = [dict(row, verdict=verdict(row["dice"])) for row in report["per_class"]]
    context = {
        "run": run.resolve().name,
        "source": source,
        "report": report,
        "classes": classes,
        "objects": report.get("objects") if report.get("objects", {}).get("adapted_rand_error") is not None else None,
        "config": {k: v for k, v in config.items() if k != "resolved" and v not in (None, "", False)},
        "resolved": config.get("resolved", {}),
        "history": history,
        "train_seconds": sum(row["seconds"] for row in history),
        "curves": figures.curves(history),
        "confusion": figures.confusion(report["confusion_matrix"], values),
        "examples": examples(predictor, pairs, report["per_image"]),
    }
    html = render(context)
    path = Path(out) if out else run / "report.html"
    atomic_write(path, lambda temporary: temporary.write_text(html, encoding="utf-8"))
    log(f"report: {path}")
    return path


def render(context: dict) -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape

    environment = Environment(loader=PackageLoader("unetkit.report", "."), autoescape=select_autoescape(["html"]))
    environment.filters["score"] = lambda v: "n/a" if v is None else f"{v:.3f}"
    return environment.get_template("report.html").render(**context)
