"""Plugins > unetkit > Predict: a model (a shipped one by name, or a checkpoint / safetensors file)
on an Image layer, into a Labels layer (`<layer> objects`, one id per object, or `<layer> classes`)
and, when asked, the class probabilities as an Image layer. The work is the Predictor's, the same
as `unetkit predict` (logits, objects, threshold, TTA), run in napari's thread worker so the viewer
stays responsive; a stack (z or t planes of a gray image) is predicted plane by plane, and Cancel
stops after the plane under way. Bad input is one napari notification, never a traceback."""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from unetkit.errors import UnetkitError
from unetkit.inference import InferenceOptions, Predictor
from unetkit.inference.objects import object_classes_note, object_table, with_mask_values
from unetkit.inference.predictor import array_range
from unetkit.runtime.notes import notes_to, say, say_once
from unetkit.zoo import zoo_models

if TYPE_CHECKING:
    import napari

CHOOSE_FILE = "checkpoint or safetensors file..."
PREDICT_WIDGETS: weakref.WeakSet[PredictWidget] = weakref.WeakSet()  # the open ones, for offer_model
TRAINED: list[str] = []  # best.pt files trained in this session (the Train widget), newest first


def offer_model(path: str) -> None:
    """A model trained in this session joins every Predict widget's list (and those opened later)."""
    TRAINED.insert(0, path)
    for widget in open_widgets():
        widget.model.insertItem(0, path)


def open_widgets(viewer: napari.Viewer | None = None) -> list[PredictWidget]:
    """The Predict widgets still open (of `viewer`, if given): a closed viewer's widget may keep its
    Python object after Qt deleted the widget itself."""

    def bare(proxy: Any) -> Any:  # napari hands plugins its viewer behind a proxy, one per widget
        return getattr(proxy, "__wrapped__", proxy)

    return [w for w in list(PREDICT_WIDGETS) if alive(w) and (viewer is None or bare(w.viewer) is bare(viewer))]


def fill_layer_choices(combo: QComboBox, viewer: napari.Viewer, kind: type) -> None:
    """`combo` lists the viewer's layers of `kind`, keeping the one chosen while it is there."""
    chosen = combo.currentText()
    combo.clear()
    combo.addItems([layer.name for layer in viewer.layers if isinstance(layer, kind)])
    if chosen:
        combo.setCurrentText(chosen)


def full_resolution(layer: napari.layers.Layer) -> Any:
    """A layer's data, a multiscale (pyramid) layer's level 0: napari lists its levels, and the
    whole list read as one array was its smallest (a red-team finding: a 512 px image predicted at
    256 px, unsaid)."""
    return layer.data[0] if layer.multiscale else layer.data


def layer_pixels(layer: napari.layers.Layer) -> np.ndarray:
    """A layer's data at full resolution, as one array."""
    return np.asarray(full_resolution(layer))


def alive(widget: QWidget) -> bool:
    try:
        widget.objectName()  # raises once Qt has deleted the C++ object
    except RuntimeError:
        return False
    return True


@dataclass(frozen=True)
class PredictRequest:
    """What one press of Predict asks for, read from the widget in the GUI thread."""

    model: str  # a shipped model's name, or a checkpoint's path
    image: np.ndarray
    layer_name: str
    rgb: bool
    objects: bool
    probabilities: bool
    tta: bool
    threshold: float
    zoom: float  # predict --zoom: the layer's magnification against the training images'
    # Where the layer sits in the world (napari's scale, translate, rotate, shear and affine): the
    # layers added from it sit there too, or they covered the wrong part of a scaled image.
    placement: dict[str, Any]


@dataclass
class PlaneResult:
    labels: np.ndarray  # object ids, or class ids
    probabilities: np.ndarray | None  # (K, H, W)
    table: dict[str, np.ndarray] | None = None  # the objects' table, as predict --instances writes it


def planes_of(image: np.ndarray, rgb: bool, in_channels: int) -> list[np.ndarray]:
    """The 2-D images to predict: an RGB layer or a gray 2-D image is one; an RGB stack
    (planes, y, x, RGB) and, for a 1-channel model, a gray (planes, y, x) layer are their planes;
    for a model of C channels, a (C, y, x) layer is one image and a (planes, C, y, x) layer its
    planes (channels_first). An RGBA layer's alpha is dropped, as a file's is. Anything else is
    refused in one line that says what the layer holds and what the model takes. A gray 2-D image
    goes to a 3-channel model as match_channels repeats it (said), as the command line does."""
    if rgb and image.shape[-1] == 4:  # napari draws the fourth as alpha; the file reader drops it too
        image = image[..., :3]
    if channels_first(image, rgb, in_channels):
        return [np.moveaxis(plane, 0, -1) for plane in (image if image.ndim == 4 else [image])]
    if in_channels not in (1, 3) and not rgb and image.ndim == 2:  # channels opened as layers (channel_axis)
        raise UnetkitError(
            f"the layer is one channel ({image.shape[0]} x {image.shape[1]}) and the model takes {in_channels}-channel "
            f"images: give it one layer holding the {in_channels} channels on its first axis ({in_channels}, y, x), "
            "e.g. the file opened without splitting its channels, or np.stack of the channel layers"
        )
    if image.ndim == 2 or rgb and image.ndim == 3:
        return [image]
    if rgb and image.ndim == 4 or image.ndim == 3 and in_channels == 1:
        return list(image)
    held = f"an RGB layer of {image.ndim - 1} axes" if rgb else f"a gray layer of {image.ndim} axes"
    sizes = " x ".join(str(n) for n in image.shape[: image.ndim - rgb])
    takes = f", or ({in_channels}, y, x) and (planes, {in_channels}, y, x) layers" if in_channels > 1 else ""
    raise UnetkitError(
        f"the layer is {held} ({sizes}) and the model takes {in_channels}-channel 2-D images; give it a 2-D image, "
        f"an RGB image or stack{', or a gray stack (planes, y, x)' if in_channels == 1 else takes}, e.g. one time "
        "point or channel of the layer as its own layer"
    )


def channels_first(image: np.ndarray, rgb: bool, in_channels: int) -> bool:
    """Whether a gray layer holds a multi-channel model's channels on its third axis from the end:
    (C, y, x) or (planes, C, y, x), as a TIFF of channels opens in napari unsplit."""
    return not rgb and in_channels > 1 and image.ndim in (3, 4) and image.shape[-3] == in_channels


def placement_of(placement: dict[str, Any], ndim: int, kept: list[int]) -> dict[str, Any]:
    """A layer's placement (PredictRequest.placement, of `ndim` axes) on the axes `kept`: the labels
    of a (C, y, x) layer have no channel axis, and a 3-axis scale on them was an error."""
    from napari.utils.transforms import CompositeAffine

    parts = {key: placement[key] for key in ("scale", "translate", "rotate", "shear")}
    sliced = CompositeAffine(**parts, ndim=ndim).set_slice(kept)
    return {"scale": sliced.scale, "translate": sliced.translate, "rotate": sliced.rotate, "shear": sliced.shear,
            "affine": placement["affine"].set_slice(kept)}  # fmt: skip


class TileProgress(QObject):
    """The tiles of one large plane, told from the worker's thread to the GUI's (a queued signal):
    a 4096^2 layer showed a busy bar for its whole prediction (a red-team round)."""

    told = Signal(int, int)

    def __call__(self, done: int, total: int, _what: str) -> None:
        self.told.emit(done, total)


def predict_planes(predictor: Predictor, request: PredictRequest, tiles: TileProgress | None = None):
    """Generator for napari's thread worker: yields (planes done, planes in all) after each plane
    (a point where Cancel stops it) and returns the PlaneResults; a single plane's tiles, if it is
    tiled, go to `tiles`."""
    channels = predictor.spec.in_channels
    planes = planes_of(request.image, request.rgb, channels)
    predictor.progress = tiles if len(planes) == 1 else None  # the Predictor's own listener of tiles
    if channels_first(request.image, request.rgb, channels):
        say(f"{request.layer_name}: its axis of {channels} before y and x is read as the model's {channels} channels")
    found = array_range(request.image)  # the API says it once a process; a layer each time (a red-team round)
    if found:
        say(f"{request.layer_name}: {found[0].replace('array', 'layer')}; rescale the layer to 0-1 (e.g. in napari's "
            "console, layer.data / 255) or open the integer image")  # fmt: skip
    if request.objects and (note := object_classes_note(predictor.mask_values)):
        say_once("object classes", f"{note}; untick objects for the classes")
    results = []
    for index, plane in enumerate(planes):
        logits = predictor.logits(plane, f"{request.layer_name} plane {index}")
        table = None
        if request.objects:
            labels, classes, probabilities = predictor.objects(logits)
            if len(planes) == 1:  # a stack's planes each count from id 1: no one table
                table = objects_features(predictor, labels, classes, probabilities)
        else:
            labels = predictor.class_ids_from_logits(logits, predictor.options.threshold)
            probabilities = predictor.probabilities(logits) if request.probabilities else None
        results.append(PlaneResult(labels, probabilities if request.probabilities else None, table))
        yield index + 1, len(planes)
    return results


def objects_features(predictor: Predictor, labels: np.ndarray, classes: np.ndarray, probabilities: np.ndarray) -> dict:
    """The objects layer's features: `predict --instances`' object table, with each class's mask
    value after it (as its CSV); napari finds an object's row by its "index"."""
    table = object_table(labels, classes, probabilities, bool(predictor.mask_values.instances))
    return {"index": table["id"], **with_mask_values(table, predictor.mask_values.values)}


class PredictWidget(QWidget):
    """The Predict dock widget (napari passes the viewer)."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.predictors: dict[tuple, Predictor] = {}  # a model is loaded once per options
        self.worker: Any = None
        self.queued: list[PredictRequest] = []  # asked for while a worker ran: started in turn
        self.under_way = ""  # the layer being predicted
        self.cancelled = False  # Cancel pressed and no result came: said when the worker ends
        self.model = QComboBox()
        self.model.addItems([*TRAINED, *zoo_models(), CHOOSE_FILE])
        self.model.activated.connect(self._model_chosen)
        self.layer = QComboBox()
        self.objects = QCheckBox("objects (one id each)")
        self.objects.setChecked(True)
        self.probabilities = QCheckBox("probabilities as an image layer")
        self.tta = QCheckBox("test-time augmentation (8 views)")
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.01, 0.99)
        self.threshold.setSingleStep(0.05)
        self.threshold.setValue(InferenceOptions().threshold)
        self.zoom = QDoubleSpinBox()  # predict --zoom, for cells larger or smaller than those trained on
        self.zoom.setRange(1 / 16, 16)
        self.zoom.setDecimals(3)
        self.zoom.setSingleStep(0.1)
        self.zoom.setValue(InferenceOptions().zoom)
        self.zoom.setToolTip(next(f.metadata["help"] for f in dataclasses.fields(InferenceOptions) if f.name == "zoom"))
        self.predict_button, self.cancel_button = QPushButton("Predict"), QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.predict_button.clicked.connect(self.predict)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.tiles = TileProgress()
        self.tiles.told.connect(self._progressed_tiles)
        self.status = QLabel("")
        self._lay_out()
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._refresh_layers()
        PREDICT_WIDGETS.add(self)

    def _lay_out(self) -> None:
        form = QFormLayout()
        form.addRow("model", self.model)
        form.addRow("image layer", self.layer)
        form.addRow("threshold (binary models)", self.threshold)
        form.addRow("zoom (0.5: objects twice the trained size)", self.zoom)
        buttons = QHBoxLayout()
        buttons.addWidget(self.predict_button)
        buttons.addWidget(self.cancel_button)
        column = QVBoxLayout(self)
        column.addLayout(form)
        for box in (self.objects, self.probabilities, self.tta):
            column.addWidget(box)
        column.addLayout(buttons)
        column.addWidget(self.progress)
        column.addWidget(self.status)
        column.addStretch()

    def _refresh_layers(self, _event: object = None) -> None:
        import napari.layers

        if alive(self):  # not the layer list of a viewer closing after its widget went
            fill_layer_choices(self.layer, self.viewer, napari.layers.Image)

    def _model_chosen(self, index: int) -> None:
        if self.model.itemText(index) != CHOOSE_FILE:
            return
        path, _ = QFileDialog.getOpenFileName(self, "A trained model", "", "models (*.pt *.safetensors)")
        if path:
            self.model.insertItem(0, path)
            self.model.setCurrentIndex(0)

    def request(self) -> PredictRequest:
        """The widget's choices, checked: one line for each thing missing."""
        name = self.layer.currentText()
        if not name or name not in self.viewer.layers:
            raise UnetkitError("no image layer to predict: open an image (File > Open, or File > Open Sample)")
        if self.model.currentText() == CHOOSE_FILE:
            raise UnetkitError("choose a model: a shipped one by name, or a checkpoint or safetensors file")
        layer = self.viewer.layers[name]
        placement = {key: getattr(layer, key) for key in ("scale", "translate", "rotate", "shear", "affine")}
        return PredictRequest(
            self.model.currentText(), layer_pixels(layer), name, bool(layer.rgb), self.objects.isChecked(),
            self.probabilities.isChecked(), self.tta.isChecked(), round(self.threshold.value(), 4),
            round(self.zoom.value(), 4), placement,
        )  # fmt: skip

    def predictor(self, request: PredictRequest) -> Predictor:
        """The Predictor of the request's model and options, loaded once (in the worker thread)."""
        key = (request.model, request.tta, request.threshold, request.zoom)
        if key not in self.predictors:
            options = InferenceOptions(tta=request.tta, threshold=request.threshold, zoom=request.zoom, progress=False)
            if request.model in zoo_models() and not Path(request.model).exists():
                self.predictors[key] = Predictor.from_pretrained(request.model, options=options)
            else:
                self.predictors[key] = Predictor(request.model, options=options)
        return self.predictors[key]

    def predict(self) -> None:
        """Predict's button (and Retrain's last step): start a worker, or queue the request behind
        the one under way, or say in one notification why not."""
        try:
            request = self.request()
        except UnetkitError as err:
            show_error(str(err))
            return
        if self.worker is not None:  # Retrain's predict while the user's runs: it took that one's layer
            self.queued.append(request)
            self.status.setText(f"{request.layer_name}: waits for the prediction under way")
            return
        self._start(request)

    def _start(self, request: PredictRequest) -> None:
        @thread_worker(
            connect={
                "yielded": self._progressed,
                "returned": lambda results: self._finished(results, request),
                "errored": self._failed,
                "finished": self._idle,
            }
        )
        def work():
            with notes_to(lambda note: show_info(f"unetkit: {note}")):  # napari's user sees no terminal
                return (yield from predict_planes(self.predictor(request), request, self.tiles))

        self.predict_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)  # busy until the first plane is done
        self.status.setText(f"predicting {request.layer_name}...")
        self.under_way = request.layer_name
        self.cancelled = False
        self.worker = work()

    def cancel(self) -> None:
        dropped = f"; {len(self.queued)} waiting prediction(s) dropped" if self.queued else ""
        self.queued.clear()
        if self.worker is not None:
            self.worker.quit()
            self.cancelled = True
            self.status.setText(f"cancelled: stops after the plane under way{dropped}")

    def _progressed(self, done: tuple[int, int]) -> None:
        self.progress.setRange(0, done[1])
        self.progress.setValue(done[0])

    def _progressed_tiles(self, done: int, total: int) -> None:
        if self.worker is not None:  # not a late signal of a prediction already over
            self._progressed((done, total))
            self.status.setText(f"predicting {self.under_way}: tile {done} of {total}")

    def _finished(self, results: list[PlaneResult], request: PredictRequest) -> None:
        self.cancelled = False  # it ended before the Cancel took: its layers are added
        labels = np.stack([r.labels for r in results]) if len(results) > 1 else results[0].labels
        layers = [self._add_labels(labels, request)]
        if results[0].table is not None:  # an image's objects (predict_planes)
            layers[0].features = results[0].table
        if request.probabilities:
            stacked = (
                np.stack([r.probabilities for r in results], axis=1) if len(results) > 1 else results[0].probabilities
            )
            names = [f"{request.layer_name} probability {k}" for k in range(len(stacked))]  # of class id k
            layers += self.viewer.add_image(stacked, name=names, channel_axis=0, visible=False)
        ndim = request.image.ndim - request.rgb
        placement = request.placement
        if labels.ndim < ndim:  # a (C, y, x) or (planes, C, y, x) layer's channel axis is not the labels'
            kept = [axis for axis in range(ndim) if axis != ndim - 3]
            placement = placement_of(placement, ndim, kept)
        for layer in layers:
            for key, value in placement.items():
                setattr(layer, key, value)
        # Each plane's ids start at 1: a stack's count is their sum, not its largest id (a red-team round)
        found = sum(int(r.labels.max()) for r in results)
        planes = f" in {len(results)} planes" if len(results) > 1 else ""
        count = f"{found} objects{planes}" if request.objects else f"{len(np.unique(labels))} classes present"
        self.status.setText(f"done: {count}")
        show_info(f"unetkit: {request.layer_name}: {count}")

    def _add_labels(self, labels: np.ndarray, request: PredictRequest) -> napari.layers.Labels:
        """The objects, or the classes as the mask values `unetkit predict` writes (0/255, CamVid's
        ids), not class indices: a correction trains as the model's own masks, and a brush paints
        the first foreground class's value."""
        if request.objects:
            return self.viewer.add_labels(labels.astype(np.int32), name=f"{request.layer_name} objects")
        mask_values = self.predictor(request).mask_values
        layer = self.viewer.add_labels(mask_values.decode(labels), name=f"{request.layer_name} classes")
        layer.selected_label = mask_values.values[min(1, len(mask_values.values) - 1)]
        return layer

    def _failed(self, error: Exception) -> None:
        show_error(str(error) if isinstance(error, UnetkitError) else f"{type(error).__name__}: {error}")
        self.status.setText("failed: see the notification")

    def _idle(self) -> None:
        self.worker = None
        if self.cancelled:  # the status said "stops after the plane under way" long after it stopped
            done, total = self.progress.value(), self.progress.maximum()
            planes = f" after {done} of {total} planes" if total > 1 else ""
            self.status.setText(f"cancelled{planes}: {self.under_way} not predicted, no layer added")
            self.cancelled = False
        while self.queued and alive(self):
            request = self.queued.pop(0)
            if request.layer_name in self.viewer.layers:  # a layer removed while it waited: nothing to add to
                self._start(request)
                return
            show_info(f"unetkit: {request.layer_name} was removed while its prediction waited; not predicted")
        self.predict_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)
