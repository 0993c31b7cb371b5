"""The report's pictures, as PNG bytes to embed: the training curves, the confusion matrix, and
image | truth | prediction | error panels."""

from __future__ import annotations

import base64
import io

import numpy as np

from unetkit.inference.outputs import class_colour
from unetkit.train.run_files import curves_figure


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


def curves(history: list[dict]) -> str:
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


def colour(class_ids: np.ndarray) -> np.ndarray:
    """Class ids -> RGB in [0, 1], class 0 black."""
    palette = np.array([np.zeros(3)] + [class_colour(k) / 255 for k in range(1, 256)])
    return palette[np.clip(class_ids, 0, 255)]


def example(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray, title: str) -> str:
    """One row: the image, the true classes, the predicted classes, and the errors in red."""
    plt = _pyplot()
    gray = image.mean(axis=2) if image.ndim == 3 else image
    errors = np.repeat(gray[..., None], 3, axis=2) * 0.6
    wrong = (truth != prediction) & (truth != 255)
    errors[wrong] = [1.0, 0.1, 0.1]
    height, width = gray.shape
    figure, axes = plt.subplots(1, 4, figsize=(12, 12 * height / width / 4 + 0.5))
    panels = [("image", gray, "gray"), ("truth", colour(truth), None), ("prediction", colour(prediction), None)]
    panels.append((f"errors ({wrong.mean():.1%} of pixels)", errors, None))
    for axis, (name, array, cmap) in zip(axes, panels, strict=True):
        axis.imshow(array, cmap=cmap, interpolation="nearest")
        axis.set_title(name, fontsize=10)
        axis.set_axis_off()
    figure.suptitle(title, fontsize=11)
    return data_uri(figure, dpi=90)
