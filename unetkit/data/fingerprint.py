"""The data set fingerprint: one pass over every training pair (images and masks decoded in
parallel threads) that gathers what the recipe and the preprocessing need, as nnU-Net's
fingerprint does: image sizes, the channel count, per-channel mean and std, how much each
channel's brightness varies from image to image, the mask values with their pixel counts, and
the geometry of each class (how thin its structures are, how large its objects are), which
decides the resolution the model trains at.

Every statistic is over all pairs, never the first N: one RGB image among hundreds of gray ones
makes the model RGB, one mask with a third value adds a class. Only the geometry is measured on
an evenly spaced sample of masks (GEOMETRY_SAMPLE): distance transforms cost ~10 ms a class on an
800x540 mask, and the resolution it suggests does not need all of them.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.measure import label

from unetkit.data.mask_values import MAX_DISCOVERED_VALUES, MaskValues, discover_mask_values, zero_dominates
from unetkit.data.objects import INSTANCE_VALUES, instance_classes, instance_labels, value_counts
from unetkit.data.pairing import Pair
from unetkit.data.preprocess import IMAGE_PERCENTILES, channel_percentiles
from unetkit.errors import UnetkitError
from unetkit.runtime.threads import parallel_map

GEOMETRY_SAMPLE = 32  # masks whose class geometry is measured, evenly spaced over the set
# An image's brightness range in a channel is measured between the bounds of the per-image
# normalisation (data/preprocess.py's IMAGE_PERCENTILES), from about this many pixels.
RANGE_SAMPLE = 65536
FLAT = 1e-3  # a channel whose range is below this (of the type's full range) is blank: it tells nothing


@dataclass
class ClassGeometry:
    """The shape of one mask value's regions, in full-resolution pixels."""

    half_width: float  # median distance from a pixel of the class to the nearest pixel of another class
    extent: float  # median over masks of the largest connected region's longer bounding-box side


@dataclass
class MaskFacts:
    """What tells an instance mask from a class mask (looks_like_instances), from the mask as stored."""

    mask_values: np.ndarray  # the distinct values
    mask_counts: np.ndarray  # their pixel counts
    ids: int  # distinct values above 0
    regions: int  # 8-connected regions of one value above 0 (an instance mask: one per id)
    # Read as an instance mask: its ids, or one id's 4-connected components (objects.instance_labels);
    # None where not asked for (count_objects): train's scan has no use for it.
    objects: int | None


def mask_facts(mask: np.ndarray, ignore_value: int | None = None, count_objects: bool = False) -> MaskFacts:
    stored = mask if ignore_value is None else np.where(mask == ignore_value, 0, mask)
    values, counts = value_counts(stored)
    # Regions 8-connected, as scikit-image's label() makes objects by default: counted 4-connected, a
    # nuclei mask labelled so held 16 ids in 39 regions and read as classes (a red-team round).
    regions = int(label(stored, connectivity=2).max())
    ids = len(values) - bool(values[0] == 0)
    objects = ids if ids != 1 else int(instance_labels(stored).max()) if count_objects else None
    return MaskFacts(values, counts, ids, regions, objects)


@dataclass
class PairScan:
    """What one pair contributes to the fingerprint."""

    pair: Pair
    height: int
    width: int
    channels: int
    channel_sum: np.ndarray  # float64 (C,)
    channel_sumsq: np.ndarray
    channel_range: np.ndarray  # (C,) the image's brightness range in each channel (IMAGE_PERCENTILES)
    mask_values: np.ndarray  # the distinct values, in the mask's own dtype
    mask_counts: np.ndarray
    mask_row_sums: np.ndarray  # per value: the sum of its pixels' heights in the image (0 top, 1 bottom)
    geometry: dict[int, tuple[float, float]] = field(default_factory=dict)  # value -> (half width, extent)
    ids: int = 0  # distinct values above 0 in the mask as stored (before instance masks become classes)
    regions: int = 0  # 8-connected regions of one value above 0 (an instance mask: one per id)
    scale: float = 255.0  # the image's raw value of 1.0 (data/io.read_image_scaled): its bit depth's maximum
    ignored: int = 0  # pixels of the mask that hold the ignore value, as stored


def scan_pair(
    pair: Pair, with_geometry: bool = False, instances: str | None = None, ignore_value: int | None = None
) -> PairScan:
    image, mask, scale = pair.read_scaled()
    facts = mask_facts(mask, ignore_value)
    ignored = 0 if ignore_value is None else int(np.count_nonzero(mask == ignore_value))
    if instances:  # instance label images are measured as the classes they train as
        mask = instance_classes(mask, instances, ignore_value)
    channel_sum, channel_sumsq = channel_moments(image)
    heights = np.broadcast_to(np.linspace(0, 1, mask.shape[0])[:, None], mask.shape)
    values, counts, row_sums = value_counts(mask, heights)
    scan = PairScan(
        pair,
        image.shape[0],
        image.shape[1],
        image.shape[2],
        channel_sum,
        channel_sumsq,
        channel_range(image),
        values,
        counts,
        row_sums,
        ids=facts.ids,
        regions=facts.regions,
        scale=scale,
        ignored=ignored,
    )
    if with_geometry and len(values) > 1:
        scan.geometry = {int(v): region_geometry(mask == v) for v in values}
    return scan


def channel_moments(image: np.ndarray, rows: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel sum and sum of squares of an (H, W, C) image, accumulated in float64 a block of
    rows at a time, so a large image is never copied whole into float64."""
    sums, squares = np.zeros(image.shape[2]), np.zeros(image.shape[2])
    for start in range(0, image.shape[0], rows):
        block = image[start : start + rows].reshape(-1, image.shape[2]).astype(np.float64)
        sums += block.sum(axis=0)
        squares += np.einsum("pc,pc->c", block, block)
    return sums, squares


def channel_range(image: np.ndarray) -> np.ndarray:
    """Each channel's IMAGE_PERCENTILES range of an (H, W, C) image."""
    low, high = channel_percentiles(image, IMAGE_PERCENTILES, RANGE_SAMPLE)
    return (high - low).astype(np.float64)


def region_geometry(region: np.ndarray) -> tuple[float, float]:
    """(median distance to the region's edge, longer side of its largest connected part)."""
    distances = ndimage.distance_transform_edt(region)
    half_width = float(np.median(distances[region]))
    labels, count = ndimage.label(region)
    if count == 0:
        return half_width, 0.0
    largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    rows, cols = ndimage.find_objects(labels)[largest - 1]
    return half_width, float(max(rows.stop - rows.start, cols.stop - cols.start))


@dataclass
class DataFingerprint:
    """Everything measured about a training set (see the module docstring)."""

    num_images: int
    median_height: int
    median_width: int
    smallest_side: int  # the shortest side of any image
    largest_pixels: int  # the pixel count of the largest image
    channels: int  # set_channels: the images' channel count (gray and RGB mixed: 3)
    mean: list[float]
    std: list[float]
    value_pixels: dict[int, int]  # mask value -> pixels over the set
    value_height: dict[int, float]  # mask value -> mean height of its pixels in the image (0 top, 1 bottom)
    geometry: dict[int, ClassGeometry]
    mask_values: MaskValues  # discovered, unless the caller gave them
    instances_detected: bool = False  # the masks were found to be instance label images
    instances_maybe: bool = False  # they look like instance masks, but could be classes: said, not acted on
    # Per channel: how many times brighter (in range) the 95th-percentile image is than the 5th
    # (brightness_spread); 1.0 where every image is alike.
    brightness_spread: list[float] = field(default_factory=list)
    largest_side: int = 0  # the longest side of any image
    # The images' raw values of 1.0 (255: 8-bit, 65535: 16-bit), each with its count and first image's name.
    image_scales: dict[float, tuple[int, str]] = field(default_factory=dict)
    ignored_pixels: int = 0  # mask pixels holding the ignore value (--ignore-value), over the set
    # Per channel: the median image's brightness range (IMAGE_PERCENTILES) in read_image's units
    # (1.0 = the type's maximum; a float image's own values): typical_range.
    brightness_range: list[float] = field(default_factory=list)

    def class_fractions(self, mask_values: MaskValues) -> list[float]:
        """Each class's share of the labelled (not ignored) pixels, in class-id order."""
        counts = [self.value_pixels.get(v, 0) for v in mask_values.values]
        total = sum(counts)
        return [c / total if total else 0.0 for c in counts]

    def rarer_classes(self, mask_values: MaskValues) -> list[int]:
        """Class ids of every class but the most frequent: those class-balanced patch sampling
        centres patches on."""
        fractions = self.class_fractions(mask_values)
        most = max(range(len(fractions)), key=fractions.__getitem__)
        return [class_id for class_id in range(len(fractions)) if class_id != most]

    def to_dict(self) -> dict[str, Any]:
        """What the recipe read, as JSON-ready data: fingerprint.json in the run folder, so a
        surprising plan can be explained from the run folder alone (nnU-Net keeps its fingerprint
        as a file too)."""
        plain = {
            name: getattr(self, name) for name in self.__dataclass_fields__ if name not in ("geometry", "mask_values")
        }
        geometry = {str(value): asdict(shape) for value, shape in self.geometry.items()}
        return {
            **_python_numbers(plain),
            "mask_values": self.mask_values.to_dict(),
            "geometry": _python_numbers(geometry),
        }

    def describe(self) -> str:
        kind = {1: "gray", 3: "RGB"}.get(self.channels, f"{self.channels} channels")
        return f"{self.num_images} images of median size {self.median_width}x{self.median_height}, {kind}"


def _python_numbers(data: Any) -> Any:
    """numpy scalars as Python numbers, through dicts and lists (json writes only the latter)."""
    if isinstance(data, dict):
        return {str(key): _python_numbers(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_python_numbers(value) for value in data]
    return data.item() if isinstance(data, np.generic) else data


def fingerprint_pairs(
    pairs: Sequence[Pair],
    ignore_value: int | None = None,
    mask_values: Sequence[int] | None = None,
    workers: int | None = None,
    instances: str | None = None,
    detect: str | None = None,
    fits_model: bool = False,
) -> DataFingerprint:
    """Scan every pair (in parallel) and summarise. `mask_values` given: they are used (and
    checked by encoding later); otherwise they are discovered from all masks. `instances`
    (a mode of data/objects.INSTANCE_VALUES): the masks are instance label images; `detect`:
    the mode to train them as if the masks look like instance masks (looks_like_instances);
    `fits_model`: the run starts from an instance model, and masks that fit it are taken as its."""
    if not pairs:
        raise UnetkitError("no training pairs to fingerprint")
    detecting = bool(detect and not instances and not mask_values)
    detect = detect if detecting else None
    scans, detected, maybe = _scan_pairs(pairs, ignore_value, workers, instances, detect, fits_model)
    instances = detect if detected else instances
    channels = set_channels(scans)
    mean, std = _channel_moments(scans, channels)
    value_pixels: Counter[int] = Counter()
    row_sums: Counter[int] = Counter()
    for scan in scans:
        value_pixels.update(dict(zip(scan.mask_values.tolist(), scan.mask_counts.tolist(), strict=True)))
        row_sums.update(dict(zip(scan.mask_values.tolist(), scan.mask_row_sums.tolist(), strict=True)))
    if mask_values:
        found = MaskValues.from_user(mask_values, ignore_value)
    else:
        masks = ((s.pair.mask, s.mask_values, s.mask_counts) for s in scans)
        found = discover_mask_values(masks, ignore_value, edges=not instances)
    if instances:  # the classes an instance mask trains as, even those the masks lack (data/objects.py)
        found = MaskValues(INSTANCE_VALUES[instances], found.ignore_value, instances)
    return DataFingerprint(
        num_images=len(pairs),
        median_height=int(statistics.median(s.height for s in scans)),
        median_width=int(statistics.median(s.width for s in scans)),
        smallest_side=min(min(s.height, s.width) for s in scans),
        largest_pixels=max(s.height * s.width for s in scans),
        channels=channels,
        mean=mean,
        std=std,
        value_pixels={int(v): int(n) for v, n in value_pixels.items() if v != ignore_value},
        value_height={int(v): row_sums[v] / n for v, n in value_pixels.items() if v != ignore_value and n},
        geometry=_class_geometry(s.geometry for s in scans if s.geometry),
        mask_values=found,
        instances_detected=detected,
        instances_maybe=maybe,
        brightness_spread=brightness_spread(scans, channels),
        brightness_range=typical_range(scans, channels),
        largest_side=max(max(s.height, s.width) for s in scans),
        image_scales=image_scales(scans),
        ignored_pixels=sum(s.ignored for s in scans),
    )


def image_scales(scans: Sequence[PairScan]) -> dict[float, tuple[int, str]]:
    """{raw value of 1.0: (images, the first one's file name)} over the set (data/io.mixed_scales)."""
    counts = Counter(scan.scale for scan in scans)
    first = {scan.scale: scan.pair.label for scan in reversed(scans)}
    return {scale: (count, first[scale]) for scale, count in counts.items()}


def _scan_pairs(
    pairs: Sequence[Pair],
    ignore_value: int | None,
    workers: int | None,
    instances: str | None,
    detect: str | None,
    fits_model: bool = False,
) -> tuple[list[PairScan], bool, bool]:
    """Every pair's scan, with the geometry of an evenly spaced sample; with `detect`, whether the
    masks are instance masks (then scanned as the classes they train as) or may be (a hint)."""
    step = max(1, len(pairs) // GEOMETRY_SAMPLE)
    sampled = set(range(0, len(pairs), step)[:GEOMETRY_SAMPLE])

    def scan(indices: Sequence[int], mode: str | None, geometry: bool) -> list[PairScan]:
        return parallel_map(
            lambda i: scan_pair(pairs[i], geometry and i in sampled, mode, ignore_value), indices, workers
        )

    # While it is open whether the masks are instance masks, no geometry: measured per value, it
    # would measure every id of every sampled instance mask (19 s instead of 1.4 s on dsb2018-dev).
    scans = scan(range(len(pairs)), instances, geometry=not detect)
    if not detect:
        return scans, False, False
    if looks_like_instances(scans, fits=fits_model):  # measured again as the classes they train as
        return scan(range(len(pairs)), detect, geometry=True), True, False
    for index, again in zip(sorted(sampled), scan(sorted(sampled), None, geometry=True), strict=True):
        scans[index] = again  # the sampled masks again, for their geometry
    return scans, False, looks_like_instances(scans, sure=False)


def set_channels(scans: Sequence[PairScan]) -> int:
    """The channel count of a set's model: every image's own count; gray and RGB mixed train as RGB
    (gray repeated, as photos are); other mixes are refused, naming an image of each count, since
    no channel of a fluorescence image can be made up or dropped."""
    counts = {scan.channels: scan.pair.image for scan in scans}
    if set(counts) <= {1, 3}:
        return max(counts)
    if len(counts) > 1:
        shown = ", ".join(f"{path.name} has {count}" for count, path in sorted(counts.items())[:3])
        raise UnetkitError(
            f"{shown} channels (a channel is dropped only where the file marks it as alpha); a model takes one "
            "channel count: give every image the same channels"
        )
    return next(iter(counts))


def _channel_moments(scans: Sequence[PairScan], channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std over every pixel of every image; a gray image in an RGB set counts
    in all three channels, as it is repeated to RGB before the model."""
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    pixels = 0
    for scan in scans:
        total += scan.channel_sum if scan.channels == channels else scan.channel_sum.mean()
        total_sq += scan.channel_sumsq if scan.channels == channels else scan.channel_sumsq.mean()
        pixels += scan.height * scan.width
    mean = total / pixels
    std = np.sqrt(np.maximum(total_sq / pixels - np.square(mean), 0.0))
    return [float(m) for m in mean], [float(max(s, 1e-3)) for s in std]


def image_ranges(scans: Sequence[PairScan], channels: int) -> np.ndarray:
    """(images, C): each image's brightness range a channel, a gray image's in every channel of a
    colour set."""
    return np.array(
        [s.channel_range if s.channels == channels else np.full(channels, s.channel_range.mean()) for s in scans]
    )


def brightness_spread(scans: Sequence[PairScan], channels: int) -> list[float]:
    """Per channel, the 95th over the 5th percentile of the images' brightness ranges, blank
    images left out: fluorescence varies, scenes and EM little (train splits: ISBI 1.36, HC18 1.33,
    CamVid 1.24, dsb2018-dev 7.34). Percentiles, not max over min, so a few odd images do not
    decide it. A gray image in an RGB set counts in all three channels."""
    spread = []
    for column in image_ranges(scans, channels).T:
        lit = column[column >= FLAT]
        low, high = np.percentile(lit, [5, 95]) if len(lit) else (1.0, 1.0)
        spread.append(round(float(high / low), 2))
    return spread


def typical_range(scans: Sequence[PairScan], channels: int) -> list[float]:
    """Per channel, the median of the images' brightness ranges, blank images left out (1.0 where
    all are blank): 12-bit data in 16-bit files spans under 0.0625, a float TIFF of counts 0-4000
    over 1000 (recipes.data_normalisation)."""
    medians = []
    for column in image_ranges(scans, channels).T:
        lit = column[column > 0]  # not FLAT: 16-bit data spanning 100-140 is all under it, and dim, not blank
        medians.append(round(float(np.median(lit)), 6) if len(lit) else 1.0)
    return medians


def _class_geometry(per_mask: Iterable[dict[int, tuple[float, float]]]) -> dict[int, ClassGeometry]:
    widths: dict[int, list[float]] = {}
    extents: dict[int, list[float]] = {}
    for geometry in per_mask:
        for value, (half_width, extent) in geometry.items():
            widths.setdefault(value, []).append(half_width)
            extents.setdefault(value, []).append(extent)
    return {v: ClassGeometry(float(statistics.median(widths[v])), float(statistics.median(extents[v]))) for v in widths}


def looks_like_instances(scans: Sequence[PairScan | MaskFacts], sure: bool = True, fits: bool = False) -> bool:
    """Instance label images (each object its own id, 0 background), told from class masks by
    facts over the set: 0 dominates (data.mask_values.zero_dominates), each id is one connected
    region (a class's objects, or a JPEG's stray values, are many regions of one value), and more
    distinct ids than the MAX_DISCOVERED_VALUES classes a mask set may hold: sure (dsb2018-dev:
    370 ids, 1.0 region an id; ISBI, HC18 and CamVid fail the first or last). With `sure` off, a
    hint only: four or more ids in the median mask, not one same set of values in every mask; a
    class mask with one shape per class (organs) looks the same, so this is never acted on alone.
    `fits`: the first two facts only, which instance masks of any count hold: enough where the run
    starts from an instance model (--init-from), whose kind of target the masks then keep (eight
    corrected nuclei images hold 56 ids, too few to be sure of, and trained as 57 classes)."""
    pixels: Counter[int] = Counter()
    union: set[int] = set()
    for scan in scans:
        pixels.update(dict(zip(scan.mask_values.tolist(), scan.mask_counts.tolist(), strict=True)))
        union.update(scan.mask_values.tolist())
    ids = sum(s.ids for s in scans)
    one_region_each = 0 < ids and sum(s.regions for s in scans) <= 1.1 * ids
    if not (zero_dominates(dict(pixels)) and one_region_each):
        return False
    if fits:
        return True
    if sure:
        return len(union - {0}) > MAX_DISCOVERED_VALUES
    one_set = len({tuple(s.mask_values.tolist()) for s in scans}) == 1
    return statistics.median(s.ids for s in scans) >= 4 and not one_set
