"""Plugins > unetkit > Train: train a U-Net without a terminal, from the open layers (each Labels
layer with the Image layer it annotates) or from folders of images and masks; a time budget, a
model to start from (`--init-from`: a shipped model or a checkpoint), a run folder. Train, Stop
(after the epoch under way) and Resume (the stopped run, where it stopped, with the budget it
had left); each epoch is a row of the table, each pass the progress bar (run_panel.py). The run
is the run layer's, as `unetkit train`; pairs from layers are written first, as files unetkit
owns, into a folder beside the run (`<run>-pairs`), since a run and its report name its images.
When a run ends its best.pt joins Predict's models and its report is a click away."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from unetkit.errors import UnetkitError
from unetkit.napari.predict_widget import alive, full_resolution, layer_pixels
from unetkit.napari.run_panel import RunPanel
from unetkit.napari.training_set import add_pair
from unetkit.zoo import zoo_models

if TYPE_CHECKING:
    import napari

    from unetkit.train import TrainConfig

FROM_SCRATCH = "(from scratch)"
FROM_LAYERS, FROM_FOLDERS = "the open layers", "folders"
PAIR_ARROW = "  <-  "  # a pair's row: "<image layer>  <-  <labels layer>"


def layer_pairs(viewer: napari.Viewer) -> list[tuple[str, str]]:
    """(image layer, labels layer) for each Labels layer that annotates an Image layer of its
    size: the image whose name begins the labels' name ("cells" for "cells objects"), else the
    only image of that size."""
    import napari.layers

    images = [layer for layer in viewer.layers if isinstance(layer, napari.layers.Image)]
    pairs = []
    for labels in (layer for layer in viewer.layers if isinstance(layer, napari.layers.Labels)):
        sized = [image for image in images if image_shape(image) == image_shape(labels)]
        named = [image for image in sized if labels.name.startswith(image.name)]
        chosen = max(named, key=lambda image: len(image.name)) if named else sized[0] if len(sized) == 1 else None
        if chosen is not None:
            pairs.append((chosen.name, labels.name))
    return pairs


def image_shape(layer: napari.layers.Image | napari.layers.Labels) -> tuple[int, ...]:
    """The layer's pixel shape, colour left out; a pyramid's at full resolution."""
    shape = full_resolution(layer).shape
    return tuple(shape[:-1] if getattr(layer, "rgb", False) else shape)


# What the labels are: recognised by the widget (`unetkit train` needs hundreds of ids to be sure
# they are objects, which a few painted images lack: 4 nuclei images trained as 29 classes), or said.
LABELS_RECOGNISED = "recognised from the labels"
LABELS_OBJECTS = "objects, one id each (--instance-masks)"
LABELS_CLASSES = "classes, one value each (--no-instance-masks)"
LABEL_KINDS = (LABELS_RECOGNISED, LABELS_OBJECTS, LABELS_CLASSES)
RECOGNITION_SAMPLE = 32  # masks read to recognise objects (the fingerprint's GEOMETRY_SAMPLE)


def labels_are_objects(choice: str, images: Path, masks: Path) -> bool:
    """Whether the run trains the masks as objects: as chosen, or where recognised, when every id
    is one region on a background that dominates (data.fingerprint.looks_like_instances's facts that
    hold for any number of objects); said in a notification either way. A forced choice of objects
    trained two painted classes, 1 and 2 over the whole image, as four instance classes, unsaid
    (a red-team finding)."""
    if choice != LABELS_RECOGNISED:
        return choice == LABELS_OBJECTS
    from unetkit.data import find_pairs
    from unetkit.data.fingerprint import looks_like_instances, mask_facts
    from unetkit.data.io import read_mask
    from unetkit.data.pairing import expand_planes

    # Read in the GUI thread before the run starts: an evenly spaced sample of the masks, as the
    # fingerprint samples what it measures, so a folder of hundreds does not freeze the viewer.
    pairs = expand_planes(find_pairs(images, masks))
    sample = pairs[:: max(1, len(pairs) // RECOGNITION_SAMPLE)][:RECOGNITION_SAMPLE]
    objects = looks_like_instances([mask_facts(read_mask(p.mask, p.plane, p.axes)) for p in sample], fits=True)
    kind = "objects (each id one region on a background)" if objects else "classes (one value each)"
    show_info(f"unetkit: the labels train as {kind}; 'the labels are' says otherwise")
    return objects


def chosen_folder(field: QLineEdit, what: str, fix: str = "choose one") -> Path:
    """The folder a field names; none, or not a folder, is one line."""
    text = field.text().strip()
    if not text or not Path(text).expanduser().is_dir():
        raise UnetkitError(f"{text or '(none)'}: no {what} folder; {fix}")
    return Path(text).expanduser()


class TrainWidget(RunPanel):
    RESUMES = True

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.source = QComboBox()
        self.source.addItems([FROM_LAYERS, FROM_FOLDERS])
        self.pairs = QListWidget()
        self.pairs.setMaximumHeight(120)
        self.images, self.masks = QLineEdit(), QLineEdit()
        self.val_images, self.val_masks = QLineEdit(), QLineEdit()  # train's --val-images / --val-masks
        for field in (self.val_images, self.val_masks):
            field.setPlaceholderText("optional: else a share of the training pairs")
        self.labels_are = QComboBox()
        self.labels_are.addItems(LABEL_KINDS)
        self.start_model = QComboBox()
        self.start_model.addItems([FROM_SCRATCH, *zoo_models()])
        self.start_model.setEditable(True)  # or a checkpoint's path
        self.budget = QSpinBox()
        self.budget.setRange(5, 24 * 3600)
        self.budget.setValue(60)
        self.budget.setSuffix(" s")
        self.ignored = QSpinBox()  # train's --ignore-value: CamVid's void (11) trained as a class without it
        self.ignored.setRange(-1, 65535)
        self.ignored.setSpecialValueText("none (a start model's own)")
        self.ignored.setValue(-1)
        self.ignored.setToolTip("a label value that marks unlabelled pixels: counted in no loss or score")
        self.mask_values = QLineEdit()  # train's --mask-values: the classes' values, where masks lack some
        self.mask_values.setPlaceholderText("optional, e.g. 0,128,255: else found in the labels")
        self.out = QLineEdit()
        self.out.setPlaceholderText("default: unetkit-runs/<time> in the working folder")
        self.train_button, self.resume_button = QPushButton("Train"), QPushButton("Resume")
        self.resume_button.setEnabled(False)
        self.report_button = QPushButton("Open the run's report")
        self.report_button.setEnabled(False)
        self._lay_out()
        self.train_button.clicked.connect(self.train)
        self.resume_button.clicked.connect(self.resume)
        self.report_button.clicked.connect(self.open_report)
        self.source.currentTextChanged.connect(self._show_source)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_pairs)
        self._refresh_pairs()
        self._show_source(self.source.currentText())

    def busy_buttons(self) -> list[QPushButton]:
        return [self.train_button, self.resume_button]

    def _lay_out(self) -> None:
        form = QFormLayout()
        form.addRow("training data", self.source)
        form.addRow("pairs (image <- labels)", self.pairs)
        for label, field in (("images folder", self.images), ("masks folder", self.masks),
                             ("validation images folder", self.val_images), ("validation masks folder", self.val_masks),
                             ("the labels are", self.labels_are), ("start from", self.start_model),
                             ("time budget", self.budget), ("unlabelled value", self.ignored),
                             ("mask values", self.mask_values),
                             ("run folder", self.out)):  # fmt: skip
            form.addRow(label, field)
        buttons = QHBoxLayout()
        for button in (self.train_button, self.stop_button, self.resume_button):
            buttons.addWidget(button)
        column = QVBoxLayout(self)
        column.addLayout(form)
        column.addLayout(buttons)
        for widget in (self.progress, self.report_button, self.table, self.status):
            column.addWidget(widget)

    def _show_source(self, source: str) -> None:
        self.pairs.setEnabled(source == FROM_LAYERS)
        for field in (self.images, self.masks, self.val_images, self.val_masks):
            field.setEnabled(source == FROM_FOLDERS)

    def _refresh_pairs(self, _event: object = None) -> None:
        if not alive(self):  # the layer list of a viewer closing after its widget went
            return
        unchecked = {self.pairs.item(i).text() for i in range(self.pairs.count())
                     if self.pairs.item(i).checkState() != Qt.Checked}  # fmt: skip
        self.pairs.clear()
        for image, labels in layer_pairs(self.viewer):
            item = QListWidgetItem(f"{image}{PAIR_ARROW}{labels}")
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Unchecked if item.text() in unchecked else Qt.Checked)
            self.pairs.addItem(item)

    def chosen_pairs(self) -> list[tuple[str, str]]:
        rows = [self.pairs.item(i) for i in range(self.pairs.count())]
        return [tuple(row.text().split(PAIR_ARROW)) for row in rows if row.checkState() == Qt.Checked]

    def resume(self) -> None:
        """Resume the last run from its last.pt: the epochs and the budget it had left."""
        from unetkit.train import TrainConfig

        last = self.run_folder() / "last.pt" if self.stopped else None
        if last is None or not last.is_file():
            show_error("nothing to resume: train a run and stop it first")
            return
        self.start(TrainConfig(resume=str(last), progress=False))

    def config(self) -> TrainConfig:
        from unetkit.train import TrainConfig

        out = Path(self.out.text() or Path.cwd() / "unetkit-runs" / time.strftime("%Y%m%d-%H%M%S")).expanduser()
        if self.source.currentText() == FROM_LAYERS:
            from unetkit.train.run_folder import check_run_folder

            check_run_folder(out, None)  # a folder the run would refuse gets no pairs beside it either
            images, masks = self.write_pairs(out.with_name(f"{out.name}-pairs"))
        else:
            images, masks = chosen_folder(self.images, "images"), chosen_folder(self.masks, "masks")
        validation = self.validation_folders()
        start = self.start_model.currentText().strip()
        init_from = None if start in ("", FROM_SCRATCH) else start
        instances = labels_are_objects(self.labels_are.currentText(), images, masks)
        ignored = None if self.ignored.value() < 0 else self.ignored.value()
        # One pair leaves none to validate on; the refusal named --val-fraction, an option this widget lacks
        # (a red-team round): it trains without validation, said, as Correct and retrain's first round does.
        alone = self.source.currentText() == FROM_LAYERS and len(self.chosen_pairs()) < 2
        if alone:
            show_info("unetkit: one pair trains without validation; check a second pair to validate the model")
        config = TrainConfig(images=str(images), masks=str(masks), out=str(out), time=float(self.budget.value()),
                             init_from=init_from, instance_masks=instances, ignore_value=ignored, progress=False,
                             mask_values=self.chosen_mask_values(),
                             **validation, **({"val_fraction": 0.0} if alone else {}))  # fmt: skip
        config.validate()  # a value the run would refuse (mask values out of order) is refused here, at once
        return config

    def chosen_mask_values(self) -> list[int] | None:
        """train's --mask-values from its field, read as the command line reads it; else None."""
        from unetkit.train.config import option_value

        text = self.mask_values.text().strip()
        try:
            return option_value("mask_values", text, text=True) if text else None
        except ValueError as err:
            raise UnetkitError(f"mask values {text!r}: {err}") from None

    def validation_folders(self) -> dict[str, str]:
        """train's val_images and val_masks, from folders only: both or neither (the pairs of layers
        validate on a share of themselves)."""
        fields = {"val_images": self.val_images, "val_masks": self.val_masks}
        if self.source.currentText() != FROM_FOLDERS or not any(f.text().strip() for f in fields.values()):
            return {}
        fix = "choose one, or clear both validation fields"
        return {name: str(chosen_folder(field, f"validation {name[4:]}", fix)) for name, field in fields.items()}

    def write_pairs(self, folder: Path) -> tuple[Path, Path]:
        """The checked layer pairs as files in `folder` (images/, masks/), named after the layers."""
        chosen = self.chosen_pairs()
        if not chosen:
            raise UnetkitError(
                "no pair of an Image layer and a Labels layer of its size is checked; add or paint a Labels layer "
                "over the image (or train from folders)"
            )
        images = [image for image, _ in chosen]
        twice = next((image for image in images if images.count(image) > 1), None)
        if twice is not None:  # one pair a name: the second was written over the first (a red-team round)
            layers = ", ".join(labels for image, labels in chosen if image == twice)
            raise UnetkitError(f"{twice}: checked with two Labels layers ({layers}); one image trains with one, "
                               "so uncheck the others")  # fmt: skip
        for image, labels in chosen:
            add_pair(folder, layer_pixels(self.viewer.layers[image]), layer_pixels(self.viewer.layers[labels]), image)
        return folder / "images", folder / "masks"

    def trained(self, best: Path) -> None:
        super().trained(best)
        self.report_button.setEnabled((best.parent / "report.html").is_file())
        self.start_model.insertItem(1, str(best))

    def _idle(self) -> None:
        super()._idle()
        self.resume_button.setEnabled(self.stopped)

    def open_report(self) -> None:
        """The last run's report.html in the web browser."""
        import webbrowser

        report = Path(self.last_model).parent / "report.html" if self.last_model else None
        if report is None or not report.is_file():
            show_error("no report yet: train a run with validation images first")
            return
        webbrowser.open(report.resolve().as_uri())
