"""Plugins > unetkit > Correct and retrain: the human-in-the-loop. Predict an image (the Predict
widget), fix its Labels layer with napari's own tools, **Add to training set** (the image and the
corrected labels into a project folder, named after the layer, never over a file unetkit did not
write: training_set.py), then **Retrain**: fine-tune the model (`--init-from`, as `unetkit train`
does) on every pair collected so far for the budget given, and predict the image again with the
new model. The next Retrain starts from that model, so each round builds on the last."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QComboBox, QFormLayout, QHBoxLayout, QLineEdit, QPushButton, QSpinBox, QVBoxLayout

from unetkit.errors import UnetkitError
from unetkit.napari.predict_widget import alive, fill_layer_choices, layer_pixels, open_widgets
from unetkit.napari.run_panel import RunPanel
from unetkit.napari.train_widget import LABEL_KINDS, LABELS_RECOGNISED, labels_are_objects
from unetkit.napari.training_set import add_pair, pairs_in, project_folder
from unetkit.zoo import zoo_models

if TYPE_CHECKING:
    import napari

    from unetkit.train import TrainConfig


class CorrectWidget(RunPanel):
    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.as_objects: bool | None = None  # how the last Retrain trained its labels (config)
        self.project = QLineEdit(str(Path.cwd() / "unetkit-training-set"))
        self.image_layer, self.labels_layer = QComboBox(), QComboBox()
        self.add_button = QPushButton("Add to training set")
        self.model = QComboBox()
        self.model.addItems(zoo_models())
        self.model.setEditable(True)  # or a checkpoint's path; after each Retrain, the new model
        self.model.setCurrentText("nuclei")  # the shipped model a correction most often starts from
        # Recognised from the labels, as the Train widget does: a box checked for objects trained
        # corrected EM classes (0/255) as four instance classes (a red-team round).
        self.labels_are = QComboBox()
        self.labels_are.addItems(LABEL_KINDS)
        self.labels_are.setCurrentText(LABELS_RECOGNISED)
        self.budget = QSpinBox()
        self.budget.setRange(5, 24 * 3600)
        self.budget.setValue(60)
        self.budget.setSuffix(" s")
        self.retrain_button = QPushButton("Retrain and predict again")
        self._lay_out()
        self.add_button.clicked.connect(self.add_to_training_set)
        self.retrain_button.clicked.connect(self.train)  # then trained() predicts again
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._refresh_layers()

    def busy_buttons(self) -> list[QPushButton]:
        return [self.retrain_button, self.add_button]  # an added pair would replace a file the run reads

    def _lay_out(self) -> None:
        form = QFormLayout()
        for label, field in (("project folder", self.project), ("image layer", self.image_layer),
                             ("corrected labels", self.labels_layer)):  # fmt: skip
            form.addRow(label, field)
        form.addRow(self.add_button)
        form.addRow("the labels are", self.labels_are)
        form.addRow("model to fine-tune", self.model)
        form.addRow("time budget", self.budget)
        buttons = QHBoxLayout()
        buttons.addWidget(self.retrain_button)
        buttons.addWidget(self.stop_button)
        column = QVBoxLayout(self)
        column.addLayout(form)
        column.addLayout(buttons)
        for widget in (self.progress, self.table, self.status):
            column.addWidget(widget)

    def _refresh_layers(self, _event: object = None) -> None:
        import napari.layers

        if alive(self):  # not the layer list of a viewer closing after its widget went
            fill_layer_choices(self.image_layer, self.viewer, napari.layers.Image)
            fill_layer_choices(self.labels_layer, self.viewer, napari.layers.Labels)

    def shown_pair(self, image_name: str, labels_name: str) -> tuple[np.ndarray, np.ndarray, str]:
        """The image and labels to add, and the pair's name: the layers, or where the labels are a
        stack of planes (a z-stack, a time-lapse), the plane the viewer shows (a red-team round:
        one corrected plane had to be copied into layers of its own by hand)."""
        labels_layer = self.viewer.layers[labels_name]
        image, labels = layer_pixels(self.viewer.layers[image_name]), layer_pixels(labels_layer)
        if labels.ndim != 3 or labels.shape[0] != image.shape[0]:
            return image, labels, image_name
        plane = int(round(labels_layer.world_to_data(self.viewer.dims.point)[0]))
        if not 0 <= plane < labels.shape[0]:
            raise UnetkitError(f"{labels_name}: the viewer shows none of its planes; move to the one corrected")
        return image[plane], labels[plane], f"{image_name} plane {plane}"

    def add_to_training_set(self) -> None:
        """Write the Image layer and its corrected Labels layer into the project folder."""
        image, labels = self.image_layer.currentText(), self.labels_layer.currentText()
        try:
            if not image or not labels:
                raise UnetkitError("choose an Image layer and the Labels layer that holds its corrected objects")
            project, _record = project_folder(self.project.text())
            name = add_pair(project, *self.shown_pair(image, labels))
        except UnetkitError as err:
            show_error(str(err))
            return
        show_info(f"unetkit: added {name} to {project}")
        self.status.setText(f"training set: {len(pairs_in(project))} image(s) in {project}")

    def config(self) -> TrainConfig:
        from unetkit.train import TrainConfig

        project, _record = project_folder(self.project.text())
        images, masks = project / "images", project / "masks"
        if not images.is_dir() or not masks.is_dir():
            raise UnetkitError(f"{project}: no training set yet; correct a Labels layer and Add to training set first")
        model = self.model.currentText().strip()
        if not model:
            raise UnetkitError("choose the model to fine-tune: a shipped one by name, or a checkpoint")
        out = project / "runs" / time.strftime("%Y%m%d-%H%M%S")
        instances = labels_are_objects(self.labels_are.currentText(), images, masks)
        self.as_objects = instances  # predicted again as the labels were corrected: objects, or classes
        # One corrected image leaves none to validate on, and a first round is one image: it trains on
        # it without validation (the last epoch's weights), said; from two images on, one validates.
        alone = len(pairs_in(project)) < 2  # the pairs training finds (a Finder's .DS_Store is none)
        if alone:
            show_info("unetkit: one corrected image trains without validation; add a second to validate the model")
        return TrainConfig(images=str(images), masks=str(masks), out=str(out), time=float(self.budget.value()),
                           init_from=model, instance_masks=instances, progress=False,
                           **({"val_fraction": 0.0} if alone else {}))  # fmt: skip

    def trained(self, best: Path) -> None:
        super().trained(best)
        if self.unchanged:  # predicting again would show the same objects as new
            return
        self.model.insertItem(0, str(best))  # the next round starts from this one
        self.model.setCurrentIndex(0)
        self.predict_again(str(best))

    def predict_again(self, model: str) -> None:
        """Retrain's last step: Predict the image layer with the new model."""
        widgets = open_widgets(self.viewer)
        if not widgets:
            show_info("unetkit: open Plugins > unetkit > Predict to predict with the new model")
            return
        widgets[0].model.setCurrentText(model)
        widgets[0].layer.setCurrentText(self.image_layer.currentText())
        # As the labels were corrected, whatever the Predict box was left at (a red-team round: corrected
        # objects came back as the instance model's four classes, the box unchecked for an earlier model)
        if self.as_objects is not None:
            widgets[0].objects.setChecked(self.as_objects)
        widgets[0].predict()
