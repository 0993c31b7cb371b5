"""The object rule (inference/objects.py) chosen on the run's own validation images at the end
of training, and kept in best.pt, so `predict --instances` cuts objects the way that scored best
on images the model never trained on, and never on the images it is scored on.

The grid is small on purpose: the seed threshold is the number that matters (on the demo's
validation slices adapted Rand error went 0.33 / 0.18 / 0.045 / 0.10 for seeds 0.8 / 0.9 / 0.95 /
0.97, smoothing sigma 2), and it costs a few seconds: at most MAX_IMAGES validation images, and
only for models with at most MAX_OBJECT_CLASSES classes (objects of street-scene classes are not what a
person counts; they keep the default rule)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt

from unetkit.data import Pair
from unetkit.inference import InferenceOptions, Predictor
from unetkit.inference.objects import MAX_OBJECT_CLASSES, ObjectRule
from unetkit.models.checkpoint import load_checkpoint, save_checkpoint
from unetkit.runtime.threads import parallel_map
from unetkit.scoring.objects import mean_scores, object_scores

MAX_IMAGES = 24
GRID = {"smooth": (1.0, 2.0), "seed": (0.85, 0.9, 0.95, 0.97), "flood": (0.3, 0.5)}
# Instance models' seeds are their own class (the object interior, or the centre), whose
# probability falls off inside the object, not the whole object's: lower seeds belong in the grid.
INSTANCE_GRID = {"smooth": (1.0, 2.0), "seed": (0.35, 0.5, 0.7), "flood": (0.5, 0.6, 0.7)}
# Errors this close to the best count as a tie (safest): the sampling error of pooled AP on ~500
# objects is ~0.015, and the demo's rule picked on 3 slices at 0.27 scored 0.19 held out.
TIE = 0.01
SIZE_FRACTIONS = (0.02, 0.05, 0.1)  # of the median object's area: objects smaller than this are dropped
# Where the true background is thin lines between the objects (ISBI's membranes: the median
# background pixel lies 2 px from a cell), the adapted Rand error of the objects is the task's own
# score; it leaves the background out. Where objects lie on a ground (HC18's heads: the median
# background pixel 133-201 px from one; dsb2018-dev's nuclei 8-27), leaving it out let objects
# flood it unscored: a 1 s model's whole-image objects scored Rand error 0.0, and HC18's chosen
# flood 0.3 grew its heads 15% past the mask (a red-team round). There the rule is chosen by
# pooled AP over IoU 0.5:0.9, as for instance masks, which an object too large loses.
BOUNDARY_PX = 4.0


def choose_object_rule(
    checkpoint: Path, val_pairs: Sequence[Pair], log: Callable[[str], None], start: ObjectRule | None = None
) -> None:
    """Score every rule of the grid on (up to MAX_IMAGES of) the validation images and write the
    best into `checkpoint`: by adapted Rand error, the score of a connected-pixels task (ISBI), or
    for instance masks by the field's object score, pooled AP over IoU 0.5:0.9 (scoring/objects.py).
    `start`: the rule of the model the run started from (--init-from), chosen on a whole held-out
    set: a candidate, and the one ties go to, as a few corrected images cannot outvote it."""
    state = load_checkpoint(checkpoint)
    predictor = Predictor(state, options=InferenceOptions(backend="torch"))
    default = "predict --instances cuts by the default rule"
    if not val_pairs:  # no validation at all: the run said so when it started
        return
    if predictor.num_classes > MAX_OBJECT_CLASSES:
        log(f"objects: no rule chosen for {predictor.num_classes} classes (at most {MAX_OBJECT_CLASSES}); {default}")
        return
    images = validation_probabilities(predictor, val_pairs)
    empty = sum(not truth.any() for _, truth in images)
    if empty == len(images):
        log(f"objects: no rule chosen, the validation masks hold no objects; {default}")
        return
    instances = predictor.mask_values.instances is not None
    by_ap = scored_by_ap(predictor, images)
    grid = INSTANCE_GRID if instances else GRID
    rules = [ObjectRule(**dict(zip(grid, values, strict=True))) for values in itertools.product(*grid.values())]
    anchor = start or ObjectRule.default(predictor.mask_values.instances)
    tie = TIE if start is None else start_tie(images)
    candidates = rules if start is None or start in rules else [*rules, start]
    scored = score_rules(predictor, images, candidates, by_ap)
    if not scored:  # e.g. every true object a pixel or two, where the Rand error has no pairs to count
        log(f"objects: no rule chosen, the object score is undefined on these validation images; {default}")
        return
    error, best = safest(scored, anchor, tie)
    # Then the smallest object kept, in proportion to the validation images' objects (ties keep the
    # grid's 16 px): on dsb2018-dev val, 0 / 8 / 16 / 32 px gave AP@0.5 0.806 / 0.817 / 0.824 / 0.827.
    median = float(np.median(np.concatenate([np.bincount(truth.ravel())[1:] for _, truth in images if truth.any()])))
    sizes = sorted({best.min_size, *(max(1, round(f * median)) for f in SIZE_FRACTIONS)})
    error, best = safest(score_rules(predictor, images, [replace(best, min_size=s) for s in sizes], by_ap), best, tie)
    state["object_rule"] = best.to_dict()
    save_checkpoint(checkpoint, state)
    score = f"pooled AP@0.5:0.9 {1 - error:.4f}" if by_ap else f"adapted Rand error {error:.4f}"
    counted = f"{len(images)} validation image(s)" + (f" ({empty} without objects)" if empty else "")
    # An instance model's seed is a probability of its cores' class and its flood one of the foreground,
    # so a seed below the flood is no mistake there (inference/objects.py, instance_landscape).
    planes = " (seed: of the cores' class, flood: of the foreground)" if instances else ""
    log(
        f"objects: seed {best.seed}, flood {best.flood}{planes}, smooth {best.smooth}, min size {best.min_size} px "
        f"chosen on {counted}, {score}; kept in {checkpoint.name}"
    )


def scored_by_ap(predictor: Predictor, images: list[tuple[np.ndarray, np.ndarray]]) -> bool:
    """Whether rules are scored by pooled AP (instance masks, objects on a ground) rather than by
    the adapted Rand error (objects between thin lines)."""
    return predictor.mask_values.instances is not None or not objects_between_thin_lines(images)


def objects_between_thin_lines(images: list[tuple[np.ndarray, np.ndarray]]) -> bool:
    """Whether the true objects' background is thin lines between them (BOUNDARY_PX): the median
    background pixel of the validation images lies that near an object."""
    distances = [distance_transform_edt(truth == 0)[truth == 0] for _, truth in images if truth.any()]
    distances = [d for d in distances if d.size]
    return bool(distances) and float(np.median(np.concatenate(distances))) <= BOUNDARY_PX


def score_rules(
    predictor: Predictor, images: list, rules: list[ObjectRule], by_ap: bool | None = None
) -> list[tuple[float, ObjectRule]]:
    """(error, rule) for each rule on the validation (probabilities, true objects): 1 - pooled AP
    over IoU 0.5:0.9 where `by_ap` (default: scored_by_ap), else the mean adapted Rand error; a
    rule whose error is undefined on every image is left out."""
    by_ap = scored_by_ap(predictor, images) if by_ap is None else by_ap

    def score(rule: ObjectRule, image: tuple[np.ndarray, np.ndarray]) -> dict:
        probabilities, truth = image
        return object_scores(truth, predictor.objects_from_probabilities(probabilities, rule)[0])

    scored = []
    for rule in rules:
        # In threads: the watershed, labelling and filters release the GIL (hc18-dev's grid on 2 cores: 6.9 -> 3.8 s).
        rows = parallel_map(partial(score, rule), images)
        means = mean_scores(rows)  # an image without true objects: its false ones count in AP, Rand is undefined
        value = means["ap50_90"] if by_ap else means["adapted_rand_error"]
        if value is not None:  # undefined on every image: the rule cannot be judged
            scored.append((1 - value if by_ap else value, rule))
    return scored


def validation_probabilities(predictor: Predictor, val_pairs: Sequence[Pair]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(class probabilities, true objects) of up to MAX_IMAGES validation images, evenly spread;
    those without an object too, since the objects predicted on them are false ones."""
    step = max(1, math.ceil(len(val_pairs) / MAX_IMAGES))
    images = []
    for pair in list(val_pairs)[::step]:
        image, mask = pair.read()
        target = predictor.mask_values.encode(mask, pair.mask)
        truth = predictor.mask_values.true_objects(mask, target)
        images.append((predictor.probabilities(predictor.logits(image, pair.image)), truth))
    return images


def start_tie(images: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """The tie of a run from a model: the sampling error of an object score on this many objects
    (~0.3/sqrt(n): 0.015 on ~500, 0.07 on the 20 of one corrected image), so a rule must beat the
    model's own, chosen on a whole held-out set, by more than a few images' noise."""
    objects = sum(len(np.unique(truth)) - 1 for _, truth in images)
    return max(TIE, 0.3 / math.sqrt(max(objects, 1)))


def safest(scored: list[tuple[float, ObjectRule]], default: ObjectRule, tie: float = TIE) -> tuple[float, ObjectRule]:
    """The best-scoring rule, except that among those within `tie` of the best error the one nearest
    the default wins: a difference smaller than the score's sampling error on a few validation
    images is noise, and the default is the rule measured on a whole held-out set."""
    lowest = min(error for error, _ in scored)
    close = [(error, rule) for error, rule in scored if error <= lowest + tie]
    return min(close, key=lambda pair: distance(pair[1], default))


def distance(rule: ObjectRule, other: ObjectRule) -> float:
    """How far apart two rules are: seed and flood in probability, smoothing in units of 4 px, the
    smallest object kept relative to the other's (so a tie on sizes keeps `other`'s, as for the rest)."""
    sizes = abs(rule.min_size - other.min_size) / max(other.min_size, 1)
    return abs(rule.seed - other.seed) + abs(rule.flood - other.flood) + abs(rule.smooth - other.smooth) / 4 + sizes
