"""The run folder's human-readable files: metrics.csv and curves.png (config.json is written with
unetkit.core.atomic.write_json)."""

from __future__ import annotations

import csv
from pathlib import Path

from unetkit.core.atomic import atomic_write

COLUMNS = ("epoch", "train_loss", "val_loss", "val_dice", "val_iou", "lr", "seconds")


def write_metrics_csv(path: Path, history: list[dict[str, float]]) -> None:
    def write(temporary: Path) -> None:
        with temporary.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            for row in history:
                writer.writerow({key: row[key] for key in COLUMNS})

    atomic_write(path, write)


def curves_figure(history: list[dict[str, float]]):
    """Loss, Dice/IoU and learning rate against epoch, three panels side by side (a matplotlib
    figure; the caller saves and closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    figure, (loss_ax, score_ax, lr_ax) = plt.subplots(1, 3, figsize=(13, 3.6))
    loss_ax.plot(epochs, [r["train_loss"] for r in history], label="train")
    loss_ax.plot(epochs, [r["val_loss"] for r in history], label="validation")
    loss_ax.set_title("loss")
    score_ax.plot(epochs, [r["val_dice"] for r in history], label="Dice (F1)")
    score_ax.plot(epochs, [r["val_iou"] for r in history], label="IoU (Jaccard)")
    score_ax.set_title("validation scores")
    lr_ax.plot(epochs, [r["lr"] for r in history])
    lr_ax.set_title("learning rate")
    for axis in (loss_ax, score_ax, lr_ax):
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    loss_ax.legend()
    score_ax.legend()
    figure.tight_layout()
    return figure


def plot_curves(path: Path, history: list[dict[str, float]]) -> None:
    """curves.png of the run folder."""
    import matplotlib.pyplot as plt

    figure = curves_figure(history)
    try:
        atomic_write(path, lambda temporary: figure.savefig(temporary, dpi=90))
    finally:
        plt.close(figure)
