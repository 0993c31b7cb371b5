"""`unetkit export --bioimageio`: the package passes bioimageio.core's own model test (its
test input through the package's preprocessing and weights, against its test output), and its
probabilities are unetkit's own. In CI (.ci/run runs the demo first) the model exported is the
demo's own best.pt; on a fresh clone, a tiny RGB model."""

import zipfile
from pathlib import Path

import numpy as np
import pytest
from synthetic import run_cli

from unetkit.data import read_image
from unetkit.demo import DEMO_DATA
from unetkit.inference import InferenceOptions, Predictor

bioimageio_core = pytest.importorskip("bioimageio.core", reason="needs pip install 'unetkit[bioimageio]'")
DEMO_CHECKPOINT = Path(__file__).resolve().parents[2] / "runs" / "demo" / "best.pt"


def test_package_passes_the_bioimageio_model_test(rgb_run, tmp_path, capsys):
    _, images, _, checkpoint = rgb_run
    sample = images / "img00.png"
    if DEMO_CHECKPOINT.is_file():
        checkpoint, sample = DEMO_CHECKPOINT, DEMO_DATA / "images" / "25.png"
    package = tmp_path / "model.zip"
    args = ("export", "--checkpoint", checkpoint, "--bioimageio", package, "--sample", sample, "--author", "A. Tester")
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "bioimage.io model package" in out
    names = set(zipfile.ZipFile(package).namelist())
    assert {"rdf.yaml", "weights_torchscript.pt", "weights.onnx", "test_input.npy", "test_output.npy"} <= names
    assert {"cover.png", "README.md"} <= names
    summary = bioimageio_core.test_model(str(package))
    assert summary.status == "passed", [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.errors]
    with zipfile.ZipFile(package) as archive:
        archive.extract("test_output.npy", tmp_path)
        archive.extract("rdf.yaml", tmp_path)
    expected = np.load(tmp_path / "test_output.npy")[0]
    rdf = (tmp_path / "rdf.yaml").read_text()
    assert "A. Tester" in rdf and "fixed_zero_mean_unit_variance" in rdf and "scale_linear" in rdf
    # The same probabilities as unetkit's own prediction of the (cropped) sample, fp32.
    predictor = Predictor(checkpoint, amp="off", options=InferenceOptions(backend="torch"))
    image = read_image(sample)[: expected.shape[1], : expected.shape[2]]
    np.testing.assert_allclose(expected, predictor.probabilities(predictor.logits(image)), atol=1e-4)


def test_a_non_zip_output_is_refused(rgb_run, tmp_path, capsys):
    _, _, _, checkpoint = rgb_run
    code, _, err = run_cli(capsys, "export", "--checkpoint", checkpoint, "--bioimageio", tmp_path / "model.yaml")
    assert code == 2 and "ending in .zip" in err


def test_a_five_channel_16_bit_model_passes_the_bioimageio_model_test(tmp_path, capsys):
    """Issue 22: the package declares C channels and its raw 16-bit test input passes the test."""
    from synthetic import TINY_TRAIN
    from test_channels import channel_set

    images, masks = channel_set(tmp_path / "data", 5, 3, count=6)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--images", images, "--masks", masks, "--out", out, *TINY_TRAIN)
    assert code == 0, err
    package = tmp_path / "model.zip"
    args = ("export", "--checkpoint", out / "best.pt", "--bioimageio", package, "--sample", images / "i00.tif")
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    summary = bioimageio_core.test_model(str(package))
    assert summary.status == "passed", [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.errors]
    with zipfile.ZipFile(package) as archive:
        assert np.load(archive.open("test_input.npy")).shape[1] == 5  # (batch, channel, y, x)
        assert np.load(archive.open("test_input.npy")).max() > 255  # raw 16-bit values


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_the_packages_downscale_is_predicts_antialiased_resize(factor):
    """The package resizes a model trained at --scale 1/k as predict does (antialiased bilinear),
    by a convolution ONNX can hold: equal to F.interpolate's to rounding, borders included."""
    import torch
    import torch.nn.functional as F

    from unetkit.inference.export.bioimageio import AntialiasedDownscale

    down = AntialiasedDownscale(1 / factor, 3)
    for height, width in ((16 * factor, 40 * factor), (48 * factor, 8 * factor)):
        x = torch.rand(2, 3, height, width)
        expected = F.interpolate(x, size=(height // factor, width // factor), mode="bilinear", antialias=True)
        torch.testing.assert_close(down(x), expected, rtol=0, atol=1e-6)


def test_a_scale_the_packages_resize_cannot_hold_is_refused_in_one_line():
    from unetkit.errors import UnetkitError
    from unetkit.inference.export.bioimageio import AntialiasedDownscale

    with pytest.raises(UnetkitError, match=r"--scale 0.8 .* 0.5, 0.25 or 0.125"):
        AntialiasedDownscale(0.8, 1)


def test_a_package_of_a_model_at_half_scale_gives_predicts_probabilities(tmp_path, capsys):
    """Red-team finding: the package resized without antialiasing, and a scale-0.25 CamVid model's
    package agreed with predict on 93% of pixels; now its test output is predict's probabilities."""
    from synthetic import TINY_TRAIN, make_shapes

    images, masks = make_shapes(tmp_path / "data", count=5, size=(64, 96), rgb=True)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--images", images, "--masks", masks, "--out", out, *TINY_TRAIN,
                           "--scale", "0.5")  # fmt: skip
    assert code == 0, err
    package = tmp_path / "model.zip"
    code, _, err = run_cli(capsys, "export", "--checkpoint", out / "best.pt", "--bioimageio", package,
                           "--sample", images / "img00.png")  # fmt: skip
    assert code == 0, err
    summary = bioimageio_core.test_model(str(package))
    assert summary.status == "passed", [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.errors]
    expected = np.load(zipfile.ZipFile(package).open("test_output.npy"))[0]
    predictor = Predictor(out / "best.pt", amp="off", options=InferenceOptions(backend="torch"))
    image = read_image(images / "img00.png")[: expected.shape[1], : expected.shape[2]]
    np.testing.assert_allclose(expected, predictor.probabilities(predictor.logits(image)), atol=1e-4)
