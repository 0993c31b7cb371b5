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
from unetkit.object_metrics import object_scores

MAX_IMAGES = 12
MAX_CLASSES = 4
GRID = {"smooth": (1.0, 2.0), "seed": (0.85, 0.9, 0.95, 0.97), "flood": (0.3, 0.5)}


def choose_object_rule(checkpoint: Path, val_pairs: Sequence[Pair], log: Callable[[str], None]) -> None:
    """Score every rule of GRID on (up to MAX_IMAGES of) the validation images by the mean adapted
    Rand error of their objects, and write the best into `checkpoint`."""
    state = load_checkpoint(checkpoint)
    predictor = Predictor(state, options=InferenceOptions(backend="torch"))
    if not val_pairs or predictor.num_classes > MAX_CLASSES:
        return
    step = max(1, math.ceil(len(val_pairs) / MAX_IMAGES))
    images = []
    for pair in list(val_pairs)[::step]:
        image, mask = read_pair(pair.image, pair.mask)
        target = predictor.mask_values.encode(mask, pair.mask)
        mask_values = predictor.mask_values
        truth = mask_objects(mask, target, mask_values.instances, mask_values.object_class_ids, IGNORE_ID)
        if truth.any():
            images.append((predictor.probabilities(predictor.logits(image, pair.image)), truth))
    if not images:
        return
    scored = []
    for values in itertools.product(*GRID.values()):
        rule = ObjectRule(**dict(zip(GRID, values, strict=True)))
        errors = [
            object_scores(truth, predictor.objects_from_probabilities(p, rule)[0])["adapted_rand_error"]
            for p, truth in images
        ]
        scored.append((float(np.mean(errors)), rule))
    error, best = min(scored, key=lambda pair: pair[0])
    state["object_rule"] = best.to_dict()
    save_checkpoint(checkpoint, state)
    log(
        f"objects: seed {best.seed}, flood {best.flood}, smooth {best.smooth} chosen on {len(images)} validation "
        f"image(s), adapted Rand error {error:.4f}; kept in {checkpoint.name}"
    )
