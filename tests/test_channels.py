"""Every channel is data (issue 22): an image of 2 to 16 channels trains and predicts on all of
them, whatever TIFF layout holds them; only a channel the file marks as alpha is dropped."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from synthetic import run_cli

from unetkit.data import read_image
from unetkit.inference import InferenceOptions, Predictor

SIZE = 32


def channel_set(root, channels: int, target: int, count: int = 48) -> tuple:
    """16-bit TIFFs (YXS) of `channels` channels of noise where only channel `target` shows the
    discs of the mask; the other channels hold discs elsewhere, so only `target` tells the truth."""
    rng = np.random.default_rng(channels)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    yy, xx = np.mgrid[:SIZE, :SIZE]

    def discs() -> np.ndarray:
        mask = np.zeros((SIZE, SIZE), bool)
        for _ in range(2):
            cy, cx = rng.integers(6, SIZE - 6, 2)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= 20
        return mask

    for index in range(count):
        mask = discs()
        pixels = rng.normal(12000, 3000, (SIZE, SIZE, channels))
        for channel in range(channels):
            pixels[..., channel] += 30000 * (mask if channel == target else discs())  # decoys elsewhere
        pixels = np.clip(pixels, 0, 65535).astype(np.uint16)
        tifffile.imwrite(images / f"i{index:02d}.tif", pixels, photometric="minisblack", planarconfig="contig")
        tifffile.imwrite(masks / f"i{index:02d}.tif", mask.astype(np.uint8) * 255)
    return images, masks


def foreground_dice(predictor: Predictor, images, masks, zero: int | None = None) -> float:
    """Dice of the foreground over the set, with channel `zero` set to 0 in every image."""
    overlap = total = 0
    for path in sorted(images.iterdir()):
        image = read_image(path)
        if zero is not None:
            image[..., zero] = 0
        predicted = predictor.class_ids(image, path) > 0
        truth = tifffile.imread(masks / path.name) > 0
        overlap += 2 * (predicted & truth).sum()
        total += predicted.sum() + truth.sum()
    return overlap / total


# (5, 3) reads a middle channel of many, which (2, 1) adds nothing to but 6 s of the default suite
@pytest.mark.parametrize(("channels", "target"), [pytest.param(2, 1, marks=pytest.mark.slow), (5, 3)])
def test_the_channel_that_holds_the_objects_is_used(tmp_path, capsys, channels, target):
    """Trained on a set whose objects show in one channel only, the model finds them; with that
    channel zeroed it does not: the channel was read and used, not dropped or averaged away."""
    images, masks = channel_set(tmp_path / "data", channels, target)
    out = tmp_path / "run"
    args = ["train", "--images", images, "--masks", masks, "--out", out, "--epochs", "12", "--base-channels", "8"]
    code, text, err = run_cli(capsys, *args, "--depth", "2", "--no-progress", "--no-report", "--workers", "0")
    assert code == 0, err
    assert f"{channels} channels" in text
    predictor = Predictor(out / "best.pt", options=InferenceOptions(backend="torch"))
    assert predictor.preprocess.in_channels == channels
    assert foreground_dice(predictor, images, masks) > 0.8
    assert foreground_dice(predictor, images, masks, zero=target) < 0.3
    code, _, err = run_cli(capsys, "export", "--checkpoint", out / "best.pt", "--onnx", tmp_path / "m.onnx")
    assert code == 0, err  # its check runs the graph on `channels`-channel input


def layouts(pixels: np.ndarray) -> dict:
    """Writers of one (C, H, W) image in each layout fluorescence images come in."""
    return {
        "imagej CYX": lambda path: tifffile.imwrite(path, pixels, imagej=True, metadata={"axes": "CYX"}),
        "ome CYX": lambda path: tifffile.imwrite(path, pixels, ome=True, metadata={"axes": "CYX"}),
        "samples YXS": lambda path: tifffile.imwrite(
            path, np.moveaxis(pixels, 0, -1), photometric="minisblack", planarconfig="contig"
        ),
        "planar": lambda path: tifffile.imwrite(path, pixels, photometric="minisblack", planarconfig="separate"),
    }


@pytest.mark.parametrize("layout", list(layouts(np.zeros((2, 1, 1)))))
@pytest.mark.parametrize("channels", [2, 5])
def test_every_tiff_layout_reads_every_channel(tmp_path, layout, channels):
    pixels = np.random.default_rng(0).integers(0, 65535, (channels, 24, 20), dtype=np.uint16)
    path = tmp_path / "image.tif"
    layouts(pixels)[layout](path)
    image = read_image(path)
    assert image.shape == (24, 20, channels)
    assert np.allclose(np.moveaxis(image, -1, 0), pixels / 65535, atol=1e-6)


def test_check_reports_the_channels_and_a_mixed_set_is_refused(tmp_path, capsys):
    images, masks = channel_set(tmp_path / "data", 3, 0, count=4)
    five = np.zeros((SIZE, SIZE, 5), np.uint16)
    tifffile.imwrite(images / "i01.tif", five, photometric="minisblack", planarconfig="contig")
    code, _, err = run_cli(capsys, "check", "--images", images, "--masks", masks, "--json", tmp_path / "c.json")
    assert json.loads((tmp_path / "c.json").read_text())["channels"] == {"3": 3, "5": 1}
    code, _, err = run_cli(capsys, "train", "--images", images, "--masks", masks, "--out", tmp_path / "run")
    assert code == 2 and "i01.tif has 5 channels" in err and "same channels" in err


def test_more_than_sixteen_channels_are_refused_by_name(tmp_path, capsys):
    path = tmp_path / "wide.tif"
    tifffile.imwrite(path, np.zeros((20, 8, 8), np.uint16), imagej=True, metadata={"axes": "CYX"})
    with pytest.raises(Exception, match="wide.tif: the image has 20 channels, more than the 16"):
        read_image(path)
