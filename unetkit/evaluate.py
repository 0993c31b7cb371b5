"""Scoring a trained model on a labelled folder: Dice and IoU per class, their mean, pixel
accuracy, and the same per image."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from unetkit.data import Pair
from unetkit.data.io import read_pair
from unetkit.inference import Predictor
from unetkit.metrics import SegmentationMetrics


def evaluate_pairs(
    predictor: Predictor,
    pairs: Sequence[Pair],
    threshold: float = 0.5,
    progress: bool = True,
    on_prediction: Callable[[Pair, np.ndarray, np.ndarray], None] | None = None,
) -> dict:
    """The evaluation report (see SegmentationMetrics.report) for predictions at full size."""
    metrics = SegmentationMetrics(predictor.num_classes, predictor.binary)
    for pair in tqdm(pairs, desc="evaluate", unit="img", disable=not progress, leave=False):
        image, mask = read_pair(pair.image, pair.mask)
        target = predictor.mask_values.encode(mask, pair.mask)
        pred = predictor.class_ids(image, pair.image, threshold)
        metrics.update(torch.from_numpy(pred), torch.from_numpy(target), pair.image.name)
        if on_prediction is not None:
            on_prediction(pair, image, pred)
    return metrics.report(predictor.mask_values.values)


def format_report(report: dict) -> str:
    """A per-class table for the terminal."""
    lines = [f"{'class':>5}  {'value':>6}  {'pixels':>11}  {'Dice':>7}  {'IoU':>7}"]
    for row in report["per_class"]:
        dice = "    n/a" if row["dice"] is None else f"{row['dice']:.4f}"
        iou = "    n/a" if row["iou"] is None else f"{row['iou']:.4f}"
        lines.append(f"{row['class_id']:>5}  {row['mask_value']:>6}  {row['pixels']:>11}  {dice:>7}  {iou:>7}")
    lines.append(
        f"mean Dice {report['mean_dice']:.4f}  mean IoU {report['mean_iou']:.4f}  "
        f"({report['mean_is']})  pixel accuracy {report['pixel_accuracy']:.4f}  "
        f"images {report['num_images']}"
    )
    return "\n".join(lines)
