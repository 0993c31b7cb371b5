"""Ctrl-C during training, acted on where it is safe.

Python raises KeyboardInterrupt wherever the main thread happens to be. Inside a `__del__` or a
weakref callback (image files, DataLoader iterators and temporary files all run some) it is
printed as "Exception ignored" and lost, and the run simply went on. So the first Ctrl-C only
sets a flag that the training loop checks after every batch; a second Ctrl-C interrupts at once,
as Python's own handler does. SIGTERM (what `timeout`, Slurm, `docker stop` and torchrun's agent
send) is taken the same way, so the run says where its checkpoint is and how to resume: before,
it ended at once without a word (a red-team finding).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType, TracebackType


class InterruptFlag:
    """Context manager: while inside, SIGINT and SIGTERM set `requested` and `check()` raises for it."""

    def __init__(self, take_sigterm: bool = True) -> None:
        self.requested = False
        # Not under torchrun: its agent ends the other ranks with SIGTERM when one fails, and a rank
        # waiting in a collective would reach no batch's check before the agent's SIGKILL, 30 s on.
        self.take_sigterm = take_sigterm
        self._previous: dict[signal.Signals, object] = {}  # the handlers replaced, to put back

    def __enter__(self) -> InterruptFlag:
        self.requested = False
        if threading.current_thread() is not threading.main_thread():  # signals reach only it
            return self
        # SIG_IGN: started in the background by a non-interactive shell, Ctrl-C is not ours to take;
        # a SIGTERM handler set by the program that runs the training stays its own.
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
        if self.take_sigterm and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_sigint)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for number, previous in self._previous.items():
            default = signal.default_int_handler if number == signal.SIGINT else signal.SIG_DFL
            signal.signal(number, previous if previous is not None else default)
        self._previous.clear()
        if self.requested and kind is None:  # asked for after the last check: still honour it
            raise KeyboardInterrupt

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


def interrupted_message(last: Path, saved_epoch: int, in_epoch: bool = True) -> str:
    """What a stopped run says: which epoch `last` (last.pt) holds, whether an epoch under way
    (`in_epoch`) is lost, and how to go on. (A Ctrl-C after the last epoch's save said an epoch was
    lost where none was running: a red-team finding.)"""
    if not saved_epoch:
        return "stopped before the first epoch finished, no checkpoint was saved; start the run again"
    lost = " (the epoch in progress is lost)" if in_epoch else ""
    return f"{last} holds epoch {saved_epoch}{lost}; continue with: unetkit train --resume {last}"
