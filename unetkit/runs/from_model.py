"""Where a run from an instance model (`train --init-from nuclei` on a few corrected images) ends:
the least move from the model that beats it on the run's validation objects by more than their
sampling error (object_rule.start_tie), of three in order: the model as it started, the fine-tuned
weights averaged half and half with the start's (WiSE-FT, Wortsman et al. 2022: such an average
keeps most of the gain on the new images and the start's strength elsewhere), the fine-tuned
weights themselves (for images unlike any the model saw, where the average is neither).

Measured on dsb2018-dev (the first 8 train images, 60 s and 180 s; benchmarks/NOTES.md, issue 33),
scored on the run's own validation image / on the 40 val images, pooled AP@0.5:0.9 and AP@0.5:
the start 0.574 / 0.861; fine-tuned 0.624-0.632 / 0.849-0.855 (below the start on AP@0.5);
the half-and-half average 0.608-0.613 / 0.861 (AP@0.5:0.9 0.706-0.710 against the start's 0.699).
On dark nuclei on a bright ground (the shipped model's opposite), 3 images and 40 s: the start
AP 0.00, the average 0.07, the fine-tuned weights far above (val Dice 0.15 -> 0.87).
BLEND is the paper's default, not a value tuned on those images."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from unetkit.data import Pair
from unetkit.inference import InferenceOptions, Predictor
from unetkit.inference.objects import ObjectRule
from unetkit.models.checkpoint import load_checkpoint, save_checkpoint
from unetkit.models.spec import ModelSpec
from unetkit.runs.object_rule import score_rules, start_tie, validation_probabilities

BLEND = 0.5  # the fine-tuned weights' share of the average


# How settle_from_start's answer begins where best.pt is the start model, unchanged (napari reads it).
AS_STARTED = "the --init-from model as it started"


def settle_from_start(
    checkpoint: Path,
    start: dict[str, Any],
    rule: ObjectRule | None,
    val_pairs: Sequence[Pair],
    log: Callable[[str], None],
) -> str | None:
    """Write into `checkpoint` (a run's best.pt, fine-tuned from `start`, a model of instances) the
    first of the average and the fine-tuned weights that beats `start` on the validation images'
    objects (each cut with the start's `rule`) by more than their noise, else `start` itself.
    Returns what best.pt now holds where that is no longer the run's best epoch (the summary's
    line said that epoch's val Dice for the start: red-team finding), else None."""
    tuned = load_checkpoint(checkpoint)
    if tuned.get("epoch") == 0:  # the Trainer's start guard: no epoch beat the start's val Dice
        dice = tuned.get("best_dice")
        dice = f" {dice:.4f}" if isinstance(dice, float) else ""
        log(f"from the model: no epoch beat the --init-from model's val Dice{dice}: {checkpoint.name} is that model "
            "as it started (train longer or on more images to move it)")  # fmt: skip
        return f"{AS_STARTED}, val Dice{dice}: no epoch beat it"
    instances = ModelSpec.from_state(start).mask_values.instances
    if instances is None:
        return None  # a semantic model's score is Dice: the Trainer's start guard has weighed it
    rule = rule or ObjectRule.default(instances)
    start_score, objects = object_score(start, rule, val_pairs)
    if not objects:
        return None
    noise = start_tie(objects)
    averaged = {**tuned, "model": average(start["model"], tuned["model"], BLEND)}
    said = [f"the start {start_score:.4f}"]
    for name, state in (("the average of the fine-tuned weights and the start's", averaged), ("fine-tuned", tuned)):
        score = object_score(state, rule, val_pairs)[0]
        said.append(f"{name} {score:.4f}")
        if score > start_score + noise:
            save_checkpoint(checkpoint, state)
            log(f"from the model: pooled AP@0.5:0.9 {', '.join(said)} (noise {noise:.3f}): {checkpoint.name} is {name}")
            return None if state is tuned else f"{name}, pooled AP@0.5:0.9 {score:.4f}"
    save_checkpoint(checkpoint, {**start, "object_rule": rule.to_dict()})
    log(f"from the model: pooled AP@0.5:0.9 {', '.join(said)}, within their noise ({noise:.3f}): {checkpoint.name} is "
        "the --init-from model as it started (train on more corrected images to move it)")  # fmt: skip
    dice = start.get("best_dice")
    return AS_STARTED + (f", val Dice {dice:.4f}" if isinstance(dice, float) else "")


def average(start: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], share: float) -> dict[str, torch.Tensor]:
    """`share` of the tuned weights and the rest of the start's, tensor by tensor (normalisation
    statistics too; counters are the tuned model's)."""
    return {
        key: torch.lerp(start[key].float(), value.float(), share).to(value.dtype)
        if value.is_floating_point()
        else value
        for key, value in tuned.items()
    }


def object_score(state: dict[str, Any], rule: ObjectRule, val_pairs: Sequence[Pair]) -> tuple[float, list]:
    """The object score of `state`'s objects (cut with `rule`) on the validation images, higher
    better (pooled AP@0.5:0.9, or 1 - adapted Rand error: object_rule.scored_by_ap), and those
    images' (probabilities, true objects) (no true object in any: NaN, and no images)."""
    predictor = Predictor(state, options=InferenceOptions(backend="torch"))
    images = validation_probabilities(predictor, val_pairs)
    if not any(truth.any() for _, truth in images):
        return float("nan"), []
    return 1 - score_rules(predictor, images, [rule])[0][0], images
