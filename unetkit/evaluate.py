"""Scoring a trained model on a labelled folder: Dice and IoU per class, their mean, pixel
accuracy, and the same per image; and, for models of up to MAX_OBJECT_CLASSES classes, the
objects: the model's objects (inference/objects.py) against the connected components of the true
mask, by the scores of scoring/objects.py."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from unetkit.data import Pair
from unetkit.inference import Predictor
from unetkit.inference.objects import MAX_OBJECT_CLASSES
from unetkit.runtime.progress import progress_to, tell
from unetkit.scoring.metrics import EvaluationReport, SegmentationMetrics
from unetkit.scoring.objects import mean_scores, object_scores

OBJECTS_ABOUT = (
    "objects of every class but class 0: true = 4-connected components of the mask, predicted = seeded "
    "watershed of the probabilities (rule); scores are means over images, counts are sums"
)
INSTANCE_OBJECTS_ABOUT = (  # an instance model's truth is the masks' own ids (a red-team finding: said otherwise)
    "objects of an instance model: true = the mask's own ids (one object each), predicted = seeded watershed of "
    "the probabilities (rule); scores are means over images, counts are sums"
)


def objects_about(predictor: Predictor) -> str:
    return INSTANCE_OBJECTS_ABOUT if predictor.mask_values.instances else OBJECTS_ABOUT


def training_images_among(predictor: Predictor, pairs: Sequence[Pair]) -> str | None:
    """What to say when some of `pairs` are the model's own training images (its run's folder and
    names, as its checkpoint keeps them), whose scores flatter it; else None."""
    folder, names = predictor.trained_on
    if not folder or not names or not Path(folder).is_dir():
        return None
    trained = [p.image.name for p in pairs if p.image.name in names and p.image.parent.samefile(folder)]
    if not trained:
        return None
    unique = list(dict.fromkeys(trained))  # a stack's planes are one image
    return (
        f"{len(unique)} of these images are the model's own training images (e.g. {unique[0]}), and its "
        "scores on them flatter it; score held-out images to judge it"
    )


def evaluate_pairs(
    predictor: Predictor,
    pairs: Sequence[Pair],
    progress: bool = True,
    on_prediction: Callable[[Pair, np.ndarray, np.ndarray, np.ndarray], None] | None = None,
) -> EvaluationReport:
    """The evaluation report (see SegmentationMetrics.report) for predictions at full size, with
    `objects`: the mean object scores over the images (per image in `per_image`). `on_prediction`
    is called with each pair, its image, predicted class ids and object labels."""
    metrics = SegmentationMetrics(predictor.num_classes, predictor.binary)
    # 31 classes' objects scored an adapted Rand error of 0.9999 (76 predicted / 379,703 true): not
    # what a person counts, and the rule was never chosen for them (a red-team round)
    scored = predictor.num_classes <= MAX_OBJECT_CLASSES
    per_image_objects = []
    bar = progress_to(None, progress)
    for done, pair in enumerate(pairs, 1):
        image, mask = pair.read()
        target = predictor.mask_values.encode(mask, pair.mask)
        logits = predictor.logits(image, pair.image)
        pred = predictor.class_ids_from_logits(logits, predictor.options.threshold)  # the one threshold
        metrics.update(torch.from_numpy(pred), torch.from_numpy(target), pair.label)
        labels = predictor.objects(logits)[0] if scored or on_prediction is not None else None
        del logits
        if scored:
            scores = object_scores(predictor.mask_values.true_objects(mask, target), labels)
            scores["pixel_error"] = 1 - metrics.per_image[-1]["pixel_accuracy"]
            per_image_objects.append(scores)
            metrics.per_image[-1].update(scores)
        if on_prediction is not None:
            on_prediction(pair, image, pred, labels)
        tell(bar, done, len(pairs), "evaluate")
    report = metrics.report(predictor.mask_values.values)
    if not scored:
        most = f"at most {MAX_OBJECT_CLASSES}: classes are regions here"
        report.objects = {"not_scored": f"not scored for {predictor.num_classes} classes ({most})"}
        return report
    objects = mean_scores(per_image_objects)
    objects["pixel_error"] = 1 - report.pixel_accuracy
    report.objects = {**objects, "rule": predictor.object_rule.to_dict(), "about": objects_about(predictor)}
    return report


def format_report(report: EvaluationReport) -> str:
    """A per-class table for the terminal."""
    lines = [f"{'class':>5}  {'value':>6}  {'pixels':>11}  {'Dice':>7}  {'IoU':>7}"]
    for row in report.per_class:
        dice = "    n/a" if row.dice is None else f"{row.dice:.4f}"
        iou = "    n/a" if row.iou is None else f"{row.iou:.4f}"
        lines.append(f"{row.class_id:>5}  {row.mask_value:>6}  {row.pixels:>11}  {dice:>7}  {iou:>7}")
    lines.append(
        f"mean Dice {report.mean_dice:.4f}  mean IoU {report.mean_iou:.4f}  "
        f"({report.mean_is})  pixel accuracy {report.pixel_accuracy:.4f}  "
        f"images {report.num_images}"
    )
    objects = report.objects
    if objects and "not_scored" in objects:
        lines.append(f"objects: {objects['not_scored']}")
    elif objects:  # also with no true object: a model that invents 29 of them must say so here
        lines.append(
            f"objects: adapted Rand error {_show(objects['adapted_rand_error'], 4)}  "
            f"VI split {_show(objects['vi_split'])} merge {_show(objects['vi_merge'])}  "
            f"pixel error {objects['pixel_error']:.4f}  F1@0.5 {_show(objects['f1'])}  "
            f"AP@0.5:0.95 (image mean) {_show(objects['ap'])}  pooled AP@0.5 {_show(objects.get('ap50'))} "
            f"AP@0.5:0.9 {_show(objects.get('ap50_90'))}  "
            f"{objects['predicted_objects']} predicted / {objects['true_objects']} true"
        )
    return "\n".join(lines)


def _show(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
