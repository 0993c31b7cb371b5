"""Mask values <-> class ids.

Users store classes as whatever pixel values they like (0/255, 0/1, 0..11, palette indices). The
sorted distinct values found in the training masks become class ids 0, 1, 2, ...; the list is kept
in the checkpoint so predicted masks are written back in the user's own values.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from unetkit.data.objects import INSTANCE_CLASS_NAMES, instance_classes, mask_objects
from unetkit.errors import UnetkitError

IGNORE_ID = 255  # class id stored for pixels whose value is the ignore value
MAX_DISCOVERED_VALUES = 64
MAX_VALUE = 65535  # the largest value a 16-bit PNG mask holds


class MaskValues:
    """The mapping from a mask's pixel values to class ids, and back."""

    def __init__(self, values: Sequence[int], ignore_value: int | None = None, instances: str | None = None) -> None:
        values = [int(v) for v in values]
        self.instances = instances  # a mode of objects.INSTANCE_VALUES: the masks are instance label images
        if len(values) < 2:
            raise UnetkitError(
                f"masks hold only the value(s) {values}: segmentation needs at least two classes; "
                "check the masks folder or pass --mask-values"
            )
        if len(set(values)) != len(values):
            raise UnetkitError(f"mask values {values} repeat a value; list each value once")
        if len(values) > IGNORE_ID:
            raise UnetkitError(f"{len(values)} mask values: at most {IGNORE_ID} classes are supported")
        outside = values_outside(values + ([ignore_value] if ignore_value is not None else []))
        if outside:
            raise UnetkitError(
                f"mask value {outside[0]} is outside 0..{MAX_VALUE}, which a PNG mask cannot hold, so predicted "
                "masks could not be written; relabel the masks with values in that range"
            )
        self.values = values
        self.ignore_value = ignore_value
        lo = min(values + ([ignore_value] if ignore_value is not None else []))
        hi = max(values + ([ignore_value] if ignore_value is not None else []))
        self._offset = lo
        self._lut = np.full(hi - lo + 1, -1, dtype=np.int16)
        for class_id, value in enumerate(values):
            self._lut[value - lo] = class_id
        if ignore_value is not None:
            self._lut[ignore_value - lo] = IGNORE_ID

    @classmethod
    def from_user(cls, values: Sequence[int], ignore_value: int | None = None) -> MaskValues:
        """`--mask-values` as typed (their order checked with the option, config.py): also checked
        against `--ignore-value` (a checkpoint's stored values are taken as they are, so older runs
        keep working)."""
        values = [int(v) for v in values]
        if ignore_value is not None and ignore_value in values:
            raise UnetkitError(
                f"--ignore-value {ignore_value} is also one of the mask values {values}: that class would be "
                "dropped from training; pick a value that marks only don't-care pixels"
            )
        return cls(values, ignore_value)

    @property
    def num_classes(self) -> int:
        return len(self.values)

    @property
    def countable(self) -> bool:
        """Whether the task's objects are things a person counts: instance masks, or one class on
        a background (cells, nuclei, heads). A street scene's classes are regions, not things;
        the recipe's border weights and the report's object panels follow this."""
        return self.instances is not None or self.num_classes == 2

    @property
    def object_class_ids(self) -> list[int]:
        """The classes whose regions are objects: class 1 for instance masks (2 and 3 are its
        edge and centre), else every class but class 0."""
        return [1] if self.instances else list(range(1, max(self.num_classes, 2)))

    def encode(self, mask: np.ndarray, path: str | Path = "mask") -> np.ndarray:
        """Pixel values -> class ids (uint8); a value not in the list is an error naming the file.
        Instance masks are made semantic first (objects.instance_classes)."""
        if self.instances:
            mask = instance_classes(mask, self.instances, self.ignore_value)
        shifted = mask.astype(np.int64) - self._offset
        inside = (shifted >= 0) & (shifted < len(self._lut))
        ids = np.full(mask.shape, -1, dtype=np.int16)
        ids[inside] = self._lut[shifted[inside]]
        if (ids < 0).any():
            unknown = np.unique(mask[ids < 0])
            fix = "save masks as PNG, JPEG compression changes their values" if is_jpeg(path) else "fix the mask"
            raise UnetkitError(
                f"{path}: mask value(s) {unknown[:5].tolist()} are not among the trained values "
                f"{self.values}; {fix}, or retrain with --mask-values including them (or with --ignore-value "
                f"{unknown[0]} if it marks unlabelled pixels)"
            )
        return ids.astype(np.uint8)

    def true_objects(self, mask: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
        """A mask's objects as this task counts them (objects.mask_objects): an instance mask's
        own ids, else the components of each object class in `class_ids` (encode's)."""
        return mask_objects(mask, class_ids, self.instances, self.object_class_ids, IGNORE_ID)

    @property
    def legend(self) -> list[str]:
        """Each class as an overlay's legend names it: by the value a predicted mask holds for it,
        and for an instance model by what that value is (its masks hold object ids, not these; the
        legend read "value 0 ... value 3": a red-team round)."""
        if self.instances:
            return [
                f"value {v}: {name}" for v, name in zip(self.values, INSTANCE_CLASS_NAMES[self.instances], strict=True)
            ]
        return [f"value {value}" for value in self.values]

    def decode(self, class_ids: np.ndarray) -> np.ndarray:
        """Class ids -> the user's pixel values, in the smallest integer type that holds them."""
        dtype = np.uint8 if 0 <= min(self.values) and max(self.values) <= 255 else np.uint16
        values = np.asarray(self.values, dtype=dtype)
        step = (int(values[-1]) - int(values[0])) // (len(values) - 1)
        if step <= 0 or not np.array_equal(values, values[0] + step * np.arange(len(values))):
            return values[class_ids]  # as stored: an older run's values may come in any order
        # Evenly spaced upwards (0..K-1, 0/255, 1..K: most masks) as ids * step + first: 1.1 ms
        # for a 704 x 20,000 slide band, where the lookup took 31 (AMX CPU).
        mask = class_ids.astype(dtype)
        mask *= dtype(step)
        mask += values[0]
        return mask

    def to_dict(self) -> dict:
        return {"values": self.values, "ignore_value": self.ignore_value, "instances": self.instances}

    @classmethod
    def from_dict(cls, state: dict) -> MaskValues:
        return cls(state["values"], state.get("ignore_value"), state.get("instances"))


def discover_mask_values(
    masks: Iterable[tuple[Path, np.ndarray, np.ndarray]], ignore_value: int | None = None, edges: bool = True
) -> MaskValues:
    """Collect the sorted distinct values of the training masks (ignore value left out), from each
    mask's path, distinct values (in the mask's dtype) and their pixel counts; `edges`: refuse
    values that look like a resize's or a codec's (refuse_edge_values), not for instance masks."""
    seen: set[int] = set()
    by_depth: dict[str, Path] = {}  # bit depth -> the first mask of that depth
    binary: dict[int, Path] = {}  # a two-value mask's foreground (0/1 or 0/255) -> the first such mask
    totals: Counter[int] = Counter()
    for path, values, counts in masks:
        by_depth.setdefault(bit_depth(values.dtype), path)
        found = [int(v) for v in values]
        seen.update(found)
        totals.update(dict(zip(found, counts.tolist(), strict=True)))
        mixed = mixed_binary(binary, [v for v in found if v != ignore_value], path)
        if mixed:
            raise UnetkitError(f"{mixed[0]}: {mixed[1]}; {mixed[2]}")
        # One 16-bit mask among 8-bit ones would silently add classes (0/255 plus 0/65535), and so
        # would a 1-bit mask (0/1) among 8-bit 0/255 ones; 1-bit beside 8-bit 0/1 masks is fine.
        if depths_disagree(set(by_depth), seen):
            (depth_a, first), (depth_b, second) = list(by_depth.items())[:2]
            raise UnetkitError(
                f"{second}: mask is {depth_b} but {Path(first).name} is {depth_a}; "
                "save all masks with the same bit depth and the same values per class"
            )
        bad = values_outside(found)
        if bad:
            raise UnetkitError(
                f"{path}: mask value {bad[0]} is outside 0..{MAX_VALUE}, which a PNG mask cannot hold; "
                "relabel the masks with values in that range (e.g. a -1 'unlabelled' as 255 with --ignore-value 255)"
            )
        if len(seen - {ignore_value}) > MAX_DISCOVERED_VALUES:
            if zero_dominates(dict(zip(found, counts.tolist(), strict=True))) and not is_jpeg(path):
                raise UnetkitError(
                    f"{path}: masks hold more than {MAX_DISCOVERED_VALUES} distinct values with 0 the most common: "
                    f"{MANY_IDS[0]}; {MANY_IDS[1]}"
                )
            raise UnetkitError(
                f"{path}: masks hold more than {MAX_DISCOVERED_VALUES} distinct values, which looks "
                "like a photo or JPEG-compressed mask; save masks as PNG with one value per class, "
                "or list the classes with --mask-values"
            )
    if ignore_value is not None:
        seen.discard(ignore_value)
        totals.pop(ignore_value, None)
    if edges and totals:
        refuse_edge_values(totals, by_depth)
    return MaskValues(sorted(seen), ignore_value)


# Many values, 0 the most common: what they may be, and the fixes (train and check say the same).
MANY_IDS = (
    "instance masks (each object its own id), or masks whose edges were smoothed by resizing",
    "train with --instance-masks if each value is one object; else resize masks with nearest-neighbour and save "
    "them as PNG, or list the classes with --mask-values",
)


def mixed_binary(binary: dict[int, Path], found: list[int], path: Path) -> tuple[Path, str, str] | None:
    """(file, problem, fix) once two-value masks paint their foreground 1 in some and 255 in others
    (`found`: one mask's sorted values; `binary` collects the first mask of each): one class, not
    three classes 0, 1 and 255 (a red-team round)."""
    if found in ([0, 1], [0, 255]):
        binary.setdefault(found[1], path)
    if len(binary) < 2:
        return None
    return (
        binary[255],
        f"mask values are 0/255 but {Path(binary[1]).name}'s are 0/1",
        "save all masks with the same value per class (e.g. 0/255), or pass --mask-values 0,1,255 if they are "
        "three classes",
    )


def is_jpeg(path: Path | str) -> bool:
    return Path(path).suffix.lower() in (".jpg", ".jpeg")


def refuse_edge_values(totals: Counter[int], by_depth: dict[str, Path]) -> None:
    """Training's side of edge_values: refused in one line naming the first mask."""
    problem = edge_values(totals)
    if problem:
        raise UnetkitError(f"{next(iter(by_depth.values()))}: {problem[0]}; {problem[1]}")


def edge_values(totals: Counter[int] | dict[int, int]) -> tuple[str, str] | None:
    """(problem, fix) where masks hold, besides their classes, the values a resize's interpolation
    (anti-aliased edges) or a lossy codec leaves between them: 0/128/255 resized bilinearly held
    15 values, 12 of them under 0.5% of the pixels each, and trained as 15 classes at val Dice
    0.13 (a red-team round). Class ids are usually 0..K-1 or a few spaced values: it takes at
    least EDGE_VALUES rare values (under RARE_SHARE each) that are not evenly spaced. Ids in one run
    (0, 1, 2, ...) or quantised (0, 8, 16, ...: 30 classes saved so were called smoothed edges, a
    red-team round) are classes; an interpolation's values are not spaced evenly.
    `unetkit check` and training share this one rule."""
    pixels = sum(totals.values())
    rare = sorted(v for v, n in totals.items() if n < RARE_SHARE * pixels)
    values = sorted(totals)
    if len(rare) < EDGE_VALUES or len({b - a for a, b in itertools.pairwise(values)}) == 1:
        return None
    common = ", ".join(str(v) for v in values if v not in rare)
    examples = ", ".join(map(str, rare[:5]))
    return (
        f"the masks hold {len(values)} values, {len(rare)} of them rare (e.g. {examples}: under {RARE_SHARE:.1%} of "
        f"the pixels each) beside {common}: most likely edges smoothed by resizing, or lossy (JPEG) saving",
        "resize masks with nearest-neighbour and save them as PNG; or pass --instance-masks if each value is one "
        "object, or --mask-values listing every class if those values are classes",
    )


RARE_SHARE = 0.005  # a value under this share of the masks' pixels is rare
EDGE_VALUES = 5  # this many rare values, not one run of ids, are a resize's or a codec's, not classes


def zero_dominates(counts: dict[int, int]) -> bool:
    """Among many values, 0 (background) covers a fifth of the pixels or more and thrice any other
    value: instance masks (an id per object), not a photo or a JPEG-compressed mask, whose values
    spread out; `check` and `train` tell the two apart by this one rule."""
    total, background = sum(counts.values()), counts.get(0, 0)
    others = [n for value, n in counts.items() if value != 0]
    return total > 0 and background >= 0.2 * total and background >= 3 * max(others, default=0)


def values_outside(values: Iterable[int]) -> list[int]:
    """The values a PNG mask cannot hold (below 0 or above MAX_VALUE), in order."""
    return sorted(int(v) for v in values if not 0 <= int(v) <= MAX_VALUE)


def depths_disagree(depths: set[str], values: set[int]) -> bool:
    """Masks of several bit depths mean different classes by the same number (0/255 and 0/65535),
    except 1-bit masks beside 8-bit masks that hold only 0 and 1."""
    return len(depths) > 1 and not (depths == {"1-bit", "8-bit"} and values <= {0, 1})


def bit_depth(dtype: np.dtype) -> str:
    if np.dtype(dtype) == np.bool_:
        return "1-bit"
    return f"{np.dtype(dtype).itemsize * 8}-bit" if np.issubdtype(dtype, np.integer) else str(dtype)
