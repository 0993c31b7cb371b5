"""The run folder's human-readable files: metrics.csv and curves.png (config.json is written with
unetkit.runtime.atomic.write_json)."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from unetkit.runtime.atomic import atomic_write


@dataclass(frozen=True)
class EpochRow:
    """One epoch: a row of metrics.csv, of a checkpoint's history (as a dict) and of the report."""

    epoch: int
    train_loss: float
    val_loss: float  # NaN (as the scores) without validation images
    val_dice: float
    val_iou: float
    lr: float  # at the epoch's start
    seconds: float  # training, validation and saving

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> EpochRow:
        """From a checkpoint's history or a metrics.csv row already read as numbers."""
        return cls(**{column: float(row[column]) for column in COLUMNS} | {"epoch": int(float(row["epoch"]))})


COLUMNS = tuple(field.name for field in fields(EpochRow))


def write_metrics_csv(path: Path, history: list[EpochRow]) -> None:
    def write(temporary: Path) -> None:
        with temporary.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            for row in history:
                writer.writerow(asdict(row))

    atomic_write(path, write)


def curves_figure(history: list[EpochRow]):
    """Loss, Dice/IoU and learning rate against epoch, three panels side by side (a matplotlib
    figure; the caller saves and closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row.epoch for row in history]
    figure, (loss_ax, score_ax, lr_ax) = plt.subplots(1, 3, figsize=(13, 3.6))
    loss_ax.plot(epochs, [r.train_loss for r in history], label="train")
    loss_ax.plot(epochs, [r.val_loss for r in history], label="validation")
    loss_ax.set_title("loss")
    score_ax.plot(epochs, [r.val_dice for r in history], label="Dice (F1)")
    score_ax.plot(epochs, [r.val_iou for r in history], label="IoU (Jaccard)")
    score_ax.set_title("validation scores")
    lr_ax.plot(epochs, [r.lr for r in history])
    lr_ax.set_title("learning rate")
    for axis in (loss_ax, score_ax, lr_ax):
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    loss_ax.legend()
    score_ax.legend()
    figure.tight_layout()
    return figure


def plot_curves(path: Path, history: list[EpochRow]) -> None:
    """curves.png of the run folder."""
    import matplotlib.pyplot as plt

    figure = curves_figure(history)
    try:
        atomic_write(path, lambda temporary: figure.savefig(temporary, dpi=90))
    finally:
        plt.close(figure)
