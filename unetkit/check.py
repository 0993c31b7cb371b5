"""`unetkit check`: the data set doctor. Reads every pair once and reports everything that would
stop training or quietly hurt it, each problem with its fix, instead of failing on the first."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unetkit.data.fingerprint import MaskFacts, looks_like_instances, mask_facts
from unetkit.data.io import check_pair_shapes, mixed_scales, read_image_scaled, read_mask
from unetkit.data.mask_values import (
    MANY_IDS,
    MAX_DISCOVERED_VALUES,
    MAX_VALUE,
    bit_depth,
    depths_disagree,
    edge_values,
    is_jpeg,
    mixed_binary,
    values_outside,
    zero_dominates,
)
from unetkit.data.objects import instance_classes, value_counts
from unetkit.data.pairing import Matching, Pair, expand_planes, match_folders
from unetkit.data.tiff_axes import FILE_AXES, AxisChoice, describe_axes, refuse_unused_axes
from unetkit.errors import UnetkitError


def check_dataset(
    images_dir: str | Path,
    masks_dir: str | Path,
    mask_suffix: str | None = None,
    instance_masks: bool | None = None,
    axes: AxisChoice = FILE_AXES,
    ignore_value: int | None = None,
) -> dict:
    """A report dict: `ok` (training would work), `problems` and `warnings` (file, problem, fix),
    and what was found: pairs, sizes, channels, mask values with pixel counts and fractions (those
    of `ignore_value`, train's --ignore-value, counted apart as `ignored`)."""
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    problems: list[dict] = []
    warnings: list[dict] = []
    report: dict = {"images": str(images_dir), "masks": str(masks_dir), "problems": problems, "warnings": warnings}
    try:
        matching = match_folders(images_dir, masks_dir, mask_suffix)
    except UnetkitError as err:
        problems.append({"file": str(err).split(": ", 1)[0], "problem": str(err)})
        return {**report, "ok": False, "pairs": 0}
    problems += unpaired(matching, images_dir, masks_dir)
    refused = validation_split(matching.pairs)
    report["split_refused"] = bool(refused)  # train's default split would refuse: the verdict says how to train
    warnings += refused
    try:
        refuse_unused_axes(axes, [pair.image for pair in matching.pairs])
    except UnetkitError as err:
        problems.append({"file": str(images_dir), "problem": str(err)})
    scan = scan_pairs(matching.pairs, problems, warnings, bool(instance_masks), axes, ignore_value)
    if instance_masks is None:
        instance_masks = recognise_instances(scan, warnings)
    sizes, channels, value_counts = scan.sizes, scan.channels, scan.value_counts
    problems += mixed_depths(scan, masks_dir)
    _summarise_shapes(report, sizes, channels, warnings)
    mixed = mixed_scales({top: (len(names), names[0]) for top, names in scan.scales.items()})
    if mixed:
        warnings.append({"file": str(images_dir), "problem": mixed[0], "fix": mixed[1]})
    _summarise_values(report, value_counts, problems, bool(instance_masks), scan.lossy)
    if ignore_value is not None:
        report["ignored"] = {"value": ignore_value, "pixels": scan.ignored, "all_ignored": scan.all_ignored}
    if not instance_masks:
        warnings += values_of_one_mask(scan) + class_notes(scan)
    if instance_masks:
        counts = sorted(scan.objects.values())
        report["objects"] = {"total": sum(counts), "per_mask_median": counts[len(counts) // 2] if counts else 0}
        warnings += one_value_instances(scan)
    report["pairs"] = len(matching.pairs)
    report["tiff_axes"] = scan.stacks
    report["mask_suffix"] = matching.suffix
    report["ok"] = not problems
    return report


def mixed_depths(scan: FolderScan, masks_dir: Path) -> list[dict]:
    """Masks of different bit depths, where their values would mean different classes."""
    if not depths_disagree(set(scan.depths), set(scan.value_counts)):
        return []
    shown = ", ".join(f"{depth} ({path.name})" for depth, path in scan.depths.items())
    return [
        {
            "file": str(masks_dir),
            "problem": f"masks of different bit depths: {shown}; their values mean different classes "
            "(1-bit 1 and 8-bit 255 would become two)",
            "fix": "save all masks with the same bit depth and the same value per class",
        }
    ]


def one_value_instances(scan: FolderScan) -> list[dict]:
    """Instance masks of one value over several regions (0/255 masks given --instance-masks): each
    region is read as an object, so objects that touch are one. `check` approved such masks as 40
    objects, a median of one a mask, and the run scored AP 0.000 (a red-team round)."""
    single = [name for name, facts in zip(scan.names, scan.facts, strict=True) if facts.ids == 1 and facts.objects > 1]
    if not single:
        return []
    return [
        {
            "file": single[0],
            "problem": f"{len(single)} of {len(scan.names)} instance masks hold one value over several regions: "
            "each 4-connected region is read as an object, so touching objects count as one",
            "fix": "give each object its own id (scikit-image's label() on a mask that separates them), or drop "
            "--instance-masks to train the masks as classes",
        }
    ]


def validation_split(pairs: Sequence[Pair]) -> list[dict]:
    """train's default validation split (train/split.py), tried: one image (or one stack) leaves
    nothing to validate on, which `check` said nothing of while train refused it (a red-team round).
    A warning, not a problem: the data are fine for --val-fraction 0 or --val-images."""
    from unetkit.train.config import TrainConfig
    from unetkit.train.split import split_pairs

    if not pairs:  # said as no pairs
        return []
    try:
        split_pairs(pairs, TrainConfig().val_fraction, seed=0)
    except UnetkitError as err:
        what = f"train's default validation split refuses it: {str(err).split(': ', 1)[1]}"
        return [{"file": str(err).split(": ", 1)[0], "problem": what}]
    return []


def class_notes(scan: FolderScan) -> list[dict]:
    """train's notes on its classes: dozens from a handful of images, and rare ones
    (train/data_plan.many_classes, rare_classes)."""
    from unetkit.train.data_plan import many_classes, rare_classes

    notes = [many_classes(len(scan.value_counts), len(scan.names)), rare_classes(scan.value_counts)]
    return [{"file": "masks", "problem": note[0], "fix": note[1]} for note in notes if note]


def values_of_one_mask(scan: FolderScan) -> list[dict]:
    """A warning for mask values found in one mask of several: train takes its classes from the
    training masks, so where its validation split takes that mask the value is refused there."""
    holders: dict[int, list[str]] = {}
    for name, facts in zip(scan.names, scan.facts, strict=True):
        for value in facts.mask_values.tolist():
            holders.setdefault(value, []).append(name)
    single = sorted((value, names[0]) for value, names in holders.items() if len(names) == 1)
    if len(scan.names) < 2 or not single:
        return []
    shown = ", ".join(f"{value} (only in {name}'s mask)" for value, name in single[:3]) + (" ..." * (len(single) > 3))
    return [
        {
            "file": "masks",
            "problem": f"mask value(s) {shown}: train takes its classes from the training masks, so a value in one "
            "mask is refused if the validation split takes that mask",
            "fix": "add masks that hold it, list the classes with --mask-values, or train with --instance-masks if "
            "each value is one object",
        }
    ]


def unpaired(matching: Matching, images_dir: Path, masks_dir: Path) -> list[dict]:
    """A problem for every image without a mask and every mask without an image."""
    problems = [
        {
            "file": str(images_dir / name),
            "problem": "image has no mask",
            "fix": f"add its mask to {masks_dir} or remove the image",
        }
        for name in matching.images_without_masks
    ]
    problems += [
        {
            "file": str(masks_dir / name),
            "problem": "mask has no image",
            "fix": f"add its image to {images_dir} or remove the mask",
        }
        for name in matching.masks_without_images
    ]
    return problems


@dataclass
class FolderScan:
    """What reading every pair found: sizes and channels by image name, mask value counts, and
    the first mask of each bit depth."""

    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    channels: dict[str, int] = field(default_factory=dict)
    value_counts: Counter[int] = field(default_factory=Counter)
    depths: dict[str, Path] = field(default_factory=dict)
    objects: dict[str, int] = field(default_factory=dict)  # instance masks: objects per mask
    scales: dict[float, list[str]] = field(default_factory=dict)  # the images' raw value of 1.0: their names
    names: list[str] = field(default_factory=list)  # the masks read, in order
    stacks: dict[str, dict] = field(default_factory=dict)  # TIFF images: how their axes were read, planes
    facts: list[MaskFacts] = field(default_factory=list)  # what tells instance masks from class masks, per mask
    ignored: int = 0  # pixels of the ignore value (--ignore-value), not counted in value_counts
    all_ignored: list[str] = field(default_factory=list)  # masks of nothing but the ignore value
    binary: dict[int, Path] = field(default_factory=dict)  # the first 0/1 and 0/255 mask (mask_values.mixed_binary)
    lossy: bool = False  # some mask is a JPEG


def recognise_instances(scan: FolderScan, warnings: list[dict]) -> bool:
    """train's rule (data.fingerprint.looks_like_instances) on the masks as stored: instance masks
    are then summarised as the background / object they train as, their ids counted as objects."""
    if looks_like_instances(scan.facts):
        background = scan.value_counts.get(0, 0)
        scan.value_counts = Counter({0: background, 1: sum(scan.value_counts.values()) - background})
        scan.objects = {name: facts.objects for name, facts in zip(scan.names, scan.facts, strict=True)}
        return True
    if looks_like_instances(scan.facts, sure=False):
        warnings.append(
            {
                "file": "masks",
                "problem": "the masks may be instance label images (each object its own id); train takes their "
                "values as classes",
                "fix": "train with --instance-masks if each id is one object",
            }
        )
    return False


def scan_pairs(
    pairs: Sequence[Pair],
    problems: list[dict],
    warnings: list[dict],
    instance_masks: bool = False,
    axes: AxisChoice = FILE_AXES,
    ignore_value: int | None = None,
) -> FolderScan:
    """Read every pair once; unreadable files and size mismatches become problems, JPEG masks
    warnings. Instance masks count their objects and are summarised as the 0/1 they train as;
    pixels of `ignore_value` are counted apart (count_values)."""
    scan = FolderScan()
    for pair in planes_of(pairs, scan, problems, axes):
        try:
            image, maximum = read_image_scaled(pair.image, pair.plane, axes)
            mask = read_mask(pair.mask, pair.plane, axes)
        except UnetkitError as err:
            problems.append({"file": str(err).split(": ", 1)[0], "problem": str(err)})
            continue
        scan.sizes[pair.label] = image.shape[:2]
        scan.channels[pair.label] = image.shape[2]
        scan.scales.setdefault(maximum, []).append(pair.label)
        try:
            check_pair_shapes(pair.image, pair.mask, image.shape[:2], mask.shape)
        except UnetkitError as err:  # the size is still summarised, and the values counted
            problems.append({"file": str(err).split(": ", 1)[0], "problem": str(err).split(": ", 1)[1]})
        scan.depths.setdefault(bit_depth(mask.dtype), pair.mask)
        scan.names.append(pair.label)
        scan.facts.append(mask_facts(mask, ignore_value, count_objects=True))
        if instance_masks:
            scan.objects[pair.label] = scan.facts[-1].objects
            mask = instance_classes(mask, "objects", ignore_value)
        values = count_values(scan, mask, pair, ignore_value, warnings)
        said = instance_masks or len(scan.binary) > 1  # instance ids are no classes; the problem said once
        mixed = None if said else mixed_binary(scan.binary, values, pair.mask)
        if mixed:
            problems.append({"file": str(mixed[0]), "problem": mixed[1], "fix": mixed[2]})
        scan.lossy = scan.lossy or is_jpeg(pair.mask)
        if is_jpeg(pair.mask):
            warnings.append(
                {
                    "file": str(pair.mask),
                    "problem": "JPEG mask: compression changes pixel values at edges",
                    "fix": "save masks as PNG",
                }
            )
    return scan


def count_values(scan: FolderScan, mask: np.ndarray, pair: Pair, ignore_value: int | None, warnings: list) -> list:
    """Add a mask's values to the scan's counts, those of `ignore_value` apart; a mask of nothing
    else is a warning (a CamVid frame all void adds nothing to training or its scores). Returns
    the values counted."""
    values, counts = value_counts(mask)
    found = dict(zip(values.tolist(), counts.tolist(), strict=True))
    if ignore_value is not None and ignore_value in found:
        scan.ignored += found.pop(ignore_value)
        if not found:
            scan.all_ignored.append(pair.label)
            problem = f"every pixel is the ignore value {ignore_value}"
            fix = "it adds nothing to training or its scores: label it, or leave the pair out"
            warnings.append({"file": str(pair.mask), "problem": problem, "fix": fix})
    scan.value_counts.update(found)
    return list(found)


def planes_of(pairs: Sequence[Pair], scan: FolderScan, problems: list[dict], axes: AxisChoice) -> list[Pair]:
    """Every plane of every pair, as training reads them (expand_planes); TIFF images are listed
    in `scan.stacks` with how their axes were read, a mask stack of other planes is a problem."""
    planes: list[Pair] = []
    for pair in pairs:
        try:
            expanded = expand_planes([pair], axes)
        except UnetkitError as err:
            problems.append({"file": str(err).split(": ", 1)[0], "problem": str(err)})
            continue
        if pair.image.suffix.lower() in (".tif", ".tiff"):
            scan.stacks[pair.image.name] = {"read_as": describe_axes(pair.image, axes), "planes": len(expanded)}
        planes += expanded
    return planes


def _summarise_shapes(report: dict, sizes: dict, channels: dict, warnings: list[dict]) -> None:
    size_counts = Counter(sizes.values())
    report["image_sizes"] = {f"{w}x{h}": n for (h, w), n in size_counts.most_common()}
    report["channels"] = dict(Counter(channels.values()))
    if len(size_counts) > 1:
        common, _ = size_counts.most_common(1)[0]
        odd = [name for name, size in sizes.items() if size != common]
        if len(odd) <= max(3, len(sizes) // 10):  # a few stragglers, not a mixed-size data set
            for name in odd:
                h, w = sizes[name]
                warnings.append(
                    {
                        "file": name,
                        "problem": f"size {w}x{h} differs from the usual {common[1]}x{common[0]}",
                        "fix": "fine for training with patches; check it is the right image",
                    }
                )
    channel_counts = Counter(channels.values())
    if len(channel_counts) > 1:
        common, _ = channel_counts.most_common(1)[0]
        for name, count in channels.items():
            if count != common:
                warnings.append(
                    {
                        "file": name,
                        "problem": f"{count} channel(s) where most images have {common}",
                        "fix": "gray and RGB are converted (convert it yourself if that is not what you want); "
                        "other channel counts cannot be mixed in one set",
                    }
                )


def _summarise_values(
    report: dict, value_counts: Counter, problems: list[dict], instances: bool = False, lossy: bool = False
) -> None:
    total = sum(value_counts.values())
    report["mask_values"] = [
        {"value": int(v), "pixels": int(n), "fraction": n / total if total else 0.0}
        for v, n in sorted(value_counts.items())
    ]
    if len(value_counts) > MAX_DISCOVERED_VALUES:
        many = f"masks hold {len(value_counts)} distinct values"
        if zero_dominates(dict(value_counts)) and not lossy:
            problem, fix = f"{many}, with 0 the most common: {MANY_IDS[0]}", MANY_IDS[1]
        else:
            problem, fix = f"{many}: a photo, or JPEG compression's", "save masks as PNG with one value per class"
        problems.append({"file": report["masks"], "problem": problem, "fix": fix})
    elif not instances and edge_values(value_counts):
        problem, fix = edge_values(value_counts)
        problems.append({"file": report["masks"], "problem": problem, "fix": fix})
    outside = values_outside(value_counts)
    if outside:
        problems.append(
            {
                "file": report["masks"],
                "problem": f"mask value(s) {outside[:5]} are outside 0..{MAX_VALUE}, beyond a PNG mask",
                "fix": "relabel the masks with values in that range (e.g. -1 as 255 with --ignore-value 255)",
            }
        )
    if total and len(value_counts) < 2:
        problems.append(
            {
                "file": report["masks"],
                "problem": f"masks hold only the value(s) {sorted(value_counts)}",
                "fix": "segmentation needs at least two classes; check the masks folder",
            }
        )


def tiff_lines(read: dict[str, dict]) -> list[str]:
    """How the TIFFs' axes were read: each stack (up to 10), the 2-D ones counted by layout."""
    stacks = [(name, how["read_as"]) for name, how in read.items() if how["planes"] > 1]
    lines = [f"stack: {name}: {axes}, each plane an image" for name, axes in stacks[:10]]
    lines += [f"stacks: {len(stacks) - 10} more (in --json)"] if len(stacks) > 10 else []
    flat = Counter(how["read_as"] for how in read.values() if how["planes"] == 1)
    return lines + [f"TIFF images read as {axes}: {count}" for axes, count in flat.items()]


# Problems or warnings of one kind (the same words but for file names and numbers) shown in full;
# the rest are counted (a folder of 20 channels-first TIFFs printed 20 lines of one problem).
SHOWN_ALIKE = 3
FILE_NAME = re.compile(r"[^\s:;,()']+\.(?:tiff?|png|jpe?g|bmp|gif)\b", re.IGNORECASE)


def same_problem(item: dict) -> str:
    """What makes two problems alike: their words, file names and numbers left out."""
    return re.sub(r"\d+", "#", FILE_NAME.sub("<file>", item["problem"]))


def check_line(kind: str, item: dict) -> str:
    """One problem or warning with its fix, its file named once."""
    fix = f"; fix: {item['fix']}" if item.get("fix") else ""
    if item["problem"].startswith(item["file"]):
        return f"{kind[:-1]}: {item['problem']}{fix}"
    return f"{kind[:-1]}: {item['file']}: {item['problem']}{fix}"


def format_check(report: dict) -> str:
    lines = [
        f"pairs: {report.get('pairs', 0)}"
        + (f" (mask suffix '{report['mask_suffix']}')" if report.get("mask_suffix") else "")
    ]
    if report.get("image_sizes"):
        lines.append("image sizes: " + ", ".join(f"{size} x{n}" for size, n in report["image_sizes"].items()))
        lines.append("channels: " + ", ".join(f"{c} x{n}" for c, n in report["channels"].items()))
    if report.get("mask_values"):
        lines.append(
            f"mask values ({len(report['mask_values'])}): "
            + ", ".join(f"{row['value']}: {100 * row['fraction']:.2f}%" for row in report["mask_values"][:20])
            + (" ..." if len(report["mask_values"]) > 20 else "")
        )
    if report.get("ignored"):
        ignored = report["ignored"]
        total = ignored["pixels"] + sum(row["pixels"] for row in report.get("mask_values") or [])
        share = 100 * ignored["pixels"] / total if total else 0.0
        lines.append(f"ignored (value {ignored['value']}): {share:.2f}% of the pixels, not a class")
    lines += tiff_lines(report.get("tiff_axes") or {})
    if report.get("objects"):
        lines.append(f"objects: {report['objects']['total']} (median {report['objects']['per_mask_median']} per mask)")
    for kind in ("problems", "warnings"):
        alike: dict[str, list[dict]] = {}  # one line for each of 500 images with one problem buried the rest
        for item in report[kind]:
            alike.setdefault(same_problem(item), []).append(item)
        for items in alike.values():  # each kind of problem together, then how many more of it
            lines += [check_line(kind, item) for item in items[:SHOWN_ALIKE]]
            more = len(items) - SHOWN_ALIKE
            lines += [f"{kind[:-1]}: ... and {more} more like the ones above (all of them: --json)"] * (more > 0)
    split = bool(report.get("split_refused"))
    verdict = (
        f"ok: training would work{' with --val-fraction 0 or --val-images (the warning above)' if split else ''}"
        if report["ok"]
        else f"NOT ok: {len(report['problems'])} problem(s) to fix before training"
    )
    lines.append(verdict)
    return "\n".join(lines)
