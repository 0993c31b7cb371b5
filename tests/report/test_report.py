"""The HTML run report: written at the end of training and by `unetkit report`, self-contained,
and (where Chromium and its driver are installed, as .ci/run installs them) rendered in a real
headless browser: every image decoded, the table there, no console errors."""

import os
import re
import shutil
from pathlib import Path

import pytest
from synthetic import TINY_TRAIN, make_shapes, run_cli


@pytest.fixture(scope="module")
def reported_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    images, masks = make_shapes(root, count=12, size=(48, 64), values=(0, 1, 2))
    out = root / "run"
    from unetkit.cli import main

    args = ["train", "--images", str(images), "--masks", str(masks), "--out", str(out), "--val-fraction", "0.34"]
    tiny = [option for option in TINY_TRAIN if option != "--no-report"]
    assert main([*args, *tiny]) == 0  # 4 validation images: 3 worst and 1 best shown
    return root, images, masks, out


def test_training_writes_a_self_contained_report(reported_run):
    _, _, _, out = reported_run
    html = (out / "report.html").read_text()
    for section in ('id="summary"', 'id="classes"', 'id="curves"', 'id="examples"', 'id="confusion"'):
        assert section in html
    assert html.count("data:image/png;base64,") == 6  # curves, confusion, and the 4 examples
    assert not re.search(r"""(src|href)=["']https?:""", html)  # nothing fetched from a network
    assert "the run&#39;s validation images" in html  # autoescaped by the template engine
    assert "<li>mask value 2:" in html  # a class named by the value its masks hold
    # the counts named as what they are: "found / true" showed the predicted count (a red-team round)
    assert "pooled AP@0.5 / AP@0.5:0.9" in html and "objects matched at IoU 0.5 / predicted / true" in html


def test_report_command_on_other_images(reported_run, tmp_path, capsys):
    _, images, masks, out = reported_run
    target = tmp_path / "other.html"
    code, stdout, _ = run_cli(capsys, "report", out, "--images", images, "--masks", masks, "--out", target)
    assert code == 0 and str(target) in stdout
    assert "12 image(s)" in target.read_text()
    # The run's own folder: 8 of its 12 images trained it (a red-team finding: said nowhere).
    said = "8 of these images are the model's own training images"
    assert f"note: {said}" in stdout and said.replace("'", "&#39;") in target.read_text()
    code, stdout, _ = run_cli(capsys, "evaluate", "--checkpoint", out / "best.pt", "--images", images, "--masks", masks)
    assert code == 0 and f"note: {said}" in stdout
    code, stdout, _ = run_cli(capsys, "report", out, "--out", tmp_path / "val.html")  # its validation images
    assert code == 0 and "training images" not in stdout + (tmp_path / "val.html").read_text()
    code, _, err = run_cli(capsys, "report", tmp_path)
    assert code == 2 and "config.json: not found" in err


def test_the_report_of_an_unfinished_run_says_so_with_its_resume(reported_run, tmp_path, capsys):
    """An interrupted run's report read as a finished one's (a red-team round): where the run
    folder's marker says the epochs are not over, the report and its command say so."""
    from unetkit.runtime.ownership import mark_last_steps

    _, _, _, out = reported_run
    assert "has not finished" not in (out / "report.html").read_text()  # written by train, at its end
    stopped = tmp_path / "stopped"
    shutil.copytree(out, stopped)
    mark_last_steps(stopped, "pending")  # as a Ctrl-C leaves it
    code, stdout, err = run_cli(capsys, "report", stopped)
    assert code == 0, err
    said = "This run has not finished: it stopped after epoch 1. Resume it with: "
    said += f"unetkit train --resume {stopped / 'last.pt'}"
    assert f"note: {said}" in stdout and said in (stopped / "report.html").read_text()
    import subprocess
    import sys

    from unetkit.runtime.folder_lock import LOCK_NAME

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # a run still training: its lock held by a live process; no --resume beside it
        (stopped / LOCK_NAME).write_text(f"{alive.pid}\n")
        code, stdout, err = run_cli(capsys, "report", stopped)
        assert code == 0 and f"still training (process {alive.pid}): this report shows its first 1 epoch" in stdout
        assert "--resume" not in stdout
    finally:
        alive.kill()
        (stopped / LOCK_NAME).unlink()
    mark_last_steps(stopped, "done")
    code, stdout, err = run_cli(capsys, "report", stopped)
    assert code == 0 and "has not finished" not in stdout + (stopped / "report.html").read_text()


def test_example_panels_show_colour_in_colour_and_errors_of_the_labelled_pixels(monkeypatch):
    """A street photo was drawn in gray, and its error share counted CamVid's void pixels as
    right (a red-team round)."""
    import numpy as np

    import unetkit.report.figures as figures

    drawn, legends = [], []

    def row(panels, title, legend=None) -> str:
        drawn.append(panels)
        legends.append(legend)
        return ""

    monkeypatch.setattr(figures, "row", row)
    photo = np.random.default_rng(0).random((8, 10, 3))
    truth = np.zeros((8, 10), np.uint8)
    truth[:4] = 255  # half the pixels void
    prediction = np.ones_like(truth)
    prediction[4:, :5] = 0  # of the 40 labelled pixels, 20 wrong
    names = ["value 0", "value 1", "value 2", "value 3"]
    figures.example(photo, truth, prediction, "t", names)
    (image, true, _, errors) = drawn[0]
    assert image[2] is None and np.array_equal(image[1], photo)  # in colour
    # void was drawn in class 3's yellow, as road (a red-team round): gray now, no class's colour, in the legend
    assert (true[1][:4] == figures.IGNORED_GRAY).all()
    assert not any(np.allclose(figures.colour(np.array(k)), figures.IGNORED_GRAY) for k in range(1, 64))
    assert [handle.get_label() for handle in legends[0]] == [*names, "ignored"]
    shown, _ = figures.picture(photo * 0.03)  # three dim 16-bit stains are stretched, not black
    assert 0.9 < np.percentile(shown, 99.5) <= 1.0
    assert errors[0] == "errors (50.0% of labelled pixels)"
    figures.example(photo[..., :2], np.zeros_like(truth), prediction, "t", names[:2])  # two stains: their mean
    (image, _, _, errors) = drawn[1]
    assert image[2] == "gray" and image[1].shape == (8, 10) and errors[0] == "errors (75.0% of pixels)"
    assert [handle.get_label() for handle in legends[1]] == names[:2]  # nothing ignored, no gray in the legend


def test_an_image_of_no_labelled_pixel_is_not_an_example(monkeypatch):
    """A mask all void scores Dice NaN; sorted among the others it took a "worst" slot (a red-team round)."""
    import math

    import unetkit.report.build as build

    monkeypatch.setattr(build, "class_panels", lambda predictor, pair, title: ("png", None))
    pairs = [type("P", (), {"label": f"i{k}"})() for k in range(6)]
    per_image = [{"dice": d} for d in (0.9, math.nan, 0.5, 0.7, math.nan, 0.8)]
    shown = build.examples(None, pairs, per_image)
    assert [row["name"] for row in shown] == ["i2", "i3", "i5", "i0"]  # the 3 worst, then the best


def chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


NO_BROWSER = "needs chromium and chromedriver: apt-get install chromium chromium-driver (.ci/run does)"


# CI installs the browser, so there a missing one fails instead of skipping.
@pytest.mark.skipif(chromium() is None and not os.environ.get("CI"), reason=NO_BROWSER)
def test_report_renders_in_headless_chromium(reported_run, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert chromium() is not None, NO_BROWSER
    _, _, _, out = reported_run
    browser, driver_path = chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,2400"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get((out / "report.html").resolve().as_uri())
        decoded = driver.execute_script("return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        assert decoded and all(decoded)
        assert driver.execute_script("return document.querySelectorAll('#classes table tr').length") >= 4
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors
        driver.set_window_size(390, 844)  # a phone: nothing wider than the screen
        width = driver.execute_script("return document.documentElement.scrollWidth")
        assert width <= 400
        assert driver.save_screenshot(str(tmp_path / "report.png"))
    finally:
        driver.quit()
    assert Path(tmp_path / "report.png").stat().st_size > 10_000
