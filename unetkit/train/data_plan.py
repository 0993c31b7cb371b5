"""The data plan, made once before the first step from every training pair: the fingerprint (what
the masks and images are), the recipe's choices for the unset options, the mask values (classes,
instances) and the preprocessing, kept in every checkpoint."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from unetkit.data import MaskValues, Pair, Preprocess
from unetkit.data.fingerprint import DataFingerprint, fingerprint_pairs
from unetkit.data.io import mixed_scales
from unetkit.data.objects import DEFAULT_INSTANCE_TARGET, INSTANCE_CLASS_NAMES
from unetkit.data.preprocess import IMAGE_PERCENTILES
from unetkit.errors import UnetkitError
from unetkit.train.config import TrainConfig
from unetkit.train.encoder_weights import encoder_normalisation, pretrained, run_encoder
from unetkit.train.option_layers import fill_unset
from unetkit.train.recipes import apply_recipe, default_workers, encoder_lr
from unetkit.train.split import Log


@dataclass
class DataPlan:
    """What training learns from the training set before the first step, kept in checkpoints."""

    mask_values: MaskValues
    preprocess: Preprocess
    sampled_classes: list[int]  # class ids a third of the patches are centred on
    fingerprint: dict[str, Any] | None = None  # what the recipe read (None on resume: the run's own file stays)


def plan(
    cfg: TrainConfig,
    train_pairs: Sequence[Pair],
    resume_state: dict[str, Any] | None,
    device: torch.device,
    log: Log,
    init_state: dict[str, Any] | None = None,
) -> tuple[TrainConfig, DataPlan]:
    """Read and measure every training pair, let the recipe fill the unset options; on resume,
    the checkpoint's plan (its config is already resolved). `init_state`: --init-from's model,
    whose normalisation --normalize model keeps."""
    if resume_state is not None:
        data_plan = DataPlan(
            MaskValues.from_dict(resume_state["mask_values"]),
            Preprocess(**resume_state["preprocess"]),
            list(resume_state.get("sampled_classes", [])),
        )
        # Older checkpoints left these unset in their config.
        unset = {"binary": resume_state["binary"], "workers": default_workers(), "encoder_lr": encoder_lr(cfg)}
        cfg, _ = fill_unset(cfg, unset)
    else:
        started = time.perf_counter()
        data = fingerprint_pairs(train_pairs, cfg.ignore_value, cfg.mask_values, **instance_modes(cfg, init_state))
        kept_classes(data, cfg, init_state, log)
        instances = data.mask_values.instances
        if data.instances_maybe:
            log(
                f"note: the masks may be instance label images (each object its own id: values "
                f"{data.mask_values.values[:6]}...); they train as classes; pass --instance-masks if each id is one "
                "object, --no-instance-masks to silence this"
            )
        if data.instances_detected:
            log(
                f"masks: instance label images (each object its own id), trained as {data.mask_values.values} "
                f"({' / '.join(INSTANCE_CLASS_NAMES[instances])}"
                f"{', as the --init-from model was' if model_instances(init_state) else ''}); "
                "--no-instance-masks trains their values as classes"
            )
        say_many_classes(data, cfg, log)
        cfg, summary = apply_recipe(cfg, data, device)  # also instance_masks / instance_target, as read
        log(f"{summary} ({time.perf_counter() - started:.1f}s to read and measure the training set)")
        for note in data_notes(cfg, data):
            log(f"note: {note}")
        preprocess = preprocess_for(cfg, data, init_state)
        data_plan = DataPlan(data.mask_values, preprocess, data.rarer_classes(data.mask_values), data.to_dict())
    check_plan(cfg, data_plan.mask_values)
    return cfg, data_plan


def kept_classes(data: DataFingerprint, cfg: TrainConfig, init_state: dict[str, Any] | None, log: Log) -> None:
    """A run from a model of classes whose masks hold only some of them (corrections that miss a
    rare class) keeps all the model's classes, and so its output layer: the correct-and-retrain
    loop's painted block held street classes 0-8, and the retrained model had lost pedestrians and
    bicyclists, its output layer started afresh (a red-team round). --mask-values decides instead."""
    stored = (init_state or {}).get("mask_values")
    if not isinstance(stored, dict) or stored.get("instances") or data.mask_values.instances or cfg.mask_values:
        return
    model, found = MaskValues.from_dict(stored), data.mask_values.values
    if set(found) < set(model.values):
        data.mask_values = MaskValues(model.values, data.mask_values.ignore_value)
        others = [value for value in model.values if value not in found]
        log(f"init-from: the masks hold the classes {found}; the model's other classes {others} are kept, and its "
            "output layer with them (--mask-values chooses otherwise)")  # fmt: skip


def preprocess_for(cfg: TrainConfig, data: DataFingerprint, init_state: dict[str, Any] | None = None) -> Preprocess:
    """The set's mean and std; or, normalising each image by its percentiles, none (the images
    are in [0, 1] already, and the network's first BatchNorm standardises what it sees); or
    (--normalize model) the --init-from model's own, at this run's scale; a pretrained encoder
    (--encoder-weights) the mean and std it was trained with, whatever --normalize says."""
    if cfg.normalize == "model" and init_state is not None:  # TrainConfig.check: --normalize model needs it
        kept = Preprocess(**init_state["preprocess"])
        if kept.in_channels != data.channels:
            raise UnetkitError(
                f"--normalize model: the model normalises {kept.in_channels} channel(s) and these images have "
                f"{data.channels}; use --normalize dataset or image"
            )
        return dataclasses.replace(kept, scale=cfg.scale)
    if cfg.encoder and pretrained(cfg.encoder_weights) and not run_encoder(cfg.encoder_weights):  # timm's config
        mean, std = encoder_normalisation(cfg.encoder, data.channels)
        return Preprocess(data.channels, mean, std, cfg.scale)
    if cfg.normalize == "image":
        zeros, ones = [0.0] * data.channels, [1.0] * data.channels
        return Preprocess(data.channels, zeros, ones, cfg.scale, percentiles=list(IMAGE_PERCENTILES))
    return Preprocess(data.channels, data.mean, data.std, cfg.scale)


def instance_modes(cfg: TrainConfig, init_state: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the fingerprint takes the masks as: instance masks trained as --instance-target's
    classes (default DEFAULT_INSTANCE_TARGET), given by --instance-masks or, when unset, detected
    from the masks (none when --mask-values names the classes). A run from an instance model keeps
    the model's kind of target where the masks fit it, however few they are."""
    from_model = model_instances(init_state)
    mode = cfg.instance_target or from_model or DEFAULT_INSTANCE_TARGET
    if cfg.instance_masks:
        return {"instances": mode, "detect": None}
    detect = cfg.instance_masks is None and cfg.mask_values is None
    return {"instances": None, "detect": mode if detect else None, "fits_model": bool(detect and from_model)}


def model_instances(init_state: dict[str, Any] | None) -> str | None:
    """The --init-from model's instance target (objects, boundary), or None."""
    values = (init_state or {}).get("mask_values")
    return values.get("instances") if isinstance(values, dict) else None


# Classes that read as a hint of instance masks when a set holds more of them than images: the
# correct-and-retrain loop's eight nuclei images trained as 57 classes and scored AP@0.5 0.16.
MANY_CLASSES = 16
# A class under this share of the labelled pixels is noted as rare: a red-team run at 0.1% foreground
# reached val Dice 0.10 in 75 s; CamVid's rarest class (bicyclist, 0.37%) trains and is not noted.
RARE_CLASS_SHARE = 0.0025


def say_many_classes(data: DataFingerprint, cfg: TrainConfig, log: Log) -> None:
    """Dozens of classes from a handful of images is said plainly, with the option that reads the
    masks the other way."""
    note = many_classes(data.mask_values.num_classes, data.num_images)
    if note and not (data.mask_values.instances or cfg.mask_values):
        log(f"note: {note[0]}; {note[1]}")


def many_classes(classes: int, images: int) -> tuple[str, str] | None:
    """(what, fix) where masks of `classes` values train that many classes from fewer images: train
    says it, and `check` too (it called one instance mask of 27 nuclei ok: a red-team round)."""
    if classes <= MANY_CLASSES or images >= classes:
        return None
    return (
        f"the masks hold {classes} values, so this trains {classes} classes from {images} image{'s' * (images != 1)}",
        "if each value is one object (instance masks), pass --instance-masks",
    )


def data_notes(cfg: TrainConfig, data: DataFingerprint) -> list[str]:
    """What the options, as resolved, do to this set that the user may not expect: said, not changed."""
    notes = []
    largest = max(data.largest_side * cfg.scale, cfg.min_input_size())
    if cfg.patch_size and cfg.patch_size > largest:
        padding = cfg.patch_size**2 / (data.median_height * data.median_width * cfg.scale**2)
        notes.append(
            f"--patch-size {cfg.patch_size} is larger than every training image at scale {cfg.scale:g} (the largest "
            f"side is {round(data.largest_side * cfg.scale)} px): each patch is mostly padding, ~{padding:.0f}x a "
            "median image's pixels to compute; --patch-size none trains on whole images"
        )
    mixed = mixed_scales(data.image_scales)
    if mixed and cfg.normalize != "image":
        notes.append(f"{mixed[0]}: {mixed[1]}")
    absent = [value for value in data.mask_values.values if not data.value_pixels.get(value)]
    # --mask-values names a class the training masks lack (an --init-from model's kept classes are said apart)
    if absent and not data.mask_values.instances and cfg.mask_values:
        # it took the largest class weight, in silence (a red-team round)
        notes.append(
            f"mask value(s) {', '.join(map(str, absent[:8]))} have no pixel in the training masks: the model "
            "cannot learn them; add training masks that hold them, or leave them out of --mask-values"
        )
    rare = None if data.mask_values.instances else rare_classes(classes_pixels(data))
    if rare:  # instance masks are one foreground, not a class per object
        notes.append(f"{rare[0]}; {rare[1]}")
    if cfg.ignore_value is not None and not data.ignored_pixels:
        held = sorted(data.value_pixels)  # all of them (the first 8 left out CamVid's void, 11: a red-team round)
        shown = ", ".join(map(str, held[:32])) + (f", ... ({len(held)} values)" if len(held) > 32 else "")
        notes.append(
            f"--ignore-value {cfg.ignore_value} is in no training mask, so no pixel is ignored (the masks hold "
            f"{shown}); check the value"
        )
    return notes


def rare_classes(value_pixels: Mapping[int, int]) -> tuple[str, str] | None:
    """(what, fix) for the mask values under RARE_CLASS_SHARE of these pixels (`value_pixels`: each class
    value's count); train notes it and `check` warns."""
    total = sum(value_pixels.values())
    shares = sorted((value, count / total) for value, count in value_pixels.items() if count)
    rare = [(value, share) for value, share in shares if share < RARE_CLASS_SHARE]
    if not rare:
        return None
    named = ", ".join(f"{value} covers {100 * share:.2g}%" for value, share in rare[:8])
    return (
        f"mask value{'s' * (len(rare) > 1)} {named} of the training pixels: a class this rare "
        "may learn slowly, or not at all in a short run",
        "give the run more --time, raise its --class-weights, or crop the images nearer to it",
    )


def classes_pixels(data: DataFingerprint) -> dict[int, int]:
    """Each class value's training pixels (the ignore value and values outside the classes left out)."""
    return {value: data.value_pixels.get(value, 0) for value in data.mask_values.values}


def check_plan(cfg: TrainConfig, mask_values: MaskValues) -> None:
    if cfg.binary and mask_values.num_classes != 2:
        # binary = true has no flag (--multiclass turns it off): it comes from a config file or TrainConfig
        raise UnetkitError(
            f"binary = true (one sigmoid output) needs masks with two values, but these have "
            f"{mask_values.num_classes}: {mask_values.values}; remove binary from the config file (or set it to "
            "false) to train a softmax over the classes"
        )
    if cfg.class_weights is not None and len(cfg.class_weights) != mask_values.num_classes:
        raise UnetkitError(
            f"--class-weights has {len(cfg.class_weights)} weight(s) but the masks have "
            f"{mask_values.num_classes} classes {mask_values.values}; give one weight per class"
        )
