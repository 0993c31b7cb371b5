"""`unetkit report RUN_DIR`: one self-contained HTML file about a run. What the options were and
where it ran, how training went, how good best.pt is per class (and per object), where it is
confused, and its worst and best images side by side with the truth. Images are embedded, so
the file opens from disk with no network; HTML comes from a Jinja2 template (autoescaped)."""

from __future__ import annotations

import csv
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
from unetkit.train.run_files import COLUMNS

WORST, BEST = 3, 1  # example images shown
VERDICTS = ((0.9, "good"), (0.7, "usable"), (0.0, "weak"))  # Dice at least -> the word
FOLDER_KEYS = ("images", "masks", "val_images", "val_masks", "mask_suffix")  # config.json's paths (or null)


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
    """metrics.csv's rows as numbers: the columns train writes (others, added by hand, are skipped);
    an edited or cut file is refused naming its line, not drawn wrong."""
    path = run / "metrics.csv"
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return history_rows(csv.DictReader(handle), path)
    except (UnicodeDecodeError, csv.Error) as err:
        raise UnetkitError(
            f"{path}: not a readable CSV file ({err.__class__.__name__}); restore the metrics.csv train wrote"
        ) from None


def history_rows(reader: csv.DictReader, path: Path) -> list[dict]:
    missing = [column for column in COLUMNS if column not in (reader.fieldnames or [])]
    if missing:
        raise UnetkitError(
            f"{path}: no column {', '.join(missing)} in its header; the file was edited or is not a run's "
            f"metrics.csv, restore the header {','.join(COLUMNS)}"
        )
    rows = []
    for row in reader:
        try:
            rows.append({column: float(row[column]) for column in COLUMNS})
        except (ValueError, TypeError):  # a word or an empty cell, or a row cut short (None)
            raise UnetkitError(
                f"{path}: line {reader.line_num} is not a row of {len(COLUMNS)} numbers; the file was edited or "
                "cut, fix that line or remove it"
            ) from None
    return rows


def read_config(run: Path) -> dict:
    """config.json, checked where the report reads it (the option table, the image folders, the
    validation images' names): a broken or edited file is refused by name, not shown half."""
    path = run / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        raise UnetkitError(
            f"{path}: not readable JSON ({str(err)[:80]}); the file was edited or cut, restore the one "
            "'unetkit train' wrote"
        ) from None
    resolved = config.get("resolved", {}) if isinstance(config, dict) else None
    names = resolved.get("val_images") if isinstance(resolved, dict) else None
    sound = isinstance(resolved, dict) and (names is None or isinstance(names, list))
    folders = [config.get(key) for key in FOLDER_KEYS] if sound else []
    paths = sound and all(isinstance(v, str) for v in folders[:2]) and all(isinstance(v, str | None) for v in folders)
    if not (paths and (folders[2] is None) == (folders[3] is None)):
        raise UnetkitError(
            f"{path}: not a run's options as 'unetkit train' writes them (an object whose {', '.join(FOLDER_KEYS)} "
            "are paths or null and 'resolved' an object); the file was edited, restore the one train wrote"
        )
    return config


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
    config, history = read_config(run), read_history(run)  # both before the minutes of evaluation
    if pairs is None:
        pairs, source = run_pairs(config, images, masks)
    if not pairs:
        raise UnetkitError(f"{source}: no image/mask pairs to report on")
    predictor = Predictor(run / "best.pt", options=InferenceOptions(backend="torch"))
    report = evaluate_pairs(predictor, pairs, progress=False)
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
