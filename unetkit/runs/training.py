"""`run_training`: what `unetkit train` and the demo run (the package docstring says the steps)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from unetkit.data import Pair
from unetkit.models.spec import ObjectRule
from unetkit.report import write_report
from unetkit.runs.from_model import settle_from_start
from unetkit.runs.object_rule import choose_object_rule
from unetkit.runtime.options import check_argument, known_keywords
from unetkit.runtime.ownership import mark_last_steps
from unetkit.runtime.progress import Progress
from unetkit.train import RunResult, TrainConfig, Trainer
from unetkit.train.loop import EpochCallback
from unetkit.train.run_claim import claimed_run


@known_keywords
def run_training(
    cfg: TrainConfig,
    train_pairs: Sequence[Pair] | None = None,
    val_pairs: Sequence[Pair] | None = None,
    log: Callable[[str], None] = print,
    on_epoch_end: EpochCallback | None = None,
    resume_overrides: Collection[str] | None = None,
    on_progress: Progress | None = None,
) -> RunResult:
    """Train as `cfg` says, then choose the object rule on the validation images and write the
    report (unless cfg.report is off); returns where the checkpoints and logs are. `on_epoch_end`
    hears each epoch's row and `on_progress` each pass's images (done, total, what: the
    terminal's bar by default, napari's in the plugin). On resume,
    `resume_overrides` names the options to take from `cfg` rather than from the checkpoint
    (default: those that differ from TrainConfig's defaults)."""
    check_argument(cfg, TrainConfig, "run_training(cfg)", "run_training(TrainConfig(images=..., masks=..., time=600))")
    for name, pairs in (("train_pairs", train_pairs), ("val_pairs", val_pairs)):
        check_argument(pairs, (list, tuple, type(None)), f"run_training({name}=)", "a list of unetkit.data.Pair")
        for index, pair in enumerate(pairs or []):  # a path in the list was an AttributeError deep inside
            check_argument(pair, Pair, f"run_training({name}[{index}])", "unetkit.data.find_pairs(images, masks)")
    # plan -> Trainer(plan) -> fit -> the steps after training, in a run folder held throughout
    with claimed_run(cfg, train_pairs, val_pairs, log, resume_overrides) as trainer:
        result = trainer.finish_epochs_done() if trainer.only_last_steps else trainer.fit(on_epoch_end, on_progress)
        try:
            result.best_is = after_training(trainer) or ""
        except KeyboardInterrupt:
            raise KeyboardInterrupt(
                f"{trainer.out / 'last.pt'} holds all {trainer.saved_epoch} epochs, not yet the steps after them "
                f"(object rule, report); do them with: unetkit train --resume {trainer.out / 'last.pt'}"
            ) from None
        if trainer.dist.is_main:
            mark_last_steps(trainer.out, "done")  # a --resume of it is now refused: nothing is left
    return result


def after_training(trainer: Trainer) -> str | None:
    """The steps after the epochs, on the main process while the run folder is still locked: the
    object rule into best.pt, then report.html from the run's validation images. Returns what
    best.pt holds where it is no longer the run's best epoch (settle_from_start), else None."""
    best = trainer.out / "best.pt"
    if not (trainer.dist.is_main and trainer.run.val_pairs and best.is_file()):  # (a resume may not write one)
        return None
    # An --init-from model's own rule (on resume, from start.pt: its --init-from is not read again).
    rule = (trainer.run.init_state or trainer.start_state or {}).get("object_rule")
    start_rule = ObjectRule.from_state(rule) if rule else None
    settled = None
    if trainer.start_state is not None:  # a run from a model that scored its start
        settled = settle_from_start(best, trainer.start_state, start_rule, trainer.run.val_pairs, trainer.log)
    choose_object_rule(best, trainer.run.val_pairs, trainer.log, start_rule)
    if trainer.cfg.report:
        write_report(trainer.out, log=trainer.log, pairs=trainer.run.val_pairs, source="the run's validation images",
                     finished=True)  # fmt: skip
    return settled
