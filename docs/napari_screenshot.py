"""The napari plugin's picture in the README: `python docs/napari_screenshot.py [--out docs/napari.png]`.

Opens napari headless (Qt's offscreen platform), the nuclei sample, the Predict and the Correct
and retrain widgets docked,
chooses the shipped `nuclei` model, presses Predict and saves the whole window once the objects
layer is there; prints the seconds from the press to the layer (the issue's measurement)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "napari.png")
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import napari
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=False)
    viewer.window.resize(1600, 900)
    viewer.open_sample("unetkit", "nuclei")
    viewer.window.add_plugin_dock_widget("unetkit", "Correct and retrain")
    _dock, widget = viewer.window.add_plugin_dock_widget("unetkit", "Predict")
    widget.model.setCurrentText("nuclei")
    started = time.perf_counter()
    widget.predict_button.click()
    while widget.worker is not None:
        QApplication.processEvents()
        time.sleep(0.02)
    print(f"Predict to the objects layer: {time.perf_counter() - started:.1f} s")
    viewer.window._qt_window.grab().save(str(args.out))  # napari's screenshot(canvas_only=False)
    print(f"wrote {args.out}")
    viewer.close()


if __name__ == "__main__":
    main()
