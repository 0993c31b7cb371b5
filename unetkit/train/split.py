"""The run's training and validation pairs: found in the folders, split by a seed (or
--val-images), or on resume the run's own split, kept by file name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from unetkit.data import Pair, find_pairs
from unetkit.data.pairing import describe_names, expand_planes
from unetkit.data.tiff_axes import refuse_unused_axes
from unetkit.errors import UnetkitError
from unetkit.train.config import DATA_FOLDERS, TrainConfig

Log = Callable[[str], None]


def split_pairs(pairs: Sequence[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """A seeded random validation split; at least one image on each side when fraction > 0."""
    if fraction <= 0:
        return list(pairs), []
    if len(pairs) < 2:
        raise UnetkitError(
            f"{pairs[0].image}: only one image (a stack's planes stay together: one stack is one image here), "
            "nothing left to validate on; add images, pass --val-images/--val-masks, or set --val-fraction 0"
        )
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = min(len(pairs) - 1, max(1, round(fraction * len(pairs))))
    val = set(order[:n_val])
    return [p for i, p in enumerate(pairs) if i not in val], [pairs[i] for i in sorted(val)]


def training_pairs(
    cfg: TrainConfig, resumed_split: dict[str, list[str]] | None, log: Log
) -> tuple[list[Pair], list[Pair]]:
    """The training and validation pairs from the folders, a stack's planes each a pair of its
    own (expand_planes) after the split, which keeps a stack's planes on one side."""
    train, val = file_pairs(cfg, resumed_split, log)
    refuse_unused_axes(cfg.axes, [pair.image for pair in [*train, *val]])
    return expand_planes(train, cfg.axes), expand_planes(val, cfg.axes)


def file_pairs(cfg: TrainConfig, resumed_split: dict[str, list[str]] | None, log: Log) -> tuple[list[Pair], list[Pair]]:
    """The training and validation files: --val-images, or a seeded split, or on resume the run's
    own split (in the folders the run names, or where its data moved to)."""
    if not cfg.images or not cfg.masks:
        raise UnetkitError("train needs --images DIR and --masks DIR")
    if bool(cfg.val_images) != bool(cfg.val_masks):
        given, needed = ("--val-images", "--val-masks") if cfg.val_images else ("--val-masks", "--val-images")
        raise UnetkitError(f"{given} needs {needed} too")
    if resumed_split is not None:
        refuse_missing_folders(cfg)
    train_pairs = find_pairs(cfg.images, cfg.masks, cfg.mask_suffix)
    val_pairs = find_pairs(cfg.val_images, cfg.val_masks, cfg.mask_suffix) if cfg.val_images else None
    if val_pairs is not None:
        refuse_shared_files(train_pairs, val_pairs)
    if resumed_split is not None:
        return keep_split(resumed_split, train_pairs, val_pairs, log, cfg.images)
    if val_pairs is not None:
        return train_pairs, val_pairs
    return split_pairs(train_pairs, cfg.val_fraction, cfg.seed)


def refuse_missing_folders(cfg: TrainConfig) -> None:
    """On resume, a data folder the run names that is gone has most likely moved: say how to go on."""
    for option in DATA_FOLDERS:
        folder = getattr(cfg, option)
        if folder and not Path(folder).is_dir():
            raise UnetkitError(
                f"{folder}: this run's {option.replace('_', ' ')} folder is not there; if the data moved, resume "
                f"with --{option.replace('_', '-')} NEW_FOLDER (the run's split is found in it by file name)"
            )


def refuse_shared_files(train_pairs: Sequence[Pair], val_pairs: Sequence[Pair]) -> None:
    """Validation on the files it trains on measures nothing: --val-images/--val-masks naming the
    training folders (or links to them, or some of their files) are refused."""
    for side, options in (("image", "--images and --val-images"), ("mask", "--masks and --val-masks")):
        trained = {Path(getattr(pair, side)).resolve() for pair in train_pairs}
        for pair in val_pairs:
            if Path(getattr(pair, side)).resolve() in trained:
                raise UnetkitError(
                    f"{getattr(pair, side)}: this validation {side} is also a training {side} ({options} hold "
                    "the same files), so validation would score what the model trained on; give validation "
                    "folders of other images, or leave --val-images/--val-masks out to hold out --val-fraction"
                )


def keep_split(
    split: dict[str, list[str]],
    train_pool: Sequence[Pair],
    val_pool: Sequence[Pair] | None,
    log: Log,
    images: str,
) -> tuple[list[Pair], list[Pair]]:
    """On resume, the run's own train/validation split (stored as image file names, so the folders
    may move), whatever was added to or removed from them since: a redrawn split would validate
    on images trained on. The validation names are looked up in `val_pool` (--val-images), else
    beside the training ones. Folders that hold none of the run's training images are other
    data, refused."""
    pools = {"train": train_pool, "val": train_pool if val_pool is None else val_pool}
    by_name = {side: {p.image.name: p for p in pool} for side, pool in pools.items()}
    kept = {side: [by_name[side][name] for name in split[side] if name in by_name[side]] for side in pools}
    removed = [name for side in pools for name in split[side] if name not in by_name[side]]
    known = set(split["train"]) | set(split["val"])
    added = [name for name in dict.fromkeys([*by_name["train"], *by_name["val"]]) if name not in known]
    if not kept["train"]:
        raise UnetkitError(
            f"{images}: holds none of this run's {len(split['train'])} training images "
            f"({describe_names(split['train'])}), so it is not the run's data; resume with the folders it trained "
            "on (they may have moved: the names are matched), or start a new run without --resume"
        )
    if removed:
        log(f"note: {len(removed)} image(s) of this run are gone and are left out: {describe_names(removed)}")
    if added:
        log(
            f"note: {len(added)} image(s) beside the run's are not in its split (added since it started, or held "
            f"out, as the demo's slices 25-29 are) and are not used, so the validation split stays as it was: "
            f"{describe_names(added)}; start a new run to train on them"
        )
    return kept["train"], kept["val"]
