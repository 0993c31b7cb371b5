"""`unetkit report RUN_DIR`: one self-contained HTML file about a run. What the options were and
where it ran, how training went, how good best.pt is per class (and per object), where it is
confused, and its worst and best images side by side with the truth (their objects, for tasks
whose objects are counted, with merges, splits, misses and false objects outlined). Images are
embedded, so the file opens from disk with no network; HTML comes from a Jinja2 template
(autoescaped)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import unetkit.report.figures as figures
from unetkit.data import Pair, find_pairs
from unetkit.data.mask_values import MaskValues
from unetkit.data.objects import INSTANCE_CLASS_NAMES
from unetkit.data.pairing import expand_planes
from unetkit.errors import UnetkitError
from unetkit.evaluate import evaluate_pairs, training_images_among
from unetkit.inference import InferenceOptions, Predictor
from unetkit.inference.predictor import tiff_axes_for
from unetkit.runtime.atomic import atomic_write
from unetkit.runtime.folder_lock import RunLock
from unetkit.runtime.ownership import last_steps
from unetkit.scoring.objects import object_errors
from unetkit.train.run_files import COLUMNS, EpochRow

WORST, BEST = 3, 1  # example images shown
VERDICTS = ((0.9, "good"), (0.7, "usable"), (0.0, "weak"))  # Dice at least -> the word
FOLDER_KEYS = ("images", "masks", "val_images", "val_masks", "mask_suffix")  # config.json's paths (or null)


def run_pairs(config: dict, images: str | None, masks: str | None) -> tuple[list[Pair], str]:
    """The labelled images to show (a stack's planes each its own): the given folders, else the
    run's own validation images."""
    pairs, source = run_files(config, images, masks)
    return expand_planes(pairs, tiff_axes_for(InferenceOptions(), config)), source  # as predict reads them


def run_files(config: dict, images: str | None, masks: str | None) -> tuple[list[Pair], str]:
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


def shows_objects(mask_values: MaskValues, objects: dict | None) -> bool:
    """Whether the examples show objects rather than classes: when the report has object scores
    (`objects`, some true object in the images) of a task whose objects are counted
    (MaskValues.countable)."""
    return objects is not None and mask_values.countable


def examples(predictor: Predictor, pairs: Sequence[Pair], per_image: list[dict], objects: bool = False) -> list[dict]:
    """The worst and best images by Dice, or with `objects` by their objects' AP, with their
    panels: classes, or objects."""
    score = "ap" if objects else "dice"
    scores = [row.get(score, row["dice"]) for row in per_image]
    scores = [math.nan if value is None else float(value) for value in scores]
    # An image of no labelled pixel (a mask all void) has no score: ranked, NaN once made it a "worst".
    ranked = sorted((i for i, value in enumerate(scores) if not math.isnan(value)), key=scores.__getitem__)
    chosen = ranked[:WORST] + [i for i in ranked[-BEST:] if i not in ranked[:WORST]]
    shown = []
    for rank, index in enumerate(chosen):
        pair, scores = pairs[index], per_image[index]
        kind = "worst" if rank < WORST else "best"
        title = f"{kind}: {pair.label}, {image_scores(scores, objects)}"
        png, counts = (object_panels if objects else class_panels)(predictor, pair, title)
        shown.append({"kind": kind, "name": pair.label, "dice": scores["dice"], "png": png, "errors": counts})
    return shown


def image_scores(scores: dict, objects: bool) -> str:
    """An example's scores for its title: Dice, and for objects AP, adapted Rand error and counts."""
    text = f"Dice {show(scores['dice'])}"
    if objects and "ap" in scores:
        text += f", AP {show(scores['ap'])}, adapted Rand error {show(scores.get('adapted_rand_error'))}"
        counts = f"{scores['matches']} matched / {scores['predicted_objects']} predicted / {scores['true_objects']}"
        text += f", objects {counts} true"
    return text


def show(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def class_panels(predictor: Predictor, pair: Pair, title: str) -> tuple[str, None]:
    image, mask = pair.read()
    truth = predictor.mask_values.encode(mask, pair.mask)
    names = predictor.mask_values.legend
    return figures.example(image, truth, predictor.class_ids(image, pair.image), title, names), None


def object_panels(predictor: Predictor, pair: Pair, title: str) -> tuple[str, str]:
    """The true objects (as evaluate takes them from the mask), the predicted ones (as evaluate and
    predict --instances cut them), and their errors; returns the PNG and the errors' counts."""
    image, mask = pair.read()
    mask_values = predictor.mask_values
    target = mask_values.encode(mask, pair.mask)
    true = mask_values.true_objects(mask, target)
    pred = predictor.objects(predictor.logits(image, pair.image))[0]
    errors = object_errors(true, pred)
    return figures.object_example(image, true, pred, errors, title), errors.counts()


def read_history(run: Path) -> list[EpochRow]:
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


def history_rows(reader: csv.DictReader, path: Path) -> list[EpochRow]:
    missing = [column for column in COLUMNS if column not in (reader.fieldnames or [])]
    if missing:
        raise UnetkitError(
            f"{path}: no column {', '.join(missing)} in its header; the file was edited or is not a run's "
            f"metrics.csv, restore the header {','.join(COLUMNS)}"
        )
    rows = []
    for row in reader:
        try:
            rows.append(EpochRow.from_dict(row))
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
    finished: bool | None = None,
) -> Path:
    """Write the report of the run folder `run` (default `run/report.html`); returns its path.
    The images come from `images`/`masks`, or `pairs` (named by `source`), else the run's
    validation images. `finished`: whether the run's epochs are over (the run layer, after them);
    None reads the run folder's marker, and an unfinished run is said, with its --resume."""
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
    trained = training_images_among(predictor, pairs)
    if trained:
        log(f"note: {trained}")
    context = {"run": run.resolve().name, "source": source, "trained": trained, **scored(predictor, pairs)}
    if not (finished if finished is not None else last_steps(run) != "pending"):
        context["unfinished"] = unfinished(run, len(history))  # it read as a finished run's (a red-team round)
        log(f"note: {context['unfinished']}")
    context.update(
        config={k: v for k, v in config.items() if k != "resolved" and v not in (None, "", False)},
        resolved=config.get("resolved", {}),
        history=history,
        train_seconds=sum(row.seconds for row in history),
        curves=figures.curves(history),
    )
    html = render(context)
    path = Path(out) if out else run / "report.html"
    atomic_write(path, lambda temporary: temporary.write_text(html, encoding="utf-8"))
    log(f"report: {path}")
    return path


def unfinished(run: Path, epochs: int) -> str:
    """What the report of a run whose epochs are not over says: still training (its lock held by a
    live process: a resume beside it would write the same last.pt), or stopped, with its --resume."""
    training = RunLock(run).live_holder()
    if training is not None:
        return (
            f"This run is still training (process {training}): this report shows its first {epochs} epoch(s); "
            "it writes its own when it ends"
        )
    return (
        f"This run has not finished: it stopped after epoch {epochs}. Resume it with: "
        f"unetkit train --resume {run / 'last.pt'}"
    )


def scored(predictor: Predictor, pairs: Sequence[Pair]) -> dict:
    """The template's parts that come from scoring the model on `pairs`: the evaluation report, the
    classes with their verdicts, the object scores (when there are true objects), the confusion
    matrix, and the example images (of objects where `shows_objects`)."""
    report = evaluate_pairs(predictor, pairs, progress=False)
    objects = report.objects if report.objects.get("adapted_rand_error") is not None else None
    object_examples = shows_objects(predictor.mask_values, objects)
    return {
        "report": report,
        "classes": [
            dict(asdict(row), verdict=verdict(row.dice), label=class_label(predictor.mask_values, row.class_id))
            for row in report.per_class
        ],
        "objects": objects,
        "object_examples": object_examples,
        "confusion": figures.confusion(report.confusion_matrix, predictor.mask_values.values),
        "examples": examples(predictor, pairs, report.per_image, object_examples),
    }


def class_label(mask_values: MaskValues, class_id: int) -> str:
    """How the report names a class: by its mask value; an instance model's by the class its masks
    train as (object, boundary, centre), since the masks hold object ids, not those values."""
    if mask_values.instances:
        return f"{INSTANCE_CLASS_NAMES[mask_values.instances][class_id]} (trained from the object ids)"
    return f"mask value {mask_values.values[class_id]}"


def render(context: dict) -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape

    environment = Environment(loader=PackageLoader("unetkit.report", "."), autoescape=select_autoescape(["html"]))
    environment.filters["score"] = lambda v: "n/a" if v is None else f"{v:.3f}"
    return environment.get_template("report.html").render(**context)
