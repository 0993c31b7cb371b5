"""The run report of an object task: true and predicted objects in their own colours, and the
merges, splits, misses and false objects (scoring.objects.object_errors) outlined and counted."""

import re

import numpy as np
import pytest
from PIL import Image
from synthetic import TINY_TRAIN

from unetkit.data.mask_values import MaskValues
from unetkit.report.build import shows_objects
from unetkit.report.figures import object_colours
from unetkit.scoring.objects import object_errors


def hand_made_pair() -> tuple[np.ndarray, np.ndarray]:
    """True and predicted label images with one of each error and one right object:
    true 1 and 2 side by side, predicted as one (7: a merge); true 3 cut into predicted 8 and 9 (a
    split); true 4 not found (missed); predicted 10 where nothing is (false); true 5 = predicted 11;
    true 6 found as 12 with a small piece 13 beside it inside 6 (a split, though 12 matches)."""
    true, pred = np.zeros((20, 40), dtype=np.int64), np.zeros((20, 40), dtype=np.int64)
    true[1:5, 1:5], true[1:5, 5:9], pred[1:5, 1:9] = 1, 2, 7
    true[7:11, 1:9], pred[7:11, 1:5], pred[7:11, 5:9] = 3, 8, 9
    true[13:17, 1:5] = 4
    pred[13:17, 10:14] = 10
    true[1:5, 12:16], pred[1:6, 12:16] = 5, 11
    true[8:16, 20:36], pred[8:16, 20:33], pred[8:16, 33:36] = 6, 12, 13
    return true, pred


def test_object_errors_name_merges_splits_misses_and_false_objects():
    true, pred = hand_made_pair()
    errors = object_errors(true, pred)
    assert errors.merges.tolist() == [7]
    assert errors.splits.tolist() == [3, 6] and errors.pieces.tolist() == [8, 9, 12, 13]
    assert errors.missed.tolist() == [4]  # 1 and 2 are in the merge, 3 and 6 split: not counted again
    assert errors.false.tolist() == [10]  # 7 is the merge, 8, 9, 13 pieces; 11 matches 5
    assert errors.counts() == "1 merge, 2 splits, 1 missed, 1 false"
    assert object_errors(true, true).counts() == "0 merges, 0 splits, 0 missed, 0 false"
    nothing = object_errors(true, np.zeros_like(pred))
    assert nothing.missed.tolist() == [1, 2, 3, 4, 5, 6] and nothing.false.size == 0


def test_neighbouring_objects_get_different_colours():
    labels = np.arange(12).reshape(3, 4)
    colours = object_colours(labels).reshape(-1, 3)
    assert (colours[0] == 0).all()  # background black
    assert all(np.abs(colours[k] - colours[k + 1]).max() > 0.2 for k in range(1, 11))


def test_object_panels_for_counted_tasks_only():
    scores = {"adapted_rand_error": 0.1}
    assert shows_objects(MaskValues([0, 1, 2, 3], instances="centres"), scores)
    assert shows_objects(MaskValues([0, 255]), scores)  # one class on a background: its objects are counted
    assert not shows_objects(MaskValues([0, 1, 2]), scores)  # classes (a street scene) keep class panels
    assert not shows_objects(MaskValues([0, 255]), None)  # no true object to show


def touching_discs(root, count: int = 6, size: int = 40):
    """Gray images of three touching discs each, and 16-bit instance masks."""
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    for index in range(count):
        labels, image = np.zeros((size, size), dtype=np.uint16), rng.normal(0.1, 0.03, (size, size))
        for k, cx in enumerate((8, 20, 32)):
            disc = (yy - 20 - rng.integers(-2, 3)) ** 2 + (xx - cx) ** 2 <= 42
            labels[disc & (labels == 0)] = 500 + k
            image[disc] = 0.8
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(root / "images" / f"d{index}.png")
        Image.fromarray(labels).save(root / "masks" / f"d{index}.png")
    return root / "images", root / "masks"


@pytest.mark.filterwarnings("ignore")
def test_report_of_an_instance_mask_run_shows_objects(tmp_path):
    from unetkit.cli import main

    images, masks = touching_discs(tmp_path)
    out = tmp_path / "run"
    tiny = [option for option in TINY_TRAIN if option != "--no-report"]
    args = ["train", "--images", str(images), "--masks", str(masks), "--out", str(out), "--val-fraction", "0.34"]
    assert main([*args, *tiny, "--instance-masks"]) == 0
    html = (out / "report.html").read_text()
    shown = html.count("image, true objects, predicted objects, object errors")
    assert shown == 2  # both validation images, as objects
    assert html.count("data:image/png;base64,") == 2 + shown  # curves, confusion and the examples
    assert len(re.findall(r"d\d\.png: \d+ merges?, \d+ splits?, \d+ missed, \d+ false</figcaption>", html)) == shown
    assert "image, truth, prediction, errors" not in html
    # Its classes are what the object ids train as, not values of the masks, which hold ids.
    assert "<li>centre (trained from the object ids):" in html and "mask value 3" not in html
