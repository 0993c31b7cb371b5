"""The run folder's human-readable files: metrics.csv, curves.png and (--tensorboard) TensorBoard's
log, written after each epoch by `EpochFiles` (config.json and config.toml: run_claim.py)."""

from __future__ import annotations

import csv
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unetkit.runtime.atomic import atomic_write

if TYPE_CHECKING:
    from unetkit.train.run_plan import RunPlan
    from unetkit.train.setup import ModelSetup
    from unetkit.train.tensorboard import TensorBoardLog

# Drawing curves.png takes ~0.5-1 s (matplotlib), 5-10% of a demo epoch: redrawn at most every
# CURVES_SECONDS while training, and always after the last epoch.
CURVES_SECONDS = 30.0


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


def run_summary(run: RunPlan, built: ModelSetup, start_epoch: int) -> list[str]:
    """The log's first lines of a run: the model, the data, the precision, where it resumes."""
    params = sum(p.numel() for p in built.model.parameters())
    kind = "binary, sigmoid" if bool(run.cfg.binary) else "softmax"
    # A few validation images are named: a split of four took the one large 16-bit image, 73% of the
    # pixels, unsaid (a red-team round).
    few = f" ({', '.join(pair.label for pair in run.val_pairs)})" if 0 < len(run.val_pairs) <= 3 else ""
    lines = [
        f"model {run.cfg.model} ({params / 1e6:.2f}M parameters) on {run.dist.device}; {len(run.train_pairs)} "
        f"training / {len(run.val_pairs)} validation images{few}; classes {run.data.mask_values.values} ({kind})",
        f"AMP: {built.amp.reason}; channels_last: {'on' if built.channels_last else 'off'}",
    ]
    return lines + ([resuming_line(run, start_epoch)] if start_epoch > 1 else [])


def resuming_line(run: RunPlan, start_epoch: int) -> str:
    """Where a run resumes, and whether its batches can be an uninterrupted run's: torchrun's
    processes share each epoch's batches out, so another number of them draws others."""
    line = f"resuming {run.cfg.resume} at epoch {start_epoch}"
    before = (run.resume_state or {}).get("world_size")  # missing in older checkpoints: not said
    if before is not None and before != run.dist.world_size:
        line += (
            f"; it trained in {before} process(es) and goes on in {run.dist.world_size}, so its batches "
            "differ from an uninterrupted run's"
        )
    return line


def epoch_line(row: EpochRow, label: str, budget: str, best: bool) -> str:
    """The log's line of an epoch (`budget`: the time used of --time, or empty); without validation
    images no validation columns (they read "nan" in every line)."""
    scores = (
        f"  val loss {row.val_loss:.4f}  val Dice {row.val_dice:.4f}  val IoU {row.val_iou:.4f}"
        if not math.isnan(row.val_loss)
        else ""
    )
    return (
        f"epoch {label:>3}  train loss {row.train_loss:.4f}{scores}  lr {row.lr:.2e}  {row.seconds:.1f}s"
        + budget
        + ("  *best" if best else "")
    )


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


class EpochFiles:
    """What the epochs leave in the run folder besides their checkpoints: metrics.csv after every
    epoch, curves.png now and then and at the end, and TensorBoard's log under --tensorboard.
    A context (TensorBoard's writer is closed on leaving); `enabled` False (ranks but the main one
    under torchrun) writes nothing."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool, mask_values: list[int]) -> None:
        self.out, self.enabled = out, enabled
        self.tensorboard: TensorBoardLog | None = None
        if enabled and tensorboard:
            from unetkit.train.tensorboard import TensorBoardLog  # tensorboard is an optional extra

            self.tensorboard = TensorBoardLog(out / "tensorboard", mask_values)
        self.drawn_at, self.drawn_epochs = -math.inf, 0  # when curves.png was last drawn, and how many epochs

    def __enter__(self) -> EpochFiles:
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()

    def epoch(self, history: list[EpochRow]) -> None:
        """After each epoch: metrics.csv, and curves.png if it is CURVES_SECONDS old."""
        if not self.enabled:
            return
        write_metrics_csv(self.out / "metrics.csv", history)
        if time.perf_counter() - self.drawn_at >= CURVES_SECONDS:
            self.draw(history)

    def finish(self, history: list[EpochRow]) -> None:
        """After the last epoch: curves.png with every epoch."""
        if self.enabled and len(history) != self.drawn_epochs:
            self.draw(history)

    def draw(self, history: list[EpochRow]) -> None:
        plot_curves(self.out / "curves.png", history)
        self.drawn_at, self.drawn_epochs = time.perf_counter(), len(history)
