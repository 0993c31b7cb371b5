"""predict --zoom: images at another magnification than the training images, resized for the
model and answered at their own size, with the object rule's sizes in their pixels."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
from synthetic import assert_one_line_error, nuclei_with_ids, run_cli

from unetkit.data import read_image
from unetkit.errors import UnetkitError
from unetkit.inference import InferenceOptions, Predictor


def nuclei_at(folder: Path, magnification: int) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic nuclei field and its objects, each pixel repeated `magnification` times a side."""
    images, masks = nuclei_with_ids(folder, count=1)
    (path,) = images.iterdir()
    block = np.ones((magnification, magnification), np.float32)
    image = np.kron(read_image(path)[..., 0], block)[..., None]
    return image, np.kron(tifffile.imread(masks / f"{path.stem}.tif"), block.astype(int))


def test_zoom_runs_the_model_on_the_resized_image_and_answers_at_its_size(tmp_path):
    image, truth = nuclei_at(tmp_path, 3)  # 288 px, each nucleus three times its trained side
    plain = Predictor.from_pretrained("nuclei", options=InferenceOptions(amp="off"))
    zoomed = Predictor.from_pretrained("nuclei", options=InferenceOptions(amp="off", backend="torch", zoom=1 / 3))
    seen = []
    forward = zoomed._forward
    zoomed._forward = lambda x: seen.append(tuple(x.shape[-2:])) or forward(x)
    labels, _, probabilities = zoomed.objects(zoomed.logits(image))
    assert seen == [(96, 96)] and labels.shape == probabilities.shape[1:] == truth.shape
    rule, trained = zoomed.object_rule, plain.object_rule
    assert (rule.min_size, rule.max_hole, rule.smooth) == (
        9 * trained.min_size,
        9 * trained.max_hole,
        3 * trained.smooth,
    )
    assert labels.max() == truth.max()  # each nucleus one object
    inside = (labels > 0) & (truth > 0)
    assert 2 * inside.sum() / ((labels > 0).sum() + (truth > 0).sum()) > 0.9


def test_an_object_size_given_is_taken_as_given_at_any_zoom():
    options = InferenceOptions(zoom=0.5, min_size=5)
    rule = Predictor.from_pretrained("nuclei", options=options).object_rule
    assert rule.min_size == 5 and rule.max_hole == 4 * Predictor.from_pretrained("nuclei").object_rule.max_hole


@pytest.mark.parametrize("zoom", ["0", "20"])
def test_a_zoom_out_of_range_is_one_line(tmp_path, capsys, zoom):
    code, _, err = run_cli(capsys, "predict", "--model", "nuclei", tmp_path, "--out", tmp_path / "out", "--zoom", zoom)
    assert_one_line_error(code, err, "--zoom")


@pytest.mark.parametrize("given", ["0.5", True])
def test_a_zoom_given_as_text_in_python_says_it_must_be_a_number(given):
    with pytest.raises(UnetkitError, match=r"must be a factor from 0.0625 to 16, e.g. 0.5 \(a number, where"):
        InferenceOptions(zoom=given)
