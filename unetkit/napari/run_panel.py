"""What the Train and the Correct-and-retrain widgets share: a run of the run layer
(`run_training`, as `unetkit train`) in napari's background worker, told about through the same
two callbacks the command line uses: `on_progress` (each pass's patches or images: the bar the
terminal draws with tqdm, drawn here as a QProgressBar) and `on_epoch_end` (each epoch's row, here
a table row). Stop ends after the epoch under way, leaving last.pt to resume from; closing the viewer
(or the widget's dock) ends the run at its next batch, as Ctrl-C does, so no training thread
outlives its window. The training thread only appends to plain lists; a QTimer in the GUI thread
shows them."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QEvent, QTimer
from qtpy.QtWidgets import QLabel, QProgressBar, QPushButton, QTableWidget, QTableWidgetItem, QWidget

from unetkit.errors import UnetkitError
from unetkit.napari.predict_widget import alive, offer_model

if TYPE_CHECKING:
    from unetkit.train import TrainConfig
    from unetkit.train.run_files import EpochRow

COLUMNS = ("epoch", "train loss", "val Dice", "seconds", "time left")


class StopRequested(Exception):
    """Raised from the epoch callback when Stop was pressed: the run ends after that epoch; and
    for a run stopped at a batch because its widget was closed (the message: what last.pt holds)."""


class RunPanel(QWidget):
    """A dock widget that trains: subclasses lay out their own options and call `start(cfg)`;
    `trained(best)` is theirs to extend."""

    RESUMES = False  # whether the widget has a Resume button for a stopped run

    def __init__(self) -> None:
        super().__init__()
        self.worker: Any = None
        self.cfg: TrainConfig | None = None  # the run under way, or the last one
        self.rows: list[EpochRow] = []  # appended by the training thread, shown by the timer
        self.passed: tuple[int, int, str] = (0, 1, "")  # the training pass's (done, total, what), likewise
        self.log_lines: list[str] = []  # the run's log, written by the training thread
        self.stop_requested = threading.Event()
        # Set when Qt deletes the widget (its viewer closed): napari's close asks a worker to quit,
        # which a function worker never reads, so the training thread would run on unseen.
        self.closed = threading.Event()
        self.destroyed.connect(self.closed.set)
        self.last_model: str | None = None
        self.best_is = ""  # what best.pt holds where it is not the run's best epoch (RunResult.best_is)
        self.stopped = False  # the last run ended at Stop: it resumes
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.progress = QProgressBar()
        self.progress.setFormat("")  # until a pass starts
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.timer = QTimer(self)
        self.timer.timeout.connect(self._show_progress)
        self.timer.start(250)

    def event(self, event: QEvent) -> bool:
        """A dock closed with its 'x' (napari: remove_dock_widget) takes the widget out of the window
        and leaves it alive: its run trained on for its whole budget, then predicted from the
        closed widget (a red-team round). Its run now ends at the next batch, as on the viewer's close."""
        if event.type() == QEvent.Type.ParentChange and self.parent() is None and self.worker is not None:
            self.closed.set()
        return super().event(event)

    def busy_buttons(self) -> list[QPushButton]:
        """The buttons that start a run: off while one runs."""
        return []

    def config(self) -> TrainConfig:
        """The run the widget's form asks for (UnetkitError: what is missing, in one line)."""
        raise NotImplementedError

    def train(self) -> None:
        """The widget's train button: the run its form asks for, or one notification why not."""
        try:
            cfg = self.config()
        except UnetkitError as err:
            show_error(str(err))
            return
        self.start(cfg)

    def start(self, cfg: TrainConfig) -> None:
        """Train as `cfg` says in napari's worker thread."""
        self.cfg, self.stopped = cfg, False
        self.rows.clear()
        self.table.setRowCount(0)
        self.passed = (0, 1, "")
        self.stop_requested.clear()
        for button in self.busy_buttons():
            button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.status.setText(f"training into {self.run_folder()} ...")

        # connected before the worker starts (napari's `connect`): a run that fails at once
        # cannot finish before the connection and leave the buttons busy
        @thread_worker(connect={"returned": self._finished, "errored": self._failed, "finished": self._idle})
        def work():
            return self.run(cfg)

        self.worker = work()

    def run_folder(self) -> Path | None:
        """The folder of the run under way or the last one (a resumed run's is its checkpoint's)."""
        if self.cfg is None:
            return None
        return Path(self.cfg.out) if self.cfg.out else Path(str(self.cfg.resume)).parent

    def run(self, cfg: TrainConfig) -> Path:
        """In the training thread: the run layer, as `unetkit train` runs it."""
        from unetkit.runs import run_training

        def on_epoch_end(row: EpochRow) -> None:
            self.rows.append(row)
            if self.stop_requested.is_set():
                raise StopRequested()

        def on_progress(done: int, total: int, what: str) -> None:
            self.passed = (done, total, what)
            if self.closed.is_set():
                raise KeyboardInterrupt  # the trainer's Ctrl-C path: last.pt kept, the folder released

        self.log_lines.clear()
        self.best_is = ""
        try:
            result = run_training(cfg, log=self.log_lines.append, on_epoch_end=on_epoch_end, on_progress=on_progress)
        except KeyboardInterrupt as stopped:  # not a BaseException out of Qt's thread pool: that aborts
            raise StopRequested(str(stopped)) from None
        self.best_is = result.best_is
        return result.best_checkpoint

    @property
    def unchanged(self) -> bool:
        """Whether the last run's best.pt is the model it started from: no epoch beat it."""
        from unetkit.runs.from_model import AS_STARTED

        return self.best_is.startswith(AS_STARTED)

    def stop(self) -> None:
        self.stop_requested.set()
        self.status.setText("stopping after the epoch under way ...")

    def _show_progress(self) -> None:
        done, total, what = self.passed
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)
        self.progress.setFormat(f"{what}  %v / %m" if what else "")  # patches or images, as the pass counts them
        budget = self.cfg.time if self.cfg is not None and self.cfg.time else None
        while self.table.rowCount() < len(self.rows):
            index = self.table.rowCount()
            row = self.rows[index]
            used = sum(r.seconds for r in self.rows[: index + 1])
            left = f"{max(0.0, budget - used):.0f} s" if budget else ""
            dice = "" if math.isnan(row.val_dice) else f"{row.val_dice:.4f}"  # no validation images: no score
            values = (row.epoch, f"{row.train_loss:.4f}", dice, f"{row.seconds:.1f}", left)
            self.table.insertRow(index)
            for column, value in enumerate(values):
                self.table.setItem(index, column, QTableWidgetItem(str(value)))

    def trained(self, best: Path) -> None:
        """A run ended with `best`: it joins the Predict widgets' models."""
        self.last_model = str(best)
        ending = "".join(f"; {line}" for line in self.log_lines if line.startswith("from the model:"))  # what it kept
        if self.unchanged:  # said as "trained" before, with the shipped model unchanged (a red-team round)
            self.status.setText(f"done: {best} is the model you started from, unchanged{ending}")
            show_info(f"unetkit: {best} is the model you started from, unchanged: no epoch beat it; train longer "
                      "or on more images")  # fmt: skip
            return
        offer_model(str(best))
        self.status.setText(f"done: {best} (now among Predict's models){ending}")
        show_info(f"unetkit: trained {best}")

    def _finished(self, best: Path) -> None:
        if alive(self) and not self.closed.is_set():
            self.trained(best)
        else:  # its viewer closed as the run ended: the model still joins other viewers' Predict
            offer_model(str(best))

    def _failed(self, error: Exception) -> None:
        if not alive(self):  # closed with its viewer: nobody to tell
            return
        if isinstance(error, StopRequested):
            self.stopped = True
            last = self.run_folder() / "last.pt"
            button = "Resume, or " if self.RESUMES else ""  # the Correct widget has no Resume (a red-team round)
            self.status.setText(f"stopped after epoch {len(self.rows)}; {last} resumes it ({button}unetkit train "
                                f"--resume {last})")  # fmt: skip
            return
        show_error(str(error) if isinstance(error, UnetkitError) else f"{type(error).__name__}: {error}")
        self.status.setText("failed: see the notification")

    def _idle(self) -> None:
        if not alive(self):
            return
        self._show_progress()  # the last epochs, before the timer's next look
        for button in self.busy_buttons():
            button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.worker = None
