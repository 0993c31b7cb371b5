"""Progress of a long call, told through one callback, `progress(done, total, what)`: the
training passes (images), tiled and out-of-core prediction (tiles), predict's files and
evaluation's images call it as they go. The command line's bars are one listener of it
(TerminalBar, on tqdm); napari's progress bar is another (unetkit/napari). One mechanism, so a
bar in the terminal and a bar in the GUI count the same things."""

from __future__ import annotations

from collections.abc import Callable

from tqdm.auto import tqdm

Progress = Callable[[int, int, str], None]  # (done, total, what: "epoch 3/10 loss 0.1234", "tiles", ...)


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


def progress_to(listener: Progress | None, bar: bool, unit: str = "img") -> Progress | None:
    """Whom a long call tells its progress: the `listener` given (napari's), else the terminal's
    bar when `bar` (the --no-progress option's flag is off), else nobody."""
    if listener is not None:
        return listener
    return TerminalBar(unit) if bar else None


def tell(progress: Progress | None, done: int, total: int, what: str) -> None:
    """`progress(done, total, what)` when someone listens."""
    if progress is not None:
        progress(done, total, what)
