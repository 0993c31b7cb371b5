"""`run_training`: what `unetkit train` and the demo run (the package docstring says the steps)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from unetkit.data import Pair
from unetkit.report import write_report
from unetkit.runs.object_rule import choose_object_rule
from unetkit.train import RunResult, TrainConfig, Trainer, train
from unetkit.train.loop import EpochCallback


def run_training(
    cfg: TrainConfig,
    train_pairs: Sequence[Pair] | None = None,
    val_pairs: Sequence[Pair] | None = None,
    log: Callable[[str], None] = print,
    on_epoch_end: EpochCallback | None = None,
    resume_overrides: Collection[str] | None = None,
) -> RunResult:
    """Train as `cfg` says, then choose the object rule on the validation images and write the
    report (unless cfg.report is off); returns where the checkpoints and logs are. On resume,
    `resume_overrides` names the options to take from `cfg` rather than from the checkpoint
    (default: those that differ from TrainConfig's defaults)."""
    return train(cfg, train_pairs, val_pairs, log, on_epoch_end, resume_overrides, then=after_training)


def after_training(trainer: Trainer) -> None:
    """The steps after the epochs, on the main process while the run folder is still locked: the
    object rule into best.pt, then report.html from the run's validation images."""
    best = trainer.out / "best.pt"
    if not (trainer.dist.is_main and trainer.run.val_pairs and best.is_file()):  # (a resume may not write one)
        return
    choose_object_rule(best, trainer.run.val_pairs, trainer.log)
    if trainer.cfg.report:
        write_report(trainer.out, log=trainer.log, pairs=trainer.run.val_pairs, source="the run's validation images")
