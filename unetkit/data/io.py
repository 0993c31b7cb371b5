"""Reading image and mask files into numpy arrays, whatever their format or bit depth."""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, ImageOps, UnidentifiedImageError

from unetkit.data.limits import MAX_CHANNELS, max_pixels, too_many_pixels
from unetkit.data.tiff_axes import FILE_AXES, IMAGE_AXES, AxisChoice, read_plane, saved_channels_last, tiff_axes
from unetkit.errors import UnetkitError

# GIF for masks above all: Carvana's are "<stem>_mask.gif" (single-frame, palette: read as PNG's).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif")


# Pillow modes whose last band is alpha: the file says so, and only then is a channel dropped.
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")


def _read_raw(
    path: Path, plane: int | None = None, axes: AxisChoice = FILE_AXES
) -> tuple[np.ndarray, str | None, bool]:
    """Return the pixel array, for Pillow files the image mode ("P" matters for masks), and
    whether the file marks the last channel as alpha."""
    if not path.is_file():
        raise UnetkitError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise UnetkitError(f"{path}: the file is empty (0 bytes); replace it with the real image or remove it")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            array, alpha = _read_tiff(path, plane, axes)
            return array, None, alpha
        # Pillow checks a header's size as it opens the file, against its MAX_IMAGE_PIXELS: unetkit's
        # one limit (data/limits.py). It only warns between that and twice that; refuse both alike.
        Image.MAX_IMAGE_PIXELS = max_pixels()
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                frames = getattr(opened, "n_frames", 1)
                if frames > 1:
                    raise UnetkitError(
                        f"{path}: an animation of {frames} frames; unetkit reads one 2-D image per file: save "
                        "each frame as its own file"
                    )
                # A camera's rotation flag, applied as every viewer does; the mask was drawn on
                # the image as shown, and the predicted mask comes back that way too.
                img = ImageOps.exif_transpose(opened)
                mode = img.mode
                if mode in ("I;16", "I;16B", "I;16L"):
                    return np.asarray(img, dtype=np.uint16), mode, False
                if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                    img = img.convert("RGB")
                return np.asarray(img), mode, mode in ALPHA_MODES
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        declared = re.search(r"\((\d+) pixels\)", str(err))
        raise too_many_pixels(path, int(declared.group(1)) if declared else max_pixels() + 1) from None
    except (UnidentifiedImageError, OSError, ValueError, tifffile.TiffFileError) as err:
        raise unreadable(path, err) from None


def unreadable(path: Path, err: BaseException) -> UnetkitError:
    """The one line for a file that is not the image it claims to be (truncated, lying header), for
    every reader, whole or a band at a time."""
    reason = (str(err).strip().splitlines() or [""])[0][:80]
    return UnetkitError(
        f"{path}: cannot read this file as an image ({err.__class__.__name__}{f': {reason}' if reason else ''}); "
        "replace it with a valid PNG/JPEG/BMP/TIFF or remove it"
    )


def _read_tiff(path: Path, plane: int | None, choice: AxisChoice) -> tuple[np.ndarray, bool]:
    """One 2-D image from a TIFF, as (H, W) or (H, W, C): colour samples (S) or up to MAX_CHANNELS
    channels (C, as ImageJ and OME store them) become the last axis; and whether the last is marked
    alpha. A stack (Z, T or pages: tiff_axes.py) gives its plane `plane`; without one, a stack is
    refused, since the caller reads 2-D images only."""
    with tifffile.TiffFile(path) as tif:
        layout = tiff_axes(tif, path, choice)
        if plane is None and layout.planes > 1:
            raise UnetkitError(
                f"{path}: a stack of {layout.planes} planes ({layout.describe()}), where one 2-D image is read here "
                "(check, train, evaluate and predict read stacks plane by plane); save one plane as its own file"
            )
        if plane is not None and not 0 <= plane < layout.planes:
            raise UnetkitError(
                f"{path}: has {layout.planes} plane(s), no plane {plane}; the file changed since it was listed"
            )
        array, axes = read_plane(tif, layout, plane or 0)
        alpha = tiff_marks_alpha(tif)
    colour = [axis for axis in axes if axis not in IMAGE_AXES]  # what read_plane left: the channel axis
    if colour:
        array = np.moveaxis(array, axes.index(colour[0]), -1)
    return np.asarray(array), alpha


@functools.lru_cache(maxsize=4096)  # asked once a band out of core: the header is read once a file
def is_photometric_rgb(path: Path) -> bool:
    """Whether the file's channels are colour (a photograph: PNG/JPEG RGB, palette, a TIFF with
    photometric RGB or YCbCr), not separate channels (a TIFF's C axis, as ImageJ and OME save
    fluorescence stains). Read from the header only."""
    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        return True  # Pillow's three-band modes are all colour
    try:
        with tifffile.TiffFile(path) as tif:
            return tif.pages[0].photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR) and (
                "C" not in tif.series[0].axes
            )
    except (tifffile.TiffFileError, OSError, ValueError, IndexError):
        return False


def tiff_marks_alpha(tif: tifffile.TiffFile) -> bool:
    """Whether the first series' last sample is alpha: one extra sample, marked associated or
    unassociated alpha. ImageJ and OME channels (axis C) are never alpha."""
    extrasamples = tuple(getattr(tif.pages[0], "extrasamples", ()) or ())
    return "S" in tif.series[0].axes and len(extrasamples) == 1 and extrasamples[0] in (1, 2)


def data_channels(array: np.ndarray, alpha: bool, path: Path) -> np.ndarray:
    """The channels of an (H, W, C) image that are data: alpha is dropped only where the file marks
    it (PNG LA/RGBA, TIFF extra sample), every other channel is kept (a fluorescence image's second
    channel is data, not alpha), up to MAX_CHANNELS."""
    if alpha:
        array = array[:, :, :-1]
    if array.shape[2] > MAX_CHANNELS:
        fix = "save the channels to segment on as their own image"
        if array.shape[1] <= MAX_CHANNELS:  # a (Y, X, C) array saved as pages, read with --channel-axis Q
            fix = saved_channels_last(array.shape[1])
        raise UnetkitError(
            f"{path}: the image has {array.shape[2]} channels, more than the {MAX_CHANNELS} unetkit takes; {fix}"
        )
    return array


def to_unit_float(array: np.ndarray, maximum: float, path: Path, first_row: int = 0) -> np.ndarray:
    """(h, W, C) pixels as float32 in [0, 1]: divided by `maximum` (pixel_maximum's value) in
    one pass, since a 4096^2 RGB image is 200 MB per copy (the same float32 values as a cast then a
    division in place, 4x sooner: 76 -> 18 ms a 768 x 8192 RGB band); NaN or infinite pixels
    refused with the row (`first_row`: where this band starts in the image)."""
    image = np.divide(array, np.float32(maximum), dtype=np.float32)
    if not np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_:
        refuse_non_finite(image, path, first_row)
    return image


def refuse_non_finite(image: np.ndarray, path: Path | str, first_row: int = 0) -> None:
    """NaN or infinite pixels refused in one line, with the first one's row."""
    bad = ~np.isfinite(image)
    if bad.any():
        raise UnetkitError(
            f"{path}: {int(bad.sum())} pixel(s) are NaN or infinite (e.g. at row "
            f"{first_row + int(np.argwhere(bad)[0][0])}); fill them (e.g. with 0 or the image's mean) or remove "
            "the image"
        )


def pixel_maximum(dtype: np.dtype, largest: Callable[[], int | None]) -> float:
    """The value that maps to 1.0: integer_range for integers, 1 for floats and booleans."""
    return integer_range(dtype, largest) if np.issubdtype(dtype, np.integer) else 1.0


@dataclass(frozen=True)
class PixelRule:
    """How a file's raw pixels become the model's input, decided once per file and applied to the
    whole image (read_image) or a band of rows (out of core) alike, so the two never disagree."""

    maximum: float  # the value that maps to 1.0 (pixel_maximum)
    alpha: bool  # the file marks its last channel as alpha

    def apply(self, array: np.ndarray, path: Path, first_row: int = 0) -> np.ndarray:
        """(h, W[, C]) raw pixels -> float32 (h, W, C) in [0, 1], data channels only."""
        array = array[:, :, None] if array.ndim == 2 else array
        return to_unit_float(data_channels(array, self.alpha, path), self.maximum, path, first_row)


def _channels_last(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim == 3:  # channels last already: Pillow's bands, or _read_tiff's S or C axis moved there
        return array
    raise UnetkitError(
        f"{path}: expected a 2-D image (height x width [x channels]), got shape {array.shape}; "
        "save each slice or frame as its own file"
    )


@dataclass(frozen=True)
class ImageRef:
    """One 2-D image in a file: the file's image, or plane `plane` of a stack (tiff_axes.py)."""

    path: Path
    plane: int | None = None
    axes: AxisChoice = FILE_AXES

    def read(self) -> np.ndarray:
        return read_image(self.path, self.plane, self.axes)


def read_image(path: str | Path, plane: int | None = None, axes: AxisChoice = FILE_AXES) -> np.ndarray:
    """Read an image as float32 (H, W, C) in [0, 1], C its data channels (1 to MAX_CHANNELS);
    integer types are scaled by their range. Alpha is dropped where the file marks it
    (data_channels), palette images become RGB. The out-of-core reader (inference/large_tiff.py)
    uses the same three steps a band at a time.
    """
    return read_image_scaled(path, plane, axes)[0]


def read_image_scaled(
    path: str | Path, plane: int | None = None, axes: AxisChoice = FILE_AXES
) -> tuple[np.ndarray, float]:
    """read_image's image and the raw value it maps to 1.0 (255 for 8-bit, 65535 for 16-bit), for
    what has to say the file's own units (the bioimage.io package's raw test input)."""
    path = Path(path)
    array, mode, alpha = _read_raw(path, plane, axes)
    if mode == "P":
        with Image.open(path) as img:
            array, alpha = np.asarray(ImageOps.exif_transpose(img).convert("RGB")), False
    array = _channels_last(array, path)
    maximum = pixel_maximum(array.dtype, lambda: int(array.max()) if array.size else None)
    return PixelRule(maximum, alpha).apply(array, path), maximum


def integer_range(dtype: np.dtype, largest: Callable[[], int | None]) -> float:
    """The value of an integer image that maps to 1.0: the type's maximum for 8- and 16-bit
    images; for wider types (int32 TIFFs often hold 12- or 16-bit data) 65535 when the largest
    value (asked only for them; None: no pixels) fits in 16 bits, so the data is not squeezed
    into [0, 2^-15]."""
    if np.dtype(dtype).itemsize <= 2:
        return float(np.iinfo(dtype).max)
    biggest = largest()
    return 65535.0 if biggest is not None and biggest <= 65535 else float(np.iinfo(dtype).max)


def mixed_scales(scales: dict[float, tuple[int, str]]) -> tuple[str, str] | None:
    """(problem, fix) for a set whose images map different raw values to 1.0 (read_image_scaled: 8-bit
    and 16-bit files mixed), given {raw value of 1.0: (images, the first one's name)}; None where
    all agree. Each file is scaled by its own type, so one scene saved at both depths reads alike,
    but a 16-bit file of 12-bit camera data reads 16x darker than the same data saved as 8-bit."""
    if len(scales) < 2:
        return None
    kinds = {255.0: "8-bit", 65535.0: "16-bit", 1.0: "float"}
    shown = ", ".join(
        f"{count} {kinds.get(top, f'scaled by {top:g}')} (e.g. {name})" for top, (count, name) in sorted(scales.items())
    )
    return (
        f"the images mix bit depths: {shown}; each is scaled by its own type's maximum, so 12-bit data in a "
        "16-bit file reads 16x darker than an 8-bit image of it",
        "save them at one depth, or pass --normalize image to scale each image by its own brightness",
    )


def read_mask(path: str | Path, plane: int | None = None, axes: AxisChoice = FILE_AXES) -> np.ndarray:
    """Read a mask as a 2-D integer array of the values stored in the file.

    Palette PNGs give their palette indices (the VOC convention). An RGB(A) mask is accepted only
    if its colour channels are equal, i.e. a gray mask saved as colour.
    """
    path = Path(path)
    array, _mode, alpha = _read_raw(path, plane, axes.for_masks)
    array = _channels_last(array, path)
    if alpha:
        array = array[:, :, :-1]
    if array.shape[2] > 1:
        if not all(np.array_equal(array[:, :, 0], array[:, :, c]) for c in range(1, array.shape[2])):
            raise UnetkitError(_colour_mask_message(path, array))
    mask = array[:, :, 0]
    if mask.dtype == np.bool_:
        return mask  # kept 1-bit, so a mix of 1-bit and 8-bit masks is caught, not read as 0/1/255
    if not np.issubdtype(mask.dtype, np.integer):
        if not np.all(np.isfinite(mask)) or not np.all(mask == np.round(mask)):
            raise UnetkitError(f"{path}: mask holds non-integer values; save masks with integer class values")
        return mask.astype(np.int64)
    return mask


def _colour_mask_message(path: Path, array: np.ndarray) -> str:
    """A colour-coded mask (a few flat colours, one per class) needs a different fix than a photo."""
    colours = np.unique(array.reshape(-1, array.shape[2])[:: max(1, array.shape[0] * array.shape[1] // 65536)], axis=0)
    if len(colours) <= 32:
        shown = ", ".join(str(tuple(int(v) for v in c)) for c in colours[:3])
        return (
            f"{path}: mask is colour-coded ({len(colours)} colours, e.g. {shown}); save it as a "
            "single-channel or palette PNG with one value per class (e.g. 0, 1, 2)"
        )
    return (
        f"{path}: mask has {array.shape[2]} channels with different values; "
        "save masks as single-channel images whose pixel values are the class ids"
    )


# An image must be at least this many pixels on each side to be learnt from or scored: a 3x3
# convolution sees no shape in a 1x1 or 3x3 "image" (an icon, a placeholder, a misread plane), and
# 1x1 images "trained" to val Dice 1.0, then failed in the object rule's score (a red-team finding).
MIN_IMAGE_SIDE = 8


def read_pair(
    image_path: str | Path, mask_path: str | Path, plane: int | None = None, axes: AxisChoice = FILE_AXES
) -> tuple[np.ndarray, np.ndarray]:
    """An image and its mask (plane `plane` of both, for stacks), read and checked (check_pair_shapes)."""
    return read_pair_scaled(image_path, mask_path, plane, axes)[:2]


def read_pair_scaled(
    image_path: str | Path, mask_path: str | Path, plane: int | None = None, axes: AxisChoice = FILE_AXES
) -> tuple[np.ndarray, np.ndarray, float]:
    """read_pair's image and mask, and the image's raw value of 1.0 (read_image_scaled)."""
    image, maximum = read_image_scaled(image_path, plane, axes)
    mask = read_mask(mask_path, plane, axes)
    check_pair_shapes(Path(image_path), Path(mask_path), image.shape[:2], mask.shape)
    return image, mask, maximum


def exif_turned(path: Path) -> bool:
    """Whether an image file's EXIF orientation turns it by a quarter (5-8), as read_image applies."""
    try:
        with Image.open(path) as opened:
            return opened.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except (OSError, ValueError):
        return False


def check_pair_shapes(image_path: Path, mask_path: Path, image_shape: tuple, mask_shape: tuple) -> None:
    """Refuse a mask of another size than its image, and an image below MIN_IMAGE_SIDE."""
    if image_shape != mask_shape:
        hint = ""
        if image_shape == mask_shape[::-1]:  # only a file that says so is turned (a red-team round)
            hint = (
                " (the image is turned by its EXIF orientation, applied as viewers do: turn the mask the same way)"
                if exif_turned(image_path)
                else " (the mask is the image's size turned: its rows and columns swapped)"
            )
        raise UnetkitError(
            f"{mask_path}: mask is {mask_shape[1]}x{mask_shape[0]} but its image {image_path.name} "
            f"is {image_shape[1]}x{image_shape[0]}{hint}; masks must be the same size as their images"
        )
    if min(image_shape) < MIN_IMAGE_SIDE:
        raise UnetkitError(
            f"{image_path}: the image is {image_shape[1]}x{image_shape[0]} pixels, too small to segment (at least "
            f"{MIN_IMAGE_SIDE} on each side); remove it and its mask, or check that the folder holds the images"
        )
