"""A run's wall-clock budget (`--time`): one object that the LR schedule and the stop rules read,
saved with the run (its seconds so far) and restored on resume, so a resumed run spends only
what is left.

    budget.start()                    when the first epoch starts (or the start is scored)
    budget.elapsed()                  seconds of training so far, across resumes
    budget.progress(step, per_epoch)  the schedule's clock: the fraction of the run done
    budget.no_room(epoch, seconds)    whether too little is left to start another epoch
    budget.spent(epoch)               whether the epoch under way should end at this batch

An epoch starts while at least a quarter of one's training is left, and ends at the batch where
what is left is what its validation and saving take (`reserve`, the recent epochs'): a timed run
trains until its time is up, and its rate anneals to ~0 then. (Before, no epoch started that
would pass the limit: a 10 s run of 7 s epochs stopped at 7 s with its rate at 66% of the peak,
a red-team finding.)"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from statistics import median

# An epoch starts only for at least this share of one's training: a shorter end would pay a whole
# validation for a few batches at a rate near 0.
LEAST_EPOCH_SHARE = 0.25
# An epoch's end is reckoned from this many of the last ones: one slow end is not the next one's.
ENDS_KEPT = 5


@dataclass
class TimeBudget:
    limit: float | None  # seconds (--time); None: no budget
    min_epochs: int | None = None  # epochs run even past the limit (--min-epochs)
    epochs: int | None = None  # --epochs, which may run out before the time does
    before: float = 0.0  # seconds spent by earlier processes of this run (resume)
    started: float | None = None  # perf_counter() when this process started training
    reserve: float = 0.0  # seconds an epoch's end takes (validation, saving): see `note_end`
    ends: list[float] = field(default_factory=list)  # this process's epochs' ends, in seconds

    def start(self) -> None:
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds of training so far, across resumes: what the budget counts."""
        running = time.perf_counter() - self.started if self.started is not None else 0.0
        return self.before + running

    def progress(self, step: int, steps_per_epoch: int) -> float:
        """Fraction of a timed run done: of the budget, or, when the minimum epochs would not fit in
        it (a slow or busy machine), of those epochs, whichever is behind. So the LR reaches ~0
        when both the time and the minimum epochs are spent."""
        assert self.limit is not None, "only a timed run's schedule reads the budget"
        # over the training time: the last epoch ends `reserve` before the limit, where poly's
        # rate was still 11% of the peak with the whole limit as its course (a red-team round)
        progress = self.elapsed() / max(self.limit - self.reserve, 0.5 * self.limit)
        if self.min_epochs:
            progress = min(progress, step / (self.min_epochs * steps_per_epoch))
        if self.epochs:  # the epochs may run out before the time does: anneal by then too
            progress = max(progress, step / (self.epochs * steps_per_epoch))
        return progress

    def note_end(self, seconds: float) -> None:
        """An epoch's end (validation, saving, files) took `seconds`: the reserve is the median of
        the last ENDS_KEPT ends. With the last end alone, one slow validation on a busy machine
        stopped a run an epoch early with its rate at 21% of the peak (a 3 s run in the suite)."""
        self.ends = [*self.ends[-(ENDS_KEPT - 1) :], seconds]
        self.reserve = median(self.ends)

    def left(self) -> float:
        """Seconds of the limit left for training, after the reserve for an epoch's end."""
        assert self.limit is not None
        return self.limit - self.elapsed() - self.reserve

    def no_room(self, epoch: int, training_seconds: float) -> bool:
        """Whether no epoch should start after epoch `epoch`, whose training took
        `training_seconds`: once the minimum epochs are done, what is left trains less than
        LEAST_EPOCH_SHARE of an epoch."""
        if self.limit is None or epoch < (self.min_epochs or 0):
            return False
        return self.left() < LEAST_EPOCH_SHARE * training_seconds

    def spent(self, epoch: int) -> bool:
        """Whether epoch `epoch`, under way, should end at this batch: what is left is its end's
        reserve, and the minimum epochs are done. Without it an epoch longer than the budget (a
        large folder, large whole images) ran to its end: 1,750 batches of 32 px patches against
        `--time 3s` now end after ~100."""
        return self.limit is not None and epoch > (self.min_epochs or 0) and self.left() <= 0

    def shown(self) -> str:
        """' (41/60s)' for the epoch line of a timed run, '' otherwise."""
        return f" ({self.elapsed():.0f}/{self.limit:g}s)" if self.limit else ""
