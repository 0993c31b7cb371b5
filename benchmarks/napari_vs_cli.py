"""The napari plugin against the command line on real nuclei: `xvfb-run -a python -m benchmarks.napari_vs_cli`.

Drives the Predict dock widget (added through napari's plugin manager, the shipped `nuclei` model
chosen by name, the button pressed) on every image of dsb2018-dev's val split, one Image layer
each, and compares each objects layer with what `unetkit predict --model nuclei --instances`
writes for the same file (issue 35: the widget's objects score as the CLI's do). Prints how many
are identical, the objects counted and the seconds each way (the CLI's include its start-up).
With `--retrain SECONDS`, then the correct-and-retrain loop end to end: four train-split images
and their true masks (standing for corrected labels) added with the Correct-and-retrain widget,
Retrain pressed with that budget, timed from the press to the image's new objects layer."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from benchmarks.accuracy import DATA


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.napari_vs_cli", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help=f"the data sets' folder (default {DATA})")
    parser.add_argument("--retrain", type=float, help="also time a Retrain of this many seconds, end to end")
    args = parser.parse_args(argv)
    root = args.data / "dsb2018-dev"
    if args.retrain:
        train = [next((root / "images").glob(f"{n}.*")) for n in json.loads((root / "split.json").read_text())["train"]]
        seconds, objects = retrain_seconds(train[:4], root / "masks", args.retrain)
        print(f"Retrain with a {args.retrain:g} s budget: {seconds:.1f} s from the press to the new objects layer "
              f"({objects} objects)")  # fmt: skip
    files = [next((root / "images").glob(f"{n}.*")) for n in json.loads((root / "split.json").read_text())["val"]]
    out = Path(tempfile.mkdtemp(prefix="unetkit-napari-vs-cli-"))
    started = time.perf_counter()
    command = [sys.executable, "-m", "unetkit.cli", "predict", "--model", "nuclei", *map(str, files)]
    subprocess.run([*command, "--out", str(out), "--instances", "--no-progress"], check=True, capture_output=True)
    cli_seconds = time.perf_counter() - started
    same, objects, gui_seconds = widget_objects(files, out)
    print(f"{len(files)} val images: the widget's objects identical to the CLI's on {same}; {objects} objects; "
          f"widget {gui_seconds:.1f} s, CLI {cli_seconds:.1f} s")  # fmt: skip


def widget_objects(files: list[Path], cli_out: Path) -> tuple[int, int, float]:
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=False)
    _dock, widget = viewer.window.add_plugin_dock_widget("unetkit", "Predict")
    widget.model.setCurrentText("nuclei")
    same, objects, seconds = 0, 0, 0.0
    for path in files:
        viewer.add_image(np.asarray(Image.open(path)), name=path.stem)
        widget.layer.setCurrentText(path.stem)
        started = time.perf_counter()
        widget.predict_button.click()
        while widget.worker is not None:
            QApplication.processEvents()
            time.sleep(0.005)
        seconds += time.perf_counter() - started
        labels = viewer.layers[f"{path.stem} objects"].data
        same += int(np.array_equal(labels, tifffile.imread(cli_out / f"{path.stem}_objects.tif")))
        objects += int(labels.max())
    viewer.close()
    return same, objects, seconds


def retrain_seconds(images: list[Path], masks: Path, budget: float) -> tuple[float, int]:
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=False)
    _dock, predict = viewer.window.add_plugin_dock_widget("unetkit", "Predict")
    _dock, widget = viewer.window.add_plugin_dock_widget("unetkit", "Correct and retrain")
    widget.project.setText(tempfile.mkdtemp(prefix="unetkit-retrain-"))
    for path in images:
        viewer.add_image(np.asarray(Image.open(path)), name=path.stem)
        viewer.add_labels(tifffile.imread(masks / f"{path.stem}.tif").astype(np.int32), name=f"{path.stem} fixed")
        widget.image_layer.setCurrentText(path.stem)
        widget.labels_layer.setCurrentText(f"{path.stem} fixed")
        widget.add_button.click()
    widget.budget.setValue(int(budget))
    started = time.perf_counter()
    widget.retrain_button.click()
    layer = f"{images[-1].stem} objects"
    while widget.worker is not None or predict.worker is not None or layer not in viewer.layers:
        QApplication.processEvents()
        time.sleep(0.01)
    seconds = time.perf_counter() - started
    objects = int(viewer.layers[layer].data.max())
    viewer.close()
    return seconds, objects


if __name__ == "__main__":
    main()
