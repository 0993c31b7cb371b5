"""Plugins > unetkit > Train: train a U-Net, or fine-tune a model on corrected labels, without a
terminal. The run is the run layer's (`run_training`, as `unetkit train`): a folder of images and
masks (or the project folder that "Add to training set" fills from an Image layer and its
corrected Labels layer), a time budget, a model to start from (`--init-from`), a run folder.
It runs in a background thread; each epoch's row reaches the table through the run's
`on_epoch_end` callback; Stop ends after the epoch under way, leaving last.pt to resume from.
When a run ends, its best.pt joins the Predict widget's models, and Retrain predicts the chosen
image again with it: the correct-and-retrain loop."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from unetkit.errors import UnetkitError
from unetkit.napari.predict_widget import alive, offer_model, open_widgets
from unetkit.napari.training_set import add_pair
from unetkit.zoo import zoo_models

if TYPE_CHECKING:
    import napari

    from unetkit.train.run_files import EpochRow

FROM_SCRATCH = "(from scratch)"
COLUMNS = ("epoch", "train loss", "val Dice", "seconds", "time left")


class StopRequested(Exception):
    """Raised from the epoch callback when Stop was pressed: the run ends after that epoch."""


class TrainWidget(QWidget):
    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker: Any = None
        self.rows: list[EpochRow] = []  # appended by the training thread, shown by the timer
        self.stop_requested = threading.Event()
        self.last_model: str | None = None
        self.predict_after = False  # Retrain: predict the chosen image again when the run ends
        self.log_lines: list[str] = []  # the run's log, written by the training thread
        self.project = QLineEdit(str(Path.cwd() / "unetkit-training-set"))
        self.image_layer, self.labels_layer = QComboBox(), QComboBox()
        self.add_button = QPushButton("Add to training set")
        self.images, self.masks = QLineEdit(), QLineEdit()
        self.objects = QCheckBox("the masks are objects, one id each (--instance-masks)")
        self.objects.setChecked(True)  # what Predict's objects and their corrections are
        self.start = QComboBox()
        self.start.addItems([FROM_SCRATCH, *zoo_models()])
        self.start.setEditable(True)  # or a checkpoint's path
        self.budget = QSpinBox()
        self.budget.setRange(5, 24 * 3600)
        self.budget.setValue(60)
        self.budget.setSuffix(" s")
        self.out = QLineEdit()
        self.train_button, self.stop_button = QPushButton("Train"), QPushButton("Stop")
        self.retrain_button = QPushButton("Retrain and predict again")
        self.report_button = QPushButton("Open the run's report")
        self.report_button.setEnabled(False)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self._lay_out()
        self._connect()

    def _lay_out(self) -> None:
        form = QFormLayout()
        for label, field in (("project folder", self.project), ("image layer", self.image_layer),
                             ("corrected labels", self.labels_layer)):  # fmt: skip
            form.addRow(label, field)
        form.addRow(self.add_button)
        form.addRow(self.objects)
        for label, field in (("images folder", self.images), ("masks folder", self.masks), ("start from", self.start),
                             ("time budget", self.budget), ("run folder", self.out)):  # fmt: skip
            form.addRow(label, field)
        self.images.setPlaceholderText("default: the project's images/")
        self.masks.setPlaceholderText("default: the project's masks/")
        self.out.setPlaceholderText("default: the project's runs/<time>")
        buttons = QHBoxLayout()
        for button in (self.train_button, self.stop_button):
            buttons.addWidget(button)
        column = QVBoxLayout(self)
        column.addLayout(form)
        column.addLayout(buttons)
        column.addWidget(self.retrain_button)
        column.addWidget(self.report_button)
        column.addWidget(self.table)
        column.addWidget(self.status)
        self.stop_button.setEnabled(False)

    def _connect(self) -> None:
        self.add_button.clicked.connect(self.add_to_training_set)
        self.train_button.clicked.connect(lambda: self.train(predict_after=False))
        self.retrain_button.clicked.connect(lambda: self.train(predict_after=True))
        self.stop_button.clicked.connect(self.stop)
        self.report_button.clicked.connect(self.open_report)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._refresh_layers()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self._show_rows)
        self.timer.start(250)

    def _refresh_layers(self, _event: object = None) -> None:
        import napari.layers

        if not alive(self):  # the layer list of a viewer closing after its widget went
            return
        for combo, kind in ((self.image_layer, napari.layers.Image), (self.labels_layer, napari.layers.Labels)):
            chosen = combo.currentText()
            combo.clear()
            combo.addItems([layer.name for layer in self.viewer.layers if isinstance(layer, kind)])
            if chosen:
                combo.setCurrentText(chosen)

    def add_to_training_set(self) -> None:
        """Write the Image layer and its corrected Labels layer into the project folder."""
        image, labels = self.image_layer.currentText(), self.labels_layer.currentText()
        try:
            if not image or not labels:
                raise UnetkitError("choose an Image layer and the Labels layer that holds its corrected objects")
            project = Path(self.project.text()).expanduser()
            data = self.viewer.layers[image].data
            name = add_pair(project, data, self.viewer.layers[labels].data, image)
        except UnetkitError as err:
            show_error(str(err))
            return
        show_info(f"unetkit: added {name} to {project}")
        self.status.setText(f"training set: {len(list((project / 'images').glob('*.tif')))} image(s) in {project}")

    def train(self, predict_after: bool) -> None:
        """Train (and, for Retrain, predict the chosen image again with the new model)."""
        try:
            cfg = self.config()
        except UnetkitError as err:
            show_error(str(err))
            return
        self.rows.clear()
        self.table.setRowCount(0)
        self.stop_requested.clear()
        self.predict_after = predict_after

        @thread_worker(connect={"returned": self._finished, "errored": self._failed, "finished": self._idle})
        def work():
            return self.run(cfg)

        self.train_button.setEnabled(False)
        self.retrain_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.status.setText(f"training into {cfg.out} ...")
        self.worker = work()

    def config(self):
        from unetkit.train import TrainConfig

        project = Path(self.project.text()).expanduser()
        images = Path(self.images.text() or project / "images")
        masks = Path(self.masks.text() or project / "masks")
        for folder in (images, masks):
            if not folder.is_dir():
                raise UnetkitError(f"{folder}: no such folder; add corrected layers to the training set first")
        out = self.out.text() or str(project / "runs" / time.strftime("%Y%m%d-%H%M%S"))
        start = self.start.currentText().strip()
        init_from = None if start in ("", FROM_SCRATCH) else start
        instances = True if self.objects.isChecked() else None  # None: as the masks and the start model say
        return TrainConfig(images=str(images), masks=str(masks), out=out, time=float(self.budget.value()),
                           init_from=init_from, instance_masks=instances, progress=False)  # fmt: skip

    def run(self, cfg) -> Path:
        """In the training thread: the run layer, as `unetkit train` runs it."""
        from unetkit.runs import run_training

        def on_epoch_end(row: EpochRow) -> None:
            self.rows.append(row)
            if self.stop_requested.is_set():
                raise StopRequested(cfg.out)

        self.log_lines.clear()
        result = run_training(cfg, log=self.log_lines.append, on_epoch_end=on_epoch_end)
        return result.best_checkpoint

    def stop(self) -> None:
        self.stop_requested.set()
        self.status.setText("stopping after the epoch under way ...")

    def _show_rows(self) -> None:
        budget = float(self.budget.value())
        while self.table.rowCount() < len(self.rows):
            row = self.rows[self.table.rowCount()]
            used = sum(r.seconds for r in self.rows[: self.table.rowCount() + 1])
            values = (row.epoch, f"{row.train_loss:.4f}", f"{row.val_dice:.4f}", f"{row.seconds:.1f}",
                      f"{max(0.0, budget - used):.0f} s")  # fmt: skip
            index = self.table.rowCount()
            self.table.insertRow(index)
            for column, value in enumerate(values):
                self.table.setItem(index, column, QTableWidgetItem(str(value)))

    def _finished(self, best: Path) -> None:
        self.last_model = str(best)
        self.report_button.setEnabled((best.parent / "report.html").is_file())
        offer_model(str(best))
        self.start.insertItem(1, str(best))
        ending = [line for line in self.log_lines if line.startswith("from the model:")]  # which weights it kept
        self.status.setText(f"done: {best} (now among Predict's models and the start models)" + "".join(
            f"; {line}" for line in ending))  # fmt: skip
        show_info(f"unetkit: trained {best}")
        if self.predict_after:
            self.predict_again(str(best))

    def open_report(self) -> None:
        """The last run's report.html in the web browser."""
        import webbrowser

        report = Path(self.last_model).parent / "report.html" if self.last_model else None
        if report is None or not report.is_file():
            show_error("no report yet: train a run with validation images first")
            return
        webbrowser.open(report.resolve().as_uri())

    def predict_again(self, model: str) -> None:
        """Retrain's last step: Predict the chosen image layer with the new model."""
        widgets = open_widgets(self.viewer)
        if not widgets:
            show_info("unetkit: open Plugins > unetkit > Predict to predict with the new model")
            return
        widgets[0].model.setCurrentText(model)
        widgets[0].layer.setCurrentText(self.image_layer.currentText())
        widgets[0].predict()

    def _failed(self, error: Exception) -> None:
        if isinstance(error, StopRequested):
            last = Path(str(error)) / "last.pt"
            self.status.setText(f"stopped after epoch {len(self.rows)}; {last} resumes it (unetkit train --resume)")
            return
        show_error(str(error) if isinstance(error, UnetkitError) else f"{type(error).__name__}: {error}")
        self.status.setText("failed: see the notification")

    def _idle(self) -> None:
        self._show_rows()  # the last epochs, before the timer's next look
        self.train_button.setEnabled(True)
        self.retrain_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.worker = None
