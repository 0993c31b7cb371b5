"""Scores of objects, next to the pixel scores of metrics.py: how a cell counter or the ISBI 2012
challenge sees a segmentation. One merged pair of cells barely moves Dice but is a wrong count.

Between a true and a predicted label image (0 = no object; true 0 pixels are left out):
- adapted Rand error: 1 - the F-score of "these two pixels are in the same object" over pixel
  pairs (scikit-image `adapted_rand_error`, the ISBI 2012 challenge's score), 1 where no object is
  predicted beside true ones;
- variation of information, split and merge: H(predicted | true) grows when true objects are cut
  into pieces, H(true | predicted) when predicted objects span several true ones (scikit-image
  `variation_of_information`);
- detection: a predicted and a true object match when their IoU is above 0.5 (above 0.5 at most
  one pair per object can, so no assignment is needed); precision, recall and F1 of the matches,
  their mean IoU, and the DSB2018 average precision: the mean over IoU thresholds
  0.5, 0.55, ..., 0.95 of matches / (matches + unmatched true + unmatched predicted);
- pooled over a folder, as the StarDist paper scores DSB2018: "AP"_t = TP / (TP + FP + FN) with
  the matches and objects of every image summed before the division, at t = 0.5 (`ap50`) and
  averaged over t = 0.5, 0.55, ..., 0.9 (`ap50_90`); each image keeps its matches per threshold
  (`hits`) for it.
Pixel error (1 - pixel accuracy) comes from the confusion matrix, as the other pixel scores.

For pictures (the run report), `object_errors` names the objects behind those scores: merges,
splits, missed and false objects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from skimage.metrics import adapted_rand_error, variation_of_information

from unetkit.data.objects import value_counts

IOU_THRESHOLDS = np.round(np.arange(0.5, 1.0, 0.05), 2)
MAJORITY = 0.5  # an object "lies in" another when at least this share of its pixels do
SCORES = ("adapted_rand_error", "vi_split", "vi_merge", "precision", "recall", "f1", "matched_iou", "ap")


def contingency(true: np.ndarray, pred: np.ndarray) -> sparse.csr_array:
    """The pixels of each (true, predicted) id pair, true 0 left out: scikit-image's
    `contingency_table(true, pred, ignore_labels=(0,))` less its explicit zeros. Counted from one
    code per pixel (data.objects.value_counts) instead of a sparse matrix built
    from every pixel: 9-14 -> 1-6 ms a 540 x 800 image. object_scores builds it once for all its
    scores, where scikit-image's each built their own: a run's object rule chosen on 16 hc18-dev
    images in 10 s instead of 21 (benchmarks/NOTES.md; tests/test_objects.py checks it against
    scikit-image)."""
    shape = (int(true.max(initial=0)) + 1, int(pred.max(initial=0)) + 1)
    kept = true.ravel() > 0
    codes, counts = value_counts(true.ravel()[kept] * shape[1] + pred.ravel()[kept])
    return sparse.csr_array((counts.astype(np.float64), np.divmod(codes, shape[1])), shape=shape)


def overlaps(true: np.ndarray, pred: np.ndarray, table: sparse.csr_array | None = None) -> tuple[np.ndarray, ...]:
    """Every (true, predicted) object pair that shares pixels, from the contingency table: their
    ids, the shared pixels, and the pair's true and predicted areas."""
    table = (contingency(true, pred) if table is None else table).tocoo()
    keep = table.col > 0  # the table has no true 0 row
    rows, cols, overlap = table.row[keep], table.col[keep], table.data[keep]
    return rows, cols, overlap, np.bincount(true.ravel())[rows], np.bincount(pred.ravel())[cols]


def matched(overlap: np.ndarray, true_area: np.ndarray, pred_area: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The IoU of each overlapping pair, and whether it matches (IoU above 0.5)."""
    ious = overlap / (true_area + pred_area - overlap)
    return ious, ious > 0.5


def matched_ious(true: np.ndarray, pred: np.ndarray, table: sparse.csr_array | None = None) -> np.ndarray:
    """The IoU of every (true, predicted) object pair whose IoU is above 0.5."""
    ious, match = matched(*overlaps(true, pred, table)[2:])
    return ious[match]


def object_scores(true: np.ndarray, pred: np.ndarray) -> dict[str, float | int]:
    """Every score of one image (the module docstring says which); NaN where undefined."""
    true, pred = true.astype(np.int64), pred.astype(np.int64)
    n_true, n_pred = len(np.unique(true[true > 0])), len(np.unique(pred[pred > 0]))
    table = contingency(true, pred)
    ious = matched_ious(true, pred, table)
    matches = len(ious)
    scores: dict[str, float | int] = {"true_objects": n_true, "predicted_objects": n_pred, "matches": matches}
    if n_true:
        # No object found is the worst answer, where the Rand error of the true objects' pixels (the
        # true background ignored) against one predicted background would read 0 for a single true
        # object (an empty prediction scored perfect: a red-team round); scikit-image's otherwise.
        rand = float(adapted_rand_error(true, pred, table=table)[0])
        scores["adapted_rand_error"] = 1.0 if not n_pred and not math.isnan(rand) else rand
        split, merge = variation_of_information(true, pred, table=table / table.sum())
        scores.update(vi_split=float(split), vi_merge=float(merge))
    else:
        scores.update(adapted_rand_error=math.nan, vi_split=math.nan, vi_merge=math.nan)
    precision = matches / n_pred if n_pred else (1.0 if not n_true else 0.0)
    recall = matches / n_true if n_true else (1.0 if not n_pred else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    scores.update(precision=precision, recall=recall, f1=f1)
    scores["matched_iou"] = float(ious.mean()) if matches else math.nan
    hits = [int((ious > t).sum()) for t in IOU_THRESHOLDS]
    scores["hits"] = hits
    scores["ap"] = float(np.mean([h / (n_true + n_pred - h) if n_true + n_pred else 1.0 for h in hits]))
    return scores


def pooled_ap(per_image: list[dict], thresholds: np.ndarray) -> float | None:
    """TP / (TP + FP + FN) over all images together, averaged over `thresholds` (of IOU_THRESHOLDS)."""
    true = sum(row["true_objects"] for row in per_image)
    predicted = sum(row["predicted_objects"] for row in per_image)
    if not true + predicted:
        return None
    columns = [list(IOU_THRESHOLDS).index(t) for t in thresholds]
    hits = [sum(row["hits"][column] for row in per_image) for column in columns]
    return float(np.mean([h / (true + predicted - h) for h in hits]))


def mean_scores(per_image: list[dict]) -> dict[str, float | None]:
    """The mean of each score over the images where it is defined, and the object counts summed."""
    means: dict[str, float | None] = {}
    for name in SCORES:
        values = [row[name] for row in per_image if row.get(name) is not None and not math.isnan(row[name])]
        means[name] = float(np.mean(values)) if values else None
    for name in ("true_objects", "predicted_objects", "matches"):
        means[name] = int(sum(row[name] for row in per_image))
    means["ap50"] = pooled_ap(per_image, IOU_THRESHOLDS[:1])
    means["ap50_90"] = pooled_ap(per_image, IOU_THRESHOLDS[IOU_THRESHOLDS <= 0.9])
    return means


@dataclass(frozen=True)
class ObjectErrors:
    """The object ids each kind of error concerns (sorted int arrays), so a picture can outline
    them. Each wrong object is named once: merges and splits first, then the objects that are
    missed or false for no other reason."""

    merges: np.ndarray  # predicted objects in which the majority of 2+ true objects lie
    splits: np.ndarray  # true objects in which the majority of 2+ predicted objects (their pieces) lie
    pieces: np.ndarray  # those predicted pieces
    missed: np.ndarray  # true objects matched by no predicted one (IoU > 0.5), in no merge or split
    false: np.ndarray  # predicted objects matching no true one (IoU > 0.5), neither a merge nor a piece

    def counts(self) -> str:
        """E.g. "3 merges, 1 split, 2 missed, 4 false"."""
        merges, splits = len(self.merges), len(self.splits)
        return (
            f"{merges} merge{'s' * (merges != 1)}, {splits} split{'s' * (splits != 1)}, "
            f"{len(self.missed)} missed, {len(self.false)} false"
        )


def object_errors(true: np.ndarray, pred: np.ndarray) -> ObjectErrors:
    """Merges, splits, misses and false objects between two label images (0 = no object), from
    their contingency table: the shares of each object lying in the other image's objects say
    which prediction swallowed several true objects and which true object was cut, the two errors
    a count gets wrong while Dice barely moves; matches are those of `matched_ious`."""
    true, pred = true.astype(np.int64), pred.astype(np.int64)
    rows, cols, overlap, true_area, pred_area = overlaps(true, pred)
    true_in = overlap >= MAJORITY * true_area  # the true object lies in the predicted one
    pred_in = overlap >= MAJORITY * pred_area  # the predicted object lies in the true one
    merges = _held_twice(cols[true_in])
    splits = _held_twice(rows[pred_in])
    pieces = np.unique(cols[pred_in & np.isin(rows, splits)])
    merged = np.unique(rows[true_in & np.isin(cols, merges)])
    match = matched(overlap, true_area, pred_area)[1]
    missed = np.setdiff1d(np.unique(true[true > 0]), np.concatenate([rows[match], merged, splits]))
    false = np.setdiff1d(np.unique(pred[pred > 0]), np.concatenate([cols[match], merges, pieces]))
    return ObjectErrors(merges, splits, pieces, missed, false)


def _held_twice(holders: np.ndarray) -> np.ndarray:
    """The ids that occur at least twice: the objects in which two or more others lie."""
    ids, counts = np.unique(holders, return_counts=True)
    return ids[counts >= 2]
