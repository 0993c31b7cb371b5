"""The object rule (inference/instances.py) chosen on the run's own validation images at the end
of training, and kept in best.pt, so `predict --instances` cuts objects the way that scored best
on images the model never trained on, and never on the images it is scored on.

The grid is small on purpose: the seed threshold is the number that matters (on the demo's
validation slices adapted Rand error went 0.33 / 0.18 / 0.045 / 0.10 for seeds 0.8 / 0.9 / 0.95 /
0.97, smoothing sigma 2), and it costs a few seconds: at most MAX_IMAGES validation images, and
only for models with at most MAX_CLASSES classes (objects of street-scene classes are not what a
person counts; they keep the default rule)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from unetkit.core.checkpoint import load_checkpoint, save_checkpoint
from unetkit.data import Pair
from unetkit.data.io import read_pair
from unetkit.data.mask_values import IGNORE_ID
from unetkit.data.objects import mask_objects
from unetkit.inference import InferenceOptions, Predictor
from unetkit.inference.instances import ObjectRule
from unetkit.object_metrics import mean_scores, object_scores

MAX_IMAGES = 24
MAX_CLASSES = 4
GRID = {"smooth": (1.0, 2.0), "seed": (0.85, 0.9, 0.95, 0.97), "flood": (0.3, 0.5)}
# Instance models' seeds are their own class (the object interior, or the centre), whose
# probability falls off inside the object, not the whole object's: lower seeds belong in the grid.
INSTANCE_GRID = {"smooth": (1.0, 2.0), "seed": (0.35, 0.5, 0.7), "flood": (0.5, 0.6, 0.7)}


def choose_object_rule(checkpoint: Path, val_pairs: Sequence[Pair], log: Callable[[str], None]) -> None:
    """Score every rule of the grid on (up to MAX_IMAGES of) the validation images and write the
    best into `checkpoint`: by adapted Rand error, the score of a connected-pixels task (ISBI), or
    for instance masks by the field's object score, pooled AP over IoU 0.5:0.9 (object_metrics)."""
    state = load_checkpoint(checkpoint)
    predictor = Predictor(state, options=InferenceOptions(backend="torch"))
    if not val_pairs or predictor.num_classes > MAX_CLASSES:
        return
    images = validation_probabilities(predictor, val_pairs)
    if not images:
        return
    instances = predictor.mask_values.instances is not None
    grid = INSTANCE_GRID if instances else GRID
    scored = []
    for values in itertools.product(*grid.values()):
        rule = ObjectRule(**dict(zip(grid, values, strict=True)))
        rows = [object_scores(truth, predictor.objects_from_probabilities(p, rule)[0]) for p, truth in images]
        scored.append((1 - mean_scores(rows)["ap50_90"] if instances else mean_error(rows), rule))
    error, best = min(scored, key=lambda pair: pair[0])
    state["object_rule"] = best.to_dict()
    save_checkpoint(checkpoint, state)
    score = f"pooled AP@0.5:0.9 {1 - error:.4f}" if instances else f"adapted Rand error {error:.4f}"
    log(
        f"objects: seed {best.seed}, flood {best.flood}, smooth {best.smooth} chosen on {len(images)} validation "
        f"image(s), {score}; kept in {checkpoint.name}"
    )


def validation_probabilities(predictor: Predictor, val_pairs: Sequence[Pair]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(class probabilities, true objects) of up to MAX_IMAGES validation images, evenly spread,
    leaving out those without an object."""
    step = max(1, math.ceil(len(val_pairs) / MAX_IMAGES))
    images = []
    for pair in list(val_pairs)[::step]:
        image, mask = read_pair(pair.image, pair.mask)
        target = predictor.mask_values.encode(mask, pair.mask)
        mask_values = predictor.mask_values
        truth = mask_objects(mask, target, mask_values.instances, mask_values.object_class_ids, IGNORE_ID)
        if truth.any():
            images.append((predictor.probabilities(predictor.logits(image, pair.image)), truth))
    return images


def mean_error(rows: list[dict]) -> float:
    return float(np.mean([row["adapted_rand_error"] for row in rows]))
