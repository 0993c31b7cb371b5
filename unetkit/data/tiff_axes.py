"""How a TIFF's axes become what unetkit reads: rows (Y) and columns (X), channels (S, the
samples of a pixel, or C, the channel axis of ImageJ and OME files) and planes (every other axis
longer than one: Z, T, and the unnamed page axes I and Q of a plain multi-page TIFF). A stack of
P planes is P images of the same channels, read one plane at a time; a file of one plane is an
ordinary 2-D image. The axes are tifffile's reading of the file's own metadata (ImageJ
hyperstack, OME-XML, shaped), so nothing is guessed from the shape alone: a 3-page TIFF without
metadata is 3 planes, never RGB. Where the metadata is wrong or missing, --channel-axis and
--plane-axis (AxisChoice) name the axis that holds the channels or the planes, by the letter
`unetkit check` shows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from unetkit.data.limits import MAX_CHANNELS, check_declared_pixels
from unetkit.errors import UnetkitError

CHANNEL_AXES = "SC"
IMAGE_AXES = "YX"


# The options' words, shared by train, check, evaluate and predict.
CHANNEL_AXIS_HELP = (
    "TIFFs: the axis that holds the channels, by the letter unetkit check shows (e.g. Q for pages without axis "
    "names), where the file's metadata is wrong or missing (default: S and C)"
)
PLANE_AXIS_HELP = (
    "TIFFs: the axis whose every position is an image of its own (a plane), e.g. C where a file calls its "
    "z-slices channels (default: every axis but Y, X, S and C)"
)
AXIS_NEED = "one axis letter as unetkit check shows it, e.g. Q, Z, T or C (not Y or X)"


def axis_letter(value: object) -> bool:
    return isinstance(value, str) and len(value) == 1 and value.isalpha() and value.isupper() and value not in "YX"


@dataclass(frozen=True)
class AxisChoice:
    """The user's word on a TIFF's axes, over its metadata: the axis that holds the channels, and
    the axis that holds the planes (tifffile's letters, e.g. Q for unnamed pages); None: the file's."""

    channel: str | None = None
    plane: str | None = None
    strict: bool = True  # a named axis the file lacks is an error (images); masks: skipped

    @property
    def for_masks(self) -> AxisChoice:
        """Masks have no channels; their plane axis is the images' where they have it."""
        return AxisChoice(None, self.plane, strict=False)

    def __post_init__(self) -> None:
        for option, axis in (("--channel-axis", self.channel), ("--plane-axis", self.plane)):
            if axis is not None and not axis_letter(axis):
                raise UnetkitError(f"{option} {axis}: must be {AXIS_NEED}")
        if self.channel is not None and self.channel == self.plane:
            raise UnetkitError(
                f"--channel-axis and --plane-axis both name {self.channel}; an axis holds one or the other"
            )

    def check(self, axes: str, path: Path) -> None:
        """Each chosen axis must be one of the file's (not Y or X); each axis letter appears once."""
        repeated = sorted({a for a in axes if axes.count(a) > 1})
        if repeated:
            raise UnetkitError(
                f"{path}: the TIFF's axes {axes} name {', '.join(repeated)} more than once, so planes and channels "
                "cannot be told apart; save it with its axes named, e.g. tifffile.imwrite(..., metadata={'axes': "
                "'ZCYX'}) or as an ImageJ hyperstack"
            )
        others = "".join(a for a in axes if a not in IMAGE_AXES)
        for option, axis in (("--channel-axis", self.channel), ("--plane-axis", self.plane)):
            if axis is not None and axis not in others and self.strict:
                raise UnetkitError(
                    f"{path}: {option} {axis}, but the file's axes are {axes}; name one of "
                    f"{', '.join(others) or '(none)'} (unetkit check shows each file's axes), or leave the option out"
                )


FILE_AXES = AxisChoice()  # no choice: the file's own metadata


@dataclass(frozen=True)
class TiffAxes:
    """The first series' axes and shape as tifffile reads them, and which are planes and channels."""

    axes: str  # e.g. "TZCYX", "ZCYX", "QYXS", "YX"
    shape: tuple[int, ...]
    choice: AxisChoice = FILE_AXES

    def length(self, axis: str) -> int:
        return self.shape[self.axes.index(axis)]

    @property
    def channel_axes(self) -> str:
        """S and C, or the chosen channel axis, but never the chosen plane axis."""
        named = CHANNEL_AXES + (self.choice.channel or "")
        return "".join(a for a in self.axes if a in named and a != self.choice.plane and self.length(a) > 1)

    @property
    def plane_axes(self) -> str:
        """Every other axis longer than one (Z, T, pages), in the file's order: each position an image."""
        image = self.channel_axes + IMAGE_AXES
        return "".join(a for a in self.axes if a not in image and self.length(a) > 1)

    @property
    def planes(self) -> int:
        return math.prod(self.length(a) for a in self.plane_axes)

    @property
    def plane_shape(self) -> tuple[int, ...]:
        """The plane axes' lengths, e.g. (T, Z), for writing outputs of the same axes."""
        return tuple(self.length(a) for a in self.plane_axes)

    def fixed_at(self, plane: int) -> dict[str, int]:
        """The index of every axis that plane `plane` (counted over the plane axes in the file's
        order) fixes: its position on each plane axis, and 0 on axes of length 1 (not Y, X)."""
        position = np.unravel_index(plane, self.plane_shape) if self.plane_axes else ()
        fixed = {a: 0 for a, n in zip(self.axes, self.shape, strict=True) if n == 1 and a not in IMAGE_AXES}
        return fixed | dict(zip(self.plane_axes, (int(i) for i in position), strict=True))

    def describe(self) -> str:
        channels = math.prod(self.length(a) for a in self.channel_axes)
        return f"axes {self.axes}, {self.planes} plane(s) of {channels} channel(s)"


def tiff_axes(tif: tifffile.TiffFile, path: Path, choice: AxisChoice = FILE_AXES) -> TiffAxes:
    """The first series' axes; a file of several images (series) or two channel axes is refused."""
    series = tif.series[0]
    choice.check(series.axes, path)
    layout = TiffAxes(series.axes, tuple(series.shape), choice)
    check_declared_pixels(path, layout.length("Y"), layout.length("X"))  # before any pixel is read
    if len(layout.channel_axes) > 1:
        raise UnetkitError(
            f"{path}: the TIFF has two channel axes, {' and '.join(layout.channel_axes)} (axes {layout.axes}); name "
            f"the one that holds planes with --plane-axis, or save it with one channel axis"
        )
    full_size = [page for page in tif.pages if not getattr(page, "is_reduced", False)]  # not thumbnails
    if len(full_size) > len(getattr(series, "pages", full_size)):
        raise UnetkitError(
            f"{path}: the TIFF holds pages outside its first image or stack (series of different shapes); unetkit "
            "reads one image or one stack per file: save each as its own file"
        )
    return layout


UNNAMED_PAGES = "QI"  # tifffile's letters for the pages of a TIFF saved without axis names


def saved_channels_last(width: int) -> str:
    """What a TIFF of pages a few pixels wide most likely is, and its fix (check's hint, and the
    readers' refusal of its hundreds of "channels")."""
    return (
        f"its planes are {width} pixel(s) wide: most likely a (Y, X, C) array saved without axis names, so save it "
        "with tifffile.imwrite(path, array, metadata={'axes': 'YXC'})"
    )


def unnamed_pages_hint(layout: TiffAxes, mask_planes: int = 1) -> str:
    """Where a plain TIFF's pages are most likely an array's channels (it was saved without axis
    names, so each page reads as a plane), what to do, as '; ...'; '' otherwise. Channels first
    (C, Y, X) give a few full-size pages, channels last (Y, X, C) hundreds of pages a few pixels
    wide: a red-team round's two-channel TIFFs read as 2 and 360 planes, no option named."""
    pages = [a for a in layout.plane_axes if a in UNNAMED_PAGES]
    if len(layout.plane_axes) != 1 or not pages or mask_planes != 1:
        return ""
    axis, width = pages[0], layout.length("X")
    if width <= MAX_CHANNELS < layout.length("Y"):
        return f"; {saved_channels_last(width)}"
    if layout.length(axis) <= MAX_CHANNELS:
        return (
            f"; if its {layout.length(axis)} planes are one image's channels (pages saved without axis names: "
            f"axes {layout.axes}), pass --channel-axis {axis}"
        )
    return ""


def refuse_unused_axes(choice: AxisChoice, images: Sequence[Path]) -> None:
    """--channel-axis and --plane-axis read TIFFs only: given for images none of which is a TIFF
    they would do nothing, so they are refused rather than dropped."""
    given = [f"{option} {axis}" for option, axis in (("--channel-axis", choice.channel), ("--plane-axis", choice.plane))
             if axis is not None]  # fmt: skip
    if given and images and not any(path.suffix.lower() in (".tif", ".tiff") for path in images):
        raise UnetkitError(
            f"{images[0].parent}: {' and '.join(given)} name a TIFF's axes, and none of the {len(images)} image(s) "
            f"is a TIFF (a PNG's or JPEG's channels are the file's own); leave {'them' if len(given) > 1 else 'it'} out"
        )


def stack_layout(path: Path, choice: AxisChoice = FILE_AXES) -> TiffAxes | None:
    """A stack's axes (headers only); None for 2-D images, other formats and files the readers
    will refuse later with their own message. Axes it cannot read as asked are refused here."""
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    try:
        layout = tiff_layout(path, choice)
    except (tifffile.TiffFileError, OSError, ValueError, IndexError):  # unreadable: the reader says so later
        return None
    return layout if layout.planes > 1 else None


def count_planes(path: Path, choice: AxisChoice = FILE_AXES) -> int:
    """How many 2-D images a file holds (stack_layout)."""
    layout = stack_layout(path, choice)
    return layout.planes if layout else 1


def tiff_layout(path: Path, choice: AxisChoice = FILE_AXES) -> TiffAxes:
    """A TIFF's axes (tiff_axes), from its headers."""
    with tifffile.TiffFile(path) as tif:
        return tiff_axes(tif, path, choice)


def describe_axes(path: Path, choice: AxisChoice = FILE_AXES) -> str:
    """How a TIFF's axes are read (TiffAxes.describe), for check; '' for other files."""
    return tiff_layout(path, choice).describe() if path.suffix.lower() in (".tif", ".tiff") else ""


def read_plane(tif: tifffile.TiffFile, layout: TiffAxes, plane: int) -> tuple[np.ndarray, str]:
    """Plane `plane` (counted over the plane axes in the file's order) as an array with the axes
    left: the channel axis, if any, and Y, X. Only that plane's pages are decoded where each page
    holds one 2-D image (ImageJ and OME files, plain stacks); other layouts are read whole."""
    series = tif.series[0]
    page_axes = series.keyframe.axes
    leading = layout.axes[: len(layout.axes) - len(page_axes)]
    pages_are_planes = set(layout.plane_axes) <= set(leading)  # not a plane axis inside a page (S as planes)
    if (
        pages_are_planes
        and layout.axes.endswith(page_axes)
        and math.prod(layout.shape[: len(leading)]) == len(series.pages)
    ):
        pages = np.arange(len(series.pages)).reshape(layout.shape[: len(leading)])
        chosen, axes = _take_plane(pages, leading, layout, plane)
        array = series.asarray(key=chosen.reshape(-1).tolist())  # one page comes back without the pages axis
        return array.reshape(chosen.shape + tuple(series.keyframe.shape)), axes + page_axes
    array, axes = _take_plane(series.asarray(), layout.axes, layout, plane)
    return array, axes


def _take_plane(array: np.ndarray, axes: str, layout: TiffAxes, plane: int) -> tuple[np.ndarray, str]:
    """Index the axes of `array` (whose axes are `axes`) that plane `plane` fixes (TiffAxes.fixed_at).
    Returns the rest and its axes."""
    fixed = layout.fixed_at(plane)
    index = tuple(fixed.get(a, slice(None)) for a in axes)
    kept = "".join(a for a, i in zip(axes, index, strict=True) if isinstance(i, slice))
    return array[index], kept
