"""Progress of a long call, told through one callback, `progress(done, total, what)`: the
training passes (images), tiled and out-of-core prediction (tiles), predict's files and
evaluation's images call it as they go. The command line's bars are one listener of it
(TerminalBar, on tqdm; LogLines where the output goes to a file, which a redrawn bar fills with
carriage returns); napari's progress bar is another (unetkit/napari). One mechanism, so a bar in
the terminal and a bar in the GUI count the same things."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from tqdm.auto import tqdm

Progress = Callable[[int, int, str], None]  # (done, total, what: "epoch 3/10 loss 0.1234", "tiles", ...)
# A log file gets a line of a long pass this often: a 20-minute epoch says where it is thrice a
# minute, a short pass (the caller logs its own summary line) says nothing.
LOG_INTERVAL_SECONDS = 20.0


class TerminalBar:
    """The command line's listener: a tqdm bar for each pass (a new one when `done` starts over
    or `total` changes), gone when the pass is done (leave=False: the log lines stay readable)."""

    def __init__(self, unit: str = "img") -> None:
        self.unit = unit
        self.bar: tqdm | None = None

    def __call__(self, done: int, total: int, what: str) -> None:
        if self.bar is not None and (done < self.bar.n or total != self.bar.total):
            self.close()
        if self.bar is None:
            self.bar = tqdm(total=total, desc=what, unit=self.unit, leave=False, dynamic_ncols=True)
        self.bar.set_description(what, refresh=False)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class LogLines:
    """The listener where standard error is not a terminal (a log file, a pipe, a batch job): a
    plain line of the pass at most every LOG_INTERVAL_SECONDS, none at its end."""

    def __init__(self, unit: str = "img", stream=None) -> None:  # noqa: ANN001 (a text stream)
        self.unit = unit
        self.stream = stream
        self.started = self.said = 0.0
        self.last = (0, 0)  # the pass's (done, total) so far

    def __call__(self, done: int, total: int, what: str) -> None:
        now = time.monotonic()
        if done < self.last[0] or total != self.last[1]:  # a new pass
            self.started = self.said = now
        self.last = (done, total)
        if done < total and now - self.said >= LOG_INTERVAL_SECONDS:
            self.said = now
            rate = done / max(now - self.started, 1e-9)
            print(f"{what}: {done}/{total} {self.unit} ({rate:.1f} {self.unit}/s)", file=self.stream or sys.stderr)


def progress_to(listener: Progress | None, bar: bool, unit: str = "img") -> Progress | None:
    """Whom a long call tells its progress: the `listener` given (napari's), else when `bar` (the
    --no-progress option's flag is off) the terminal's bar, or log lines where standard error is not
    a terminal; else nobody."""
    if listener is not None:
        return listener
    if not bar:
        return None
    return TerminalBar(unit) if sys.stderr.isatty() else LogLines(unit)


def tell(progress: Progress | None, done: int, total: int, what: str) -> None:
    """`progress(done, total, what)` when someone listens."""
    if progress is not None:
        progress(done, total, what)
