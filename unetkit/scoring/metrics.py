"""Dice and IoU, the two overlap scores of segmentation, from a confusion matrix.

For one class, with TP/FP/FN counted over pixels:
    Dice = 2 TP / (2 TP + FP + FN)   -- exactly the F1 score of that class's pixels
    IoU  = TP / (TP + FP + FN)       -- the Jaccard index; IoU = Dice / (2 - Dice)
Scores for a data set are computed from the confusion matrix summed over all its pixels, not
averaged per batch or per image (that would weight a small image like a large one).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from unetkit.data.mask_values import IGNORE_ID


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) counts, rows = true class, columns = predicted class."""
    keep = target != IGNORE_ID
    index = target[keep].long() * num_classes + pred[keep].long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def dice_from_confusion(matrix: torch.Tensor) -> torch.Tensor:
    """Per-class Dice; NaN for a class absent from both prediction and truth."""
    matrix = matrix.double()
    tp = matrix.diagonal()
    denominator = matrix.sum(0) + matrix.sum(1)  # (TP + FP) + (TP + FN)
    return torch.where(denominator > 0, 2 * tp / denominator, torch.nan)


def iou_from_confusion(matrix: torch.Tensor) -> torch.Tensor:
    """Per-class IoU (Jaccard); NaN for a class absent from both prediction and truth."""
    matrix = matrix.double()
    tp = matrix.diagonal()
    union = matrix.sum(0) + matrix.sum(1) - tp
    return torch.where(union > 0, tp / union, torch.nan)


def summary_means(matrix: torch.Tensor, binary: bool) -> tuple[float, float]:
    """The headline (Dice, IoU): for a binary task the foreground class's (class 1), otherwise
    the mean over all classes, background included, skipping classes absent from both."""
    dice, iou = dice_from_confusion(matrix), iou_from_confusion(matrix)
    if binary:
        return _nan_to_one(dice[1]), _nan_to_one(iou[1])
    return float(dice.nanmean()), float(iou.nanmean())


def _nan_to_one(value: torch.Tensor) -> float:
    # No foreground in truth and none predicted: a perfect answer, not an undefined one.
    return 1.0 if torch.isnan(value) else float(value)


class SegmentationMetrics:
    """Accumulates a confusion matrix over a data set and, optionally, scores per image."""

    def __init__(self, num_classes: int, binary: bool) -> None:
        self.num_classes = max(num_classes, 2)
        self.binary = binary
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
        self.per_image: list[dict] = []

    def update(self, pred: torch.Tensor, target: torch.Tensor, name: str | None = None) -> None:
        matrix = confusion_matrix(pred.cpu(), target.cpu(), self.num_classes)
        self.matrix += matrix
        if name is not None:
            dice, iou = summary_means(matrix, self.binary)
            total = int(matrix.sum())
            accuracy = float(matrix.diagonal().sum()) / total if total else float("nan")
            self.per_image.append({"file": name, "dice": dice, "iou": iou, "pixel_accuracy": accuracy})

    @property
    def mean_dice(self) -> float:
        return summary_means(self.matrix, self.binary)[0]

    @property
    def mean_iou(self) -> float:
        return summary_means(self.matrix, self.binary)[1]

    @property
    def pixel_accuracy(self) -> float:
        total = int(self.matrix.sum())
        return float(self.matrix.diagonal().sum()) / total if total else float("nan")

    def describe_mean(self) -> str:
        if self.binary:
            if not (self.matrix[1].sum() or self.matrix[:, 1].sum()):  # the table shows its Dice as n/a
                return "foreground class (class 1) only; in neither truth nor prediction, which counts as 1"
            return "foreground class (class 1) only"
        skipped = "classes in neither truth nor prediction skipped"
        return f"mean over all {self.num_classes} classes, class 0 included; {skipped}"

    def report(self, mask_values: list[int] | None = None) -> EvaluationReport:
        """The evaluation record: headline means, pixel accuracy, per class and per image."""
        dice, iou = dice_from_confusion(self.matrix), iou_from_confusion(self.matrix)
        values = mask_values or list(range(self.num_classes))
        per_class = [
            ClassScore(k, values[k], _json_float(dice[k]), _json_float(iou[k]), int(self.matrix[k].sum()))
            for k in range(self.num_classes)
        ]
        return EvaluationReport(
            self.mean_dice, self.mean_iou, self.describe_mean(), self.pixel_accuracy, len(self.per_image),
            self.matrix.tolist(), per_class, self.per_image,
        )  # fmt: skip


@dataclass
class ClassScore:
    class_id: int
    mask_value: int
    dice: float | None  # None: the class is in neither the truth nor the prediction
    iou: float | None
    pixels: int  # true pixels of the class


@dataclass
class EvaluationReport:
    """What evaluate scores, in `unetkit evaluate --json`'s order (to_dict)."""

    mean_dice: float
    mean_iou: float
    mean_is: str  # what the means are over (SegmentationMetrics.describe_mean)
    pixel_accuracy: float
    num_images: int
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted class
    per_class: list[ClassScore]
    per_image: list[dict]  # file, dice, iou, pixel_accuracy (and the object scores, from evaluate)
    objects: dict | None = None  # the object scores over the images (evaluate.py)

    def to_dict(self) -> dict:
        record = asdict(self)
        if self.objects is None:
            del record["objects"]
        return record


def _json_float(value: torch.Tensor) -> float | None:
    return None if torch.isnan(value) else float(value)
