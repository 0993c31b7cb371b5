"""The report's pictures, as PNG bytes to embed: the training curves, the confusion matrix, and
image | truth | prediction | error panels; for object tasks image | true objects | predicted
objects | object errors, each object its own colour and the wrong ones outlined by kind."""

from __future__ import annotations

import base64
import io

import numpy as np

from unetkit.data.mask_values import IGNORE_ID
from unetkit.inference.outputs import class_colour
from unetkit.scoring.objects import ObjectErrors
from unetkit.train.run_files import EpochRow, curves_figure

# Outline colours of the object errors (RGB in [0, 1]), drawn in this order (later on top).
ERROR_COLOURS = {
    "false": ("false", (1.0, 0.85, 0.0)),
    "missed": ("missed", (1.0, 0.2, 0.2)),
    "pieces": ("split", (0.0, 0.9, 1.0)),
    "merges": ("merge", (1.0, 0.0, 1.0)),
}
PANEL_PIXELS = 270  # about a panel's width in the PNG (12 inches over 4 panels at 90 dpi)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def data_uri(figure, dpi: int = 80) -> str:
    """A matplotlib figure as a `data:image/png;base64,...` URI (and closed)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    _pyplot().close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def curves(history: list[EpochRow]) -> str:
    return data_uri(curves_figure(history))


def confusion(matrix: list[list[int]], values: list[int]) -> str:
    """Rows: true class, columns: predicted; each row as fractions of its pixels."""
    plt = _pyplot()
    counts = np.array(matrix, dtype=np.float64)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 1.6 + 0.45 * len(values)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    shown = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(values)), [str(v) for v in values], rotation=90 if len(values) > 6 else 0)
    axis.set_yticks(range(len(values)), [str(v) for v in values])
    axis.set_xlabel("predicted mask value")
    axis.set_ylabel("true mask value")
    if len(values) <= 6:
        for (row, col), share in np.ndenumerate(shares):
            axis.text(col, row, f"{share:.2f}", ha="center", va="center", color="white" if share > 0.5 else "black")
    figure.colorbar(shown, ax=axis, fraction=0.046, label="share of the true class's pixels")
    return data_uri(figure)


IGNORED_GRAY = 0.5  # the palette has no gray: ignored pixels (CamVid's void) took class 3's yellow, as road


def colour(class_ids: np.ndarray) -> np.ndarray:
    """Class ids -> RGB in [0, 1], class 0 black, ignored pixels (IGNORE_ID) gray."""
    palette = np.array([np.zeros(3)] + [class_colour(k) / 255 for k in range(1, 256)])
    palette[IGNORE_ID] = IGNORED_GRAY
    return palette[np.clip(class_ids, 0, 255)]


def class_legend(names: list[str], ignored: bool) -> list:
    """Legend handles: each class's colour in the truth and prediction panels, and the ignored gray."""
    from matplotlib.patches import Patch

    shown = colour(np.arange(len(names)))
    handles = [Patch(facecolor=rgb, edgecolor="0.7", label=name) for rgb, name in zip(shown, names, strict=True)]
    return handles + ([Patch(facecolor=(IGNORED_GRAY,) * 3, label="ignored")] if ignored else [])


def picture(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An (H, W, C) image as shown, with its colour map: three channels in colour (a street photo
    in gray hid the colours its classes differ by: a red-team round), others as their mean."""
    if image.ndim == 3 and image.shape[2] == 3:
        bright = float(np.percentile(image, 99.5))  # three dim stains (16-bit, a few % of the range) would be black
        return np.clip(image / bright if 0 < bright < 0.5 else image, 0, 1), None
    return (image.mean(axis=2) if image.ndim == 3 else image), "gray"


def example(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray, title: str, names: list[str]) -> str:
    """One row: the image, the true classes, the predicted classes, and the errors in red, as a
    share of the labelled pixels (the ignored ones, e.g. CamVid's void, are no error either way);
    `names` the classes' legend."""
    shown, cmap = picture(image)
    gray = shown.mean(axis=2) if shown.ndim == 3 else shown
    errors = np.repeat(gray[..., None], 3, axis=2) * 0.6
    labelled = truth != IGNORE_ID
    wrong = (truth != prediction) & labelled
    errors[wrong] = [1.0, 0.1, 0.1]
    panels = [("image", shown, cmap), ("truth", colour(truth), None), ("prediction", colour(prediction), None)]
    of = "pixels" if labelled.all() else "labelled pixels"
    panels.append((f"errors ({wrong.sum() / max(1, labelled.sum()):.1%} of {of})", errors, None))
    return row(panels, title, legend=class_legend(names, not labelled.all()))


def object_colours(labels: np.ndarray) -> np.ndarray:
    """Object ids -> RGB in [0, 1], 0 black. Hues a golden-ratio turn apart by id (brightness by
    another step), so objects numbered one after the other, as neighbours often are, differ most."""
    from matplotlib.colors import hsv_to_rgb

    ids = np.arange(int(labels.max()) + 1)
    hsv = np.stack([(ids * 0.618034) % 1, np.full(len(ids), 0.8), 0.65 + 0.35 * ((ids * 0.754878) % 1)], axis=1)
    palette = hsv_to_rgb(hsv)
    palette[0] = 0
    return palette[labels]


def object_example(image: np.ndarray, true: np.ndarray, pred: np.ndarray, errors: ObjectErrors, title: str) -> str:
    """One row for an object task: the image, the true and the predicted objects, and the image
    with the wrong objects outlined (merges and split pieces as predicted, misses as true), since
    a class picture hides two touching objects drawn as one."""
    shown, cmap = picture(image)
    gray = shown.mean(axis=2) if shown.ndim == 3 else shown
    outlined = np.repeat(gray[..., None], 3, axis=2) / max(float(gray.max()), 1e-6) * 0.6
    width = max(1, round(gray.shape[1] / PANEL_PIXELS))  # outlines stay visible when the PNG shrinks the image
    for kind, (_, rgb) in ERROR_COLOURS.items():
        outline(outlined, true if kind == "missed" else pred, getattr(errors, kind), rgb, width)
    panels = [("image", shown, cmap), (f"true objects ({len(np.unique(true[true > 0]))})", object_colours(true), None)]
    panels.append((f"predicted objects ({len(np.unique(pred[pred > 0]))})", object_colours(pred), None))
    panels.append((errors.counts(), outlined, None))
    return row(panels, title, legend=error_legend(errors))


def outline(picture: np.ndarray, labels: np.ndarray, ids: np.ndarray, rgb: tuple, width: int) -> None:
    """Paint the inner edge of each object `ids` of `labels` onto `picture`, `width` pixels thick
    (padded first, so an object cut by the image's edge is outlined along it too)."""
    from scipy import ndimage
    from skimage.segmentation import find_boundaries

    chosen = np.pad(np.where(np.isin(labels, ids), labels, 0), 1)
    edge = find_boundaries(chosen, connectivity=1, mode="inner")[1:-1, 1:-1]
    if width > 1:
        edge = ndimage.binary_dilation(edge, iterations=width - 1)
    picture[edge] = rgb


def error_legend(errors: ObjectErrors) -> list:
    """Legend handles: each outline colour, what it marks, and how many."""
    from matplotlib.patches import Patch

    count = {"pieces": len(errors.splits)}  # a split is counted once, outlined as its pieces
    return [
        Patch(facecolor=rgb, label=f"{name} ({count.get(kind, len(getattr(errors, kind)))})")
        for kind, (name, rgb) in reversed(ERROR_COLOURS.items())
    ]


def row(panels: list[tuple], title: str, legend: list | None = None) -> str:
    """Panels (name, array, colour map) side by side under `title`; `legend` under the last one."""
    plt = _pyplot()
    height, width = panels[0][1].shape[:2]
    figure, axes = plt.subplots(1, len(panels), figsize=(12, 12 * height / width / len(panels) + 0.5))
    for axis, (name, array, cmap) in zip(axes, panels, strict=True):
        axis.imshow(array, cmap=cmap, interpolation="nearest")
        axis.set_title(name, fontsize=10, parse_math=False)  # names are data: "$x$" is not math
        axis.set_axis_off()
    if legend:
        axes[-1].legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, 0), ncol=2, fontsize=8, frameon=False)
    figure.suptitle(title, fontsize=11, parse_math=False)
    return data_uri(figure, dpi=90)
