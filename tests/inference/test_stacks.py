"""Stacks (issue 22): a TIFF of Z or T planes is read plane by plane, every layout the metadata
names (ImageJ hyperstack TZCYX, OME, plain pages, RGB pages); it trains as one sample per plane
(a stack's planes on one side of the split), is checked, evaluated and predicted plane by plane,
and its outputs are stacks of the input's plane axes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import roifile
import tifffile
from PIL import Image
from synthetic import assert_one_line_error, built_once, run_cli

from unetkit.cli import main
from unetkit.data import read_image, read_mask
from unetkit.data.pairing import Pair, expand_planes
from unetkit.data.tiff_axes import AxisChoice, count_planes
from unetkit.errors import UnetkitError

SIZE = 32


def test_every_stack_layout_reads_each_plane(tmp_path):
    """Plane p of each layout is the image the writer put there, channels last."""
    rng = np.random.default_rng(0)
    hyper = rng.integers(0, 65535, (3, 4, 2, SIZE, 24), dtype=np.uint16)  # T, Z, C, Y, X
    tifffile.imwrite(tmp_path / "ij.tif", hyper, imagej=True, metadata={"axes": "TZCYX"})
    ome = rng.integers(0, 65535, (20, 5, SIZE, 24), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "ome.tif", ome, ome=True, metadata={"axes": "ZCYX"})
    pages = rng.integers(0, 255, (6, SIZE, 24), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "pages.tif", pages)  # no axis names: pages are planes
    rgb = rng.integers(0, 255, (5, SIZE, 24, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    expected = {
        "ij.tif": [np.moveaxis(hyper[t, z], 0, -1) / 65535 for t in range(3) for z in range(4)],
        "ome.tif": [np.moveaxis(plane, 0, -1) / 65535 for plane in ome],
        "pages.tif": [plane[:, :, None] / 255 for plane in pages],
        "rgb.tif": [plane / 255 for plane in rgb],
    }
    for name, planes in expected.items():
        assert count_planes(tmp_path / name) == len(planes), name
        for index, plane in enumerate(planes):
            np.testing.assert_allclose(read_image(tmp_path / name, index), plane, atol=1e-6, err_msg=name)
    masks = rng.integers(0, 3, (6, SIZE, 24), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "masks.tif", masks)
    assert all(np.array_equal(read_mask(tmp_path / "masks.tif", p), masks[p]) for p in range(6))


def stack_set(root, stacks: int = 4, planes: int = 20, channels: int = 5, target: int = 3) -> tuple:
    """OME-TIFF stacks (Z, C, Y, X) of 16-bit noise, discs visible in channel `target` only, and
    their mask stacks (Z, Y, X)."""
    rng = np.random.default_rng(1)
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for index in range(stacks):
        truth = np.zeros((planes, SIZE, SIZE), np.uint8)
        pixels = rng.normal(12000, 3000, (planes, channels, SIZE, SIZE))
        for z in range(planes):
            for _ in range(2):
                cy, cx = rng.integers(7, SIZE - 7, 2)
                truth[z][(yy - cy) ** 2 + (xx - cx) ** 2 <= 16] = 255
            pixels[z, target] += 30000 * (truth[z] > 0)
        stack = np.clip(pixels, 0, 65535).astype(np.uint16)
        tifffile.imwrite(images / f"s{index}.ome.tif", stack, ome=True, metadata={"axes": "ZCYX"})
        tifffile.imwrite(masks / f"s{index}.ome.tif", truth, ome=True, metadata={"axes": "ZYX"})
    return images, masks


def train_on_stacks(root: Path) -> None:
    images, masks = stack_set(root)
    args = ["train", "--images", images, "--masks", masks, "--out", root / "run", "--epochs", "6"]
    args += ["--base-channels", "8", "--depth", "2", "--no-progress", "--no-report", "--workers", "0"]
    assert main([str(a) for a in [*args, "--val-fraction", "0.25"]]) == 0


@pytest.fixture(scope="module")
def stack_run(tmp_path_factory):
    """A model trained on four 20-plane, 5-channel stacks (80 planes), and its data."""
    root = built_once(tmp_path_factory, "stacks", train_on_stacks)
    return root, root / "images", root / "masks", root / "run"


def test_a_stack_trains_plane_by_plane_with_its_planes_on_one_side(stack_run):
    root, _, _, out = stack_run
    config = json.loads((out / "config.json").read_text())
    split = config["resolved"]
    assert len(split["train_images"]) == 3 and len(split["val_images"]) == 1  # whole stacks, by file
    assert not set(split["train_images"]) & set(split["val_images"])
    metrics = (out / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 7  # header and six epochs: 60 planes a training epoch


def test_check_and_evaluate_read_every_plane(stack_run, capsys):
    root, images, masks, out = stack_run
    code, text, err = run_cli(capsys, "check", "--images", images, "--masks", masks)
    assert code == 0, err
    assert "stack: s0.ome.tif: axes ZCYX, 20 plane(s) of 5 channel(s)" in text
    assert "32x32 x80" in text and "5 x80" in text
    report = root / "eval.json"
    code, text, err = run_cli(capsys, "evaluate", "--checkpoint", out / "best.pt", "--images", images,
                              "--masks", masks, "--json", report, "--no-progress")  # fmt: skip
    assert code == 0, err
    per_image = json.loads(report.read_text())["per_image"]
    assert len(per_image) == 80 and per_image[21]["file"] == "s1.ome.tif plane 1"
    assert json.loads(report.read_text())["per_class"][1]["dice"] > 0.8


def test_predict_writes_stacks_of_the_input_axes(stack_run, capsys):
    root, images, _, out = stack_run
    pred = root / "pred"
    outputs = ["--out", pred, "--instances", "--probabilities", "--overlay", "--no-progress"]
    code, text, err = run_cli(capsys, "predict", "--checkpoint", out / "best.pt", images / "s0.ome.tif", *outputs)
    assert code == 0, err
    truth = tifffile.imread(root / "masks" / "s0.ome.tif")
    with tifffile.TiffFile(pred / "s0.ome.tif") as tif:
        assert tif.series[0].axes == "ZYX"
        mask = tif.asarray()
    assert mask.shape == truth.shape and set(np.unique(mask)) <= {0, 255}
    assert 2 * ((mask > 0) & (truth > 0)).sum() / ((mask > 0).sum() + (truth > 0).sum()) > 0.8
    with tifffile.TiffFile(pred / "s0.ome_probs.tif") as tif:
        assert tif.series[0].axes == "ZCYX" and tif.series[0].shape == (20, 2, SIZE, SIZE)
    assert tifffile.imread(pred / "s0.ome_overlay.tif").shape == (20, SIZE, SIZE, 3)
    labels = tifffile.imread(pred / "s0.ome_objects.tif")
    assert labels.shape == truth.shape
    rows = list(csv.DictReader((pred / "s0.ome_objects.csv").open()))
    assert {row["plane"] for row in rows} == {str(z) for z in range(20)}
    for z in range(20):  # ids start at 1 in every plane, and the table lists each plane's objects
        ids = sorted(int(row["id"]) for row in rows if row["plane"] == str(z))
        assert ids == list(range(1, labels[z].max() + 1))


def test_out_of_core_a_stack_gives_what_it_gives_in_memory(stack_run, tmp_path, capsys):
    """The band engine, plane by plane, then stacked tile by tile: the same stacks as in memory."""
    root, images, _, out = stack_run
    outputs = {}
    for mode in ("off", "on"):
        outputs[mode] = tmp_path / mode
        args = ["--out", outputs[mode], "--geojson", "--imagej-rois", "--probabilities", "--no-progress"]
        args += ["--out-of-core", mode]  # --geojson implies --instances
        code, _, err = run_cli(capsys, "predict", "--checkpoint", out / "best.pt", images / "s0.ome.tif", *args)
        assert code == 0, err
    for name in ("s0.ome.tif", "s0.ome_probs.tif", "s0.ome_objects.tif"):
        with tifffile.TiffFile(outputs["off"] / name) as memory, tifffile.TiffFile(outputs["on"] / name) as band:
            assert band.series[0].axes == memory.series[0].axes, name
            np.testing.assert_allclose(band.asarray(), memory.asarray(), atol=1e-4, err_msg=name)
    tables = [list(csv.DictReader((outputs[m] / "s0.ome_objects.csv").open())) for m in ("off", "on")]
    assert len(tables[0]) == len(tables[1]) and [r["plane"] for r in tables[0]] == [r["plane"] for r in tables[1]]
    assert not [path for path in outputs["on"].iterdir() if path.is_dir()]  # the per-plane temporaries are gone
    geojson = [json.loads((outputs[m] / "s0.ome_objects.geojson").read_text()) for m in ("off", "on")]
    assert geojson[0] == geojson[1] and len(geojson[0]["features"]) == len(tables[0])
    planes = [f["geometry"]["plane"]["z"] for f in geojson[0]["features"]]
    assert planes == [int(row["plane"]) for row in tables[0]]  # QuPath's z of each object's plane
    rois = roifile.roiread(outputs["on"] / "s0.ome_rois.zip")
    assert [(roi.position, roi.z_position) for roi in rois] == [(p + 1, p + 1) for p in planes]  # from 1


def test_a_mask_stack_of_other_planes_is_refused(stack_run, tmp_path, capsys):
    root, images, masks, out = stack_run
    bad = tmp_path / "masks"
    bad.mkdir()
    for path in masks.iterdir():
        tifffile.imwrite(bad / path.name, tifffile.imread(path)[:19], ome=True, metadata={"axes": "ZYX"})
    code, _, err = run_cli(
        capsys, "train", "--images", images, "--masks", bad, "--out", tmp_path / "r", "--epochs", "1"
    )
    assert_one_line_error(code, err, "mask has 19 plane(s) but its image s", ".ome.tif has 20")


def test_the_user_names_the_axes_where_the_metadata_is_wrong_or_missing(tmp_path, capsys):
    """Pages without axis names are planes unless --channel-axis says they are channels; an OME
    file that calls its z-slices channels is read as planes with --plane-axis C."""
    rng = np.random.default_rng(2)
    pages = rng.integers(0, 255, (3, SIZE, 24), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "pages.tif", pages, photometric="minisblack")  # 3 pages, not planar RGB
    assert count_planes(tmp_path / "pages.tif") == 3
    as_channels = AxisChoice(channel="Q")
    assert count_planes(tmp_path / "pages.tif", as_channels) == 1
    np.testing.assert_allclose(read_image(tmp_path / "pages.tif", None, as_channels), np.moveaxis(pages, 0, -1) / 255)
    slices = rng.integers(0, 65535, (4, SIZE, 24), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "z_as_c.ome.tif", slices, ome=True, metadata={"axes": "CYX"})
    assert count_planes(tmp_path / "z_as_c.ome.tif") == 1  # 4 channels by its metadata
    as_planes = AxisChoice(plane="C")
    assert count_planes(tmp_path / "z_as_c.ome.tif", as_planes) == 4
    np.testing.assert_allclose(read_image(tmp_path / "z_as_c.ome.tif", 2, as_planes)[..., 0], slices[2] / 65535)
    with pytest.raises(UnetkitError, match=r"pages.tif: --plane-axis Z, but the file's axes are QYX; name one of Q"):
        read_image(tmp_path / "pages.tif", 0, AxisChoice(plane="Z"))
    with pytest.raises(UnetkitError, match="--channel-axis YY: must be one axis letter"):
        AxisChoice(channel="YY")
    tifffile.imwrite(
        tmp_path / "qq.tif", rng.integers(0, 255, (3, 4, SIZE, 24), dtype=np.uint8), photometric="minisblack"
    )
    with pytest.raises(UnetkitError, match="axes QQYX name Q more than once"):
        read_image(tmp_path / "qq.tif", 0)
    masks_of_slices = tmp_path / "z_masks.tif"  # the masks are a plain ZYX stack: no C axis to name
    tifffile.imwrite(masks_of_slices, (slices > 30000).astype(np.uint8), ome=True, metadata={"axes": "ZYX"})
    pairs = expand_planes([Pair(tmp_path / "z_as_c.ome.tif", masks_of_slices)], as_planes)
    assert [pair.plane for pair in pairs] == [0, 1, 2, 3]
    np.testing.assert_array_equal(pairs[2].read()[1], slices[2] > 30000)
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for index in range(3):
        tifffile.imwrite(images / f"p{index}.tif", pages, photometric="minisblack")
        tifffile.imwrite(masks / f"p{index}.png", (pages[0] > 128).astype(np.uint8))
    code, text, err = run_cli(capsys, "check", "--images", images, "--masks", masks, "--channel-axis", "q")
    assert code == 0, err
    assert "channels: 3 x3" in text and "TIFF images read as axes QYX, 1 plane(s) of 3 channel(s): 3" in text
    code, text, err = run_cli(capsys, "check", "--images", images, "--masks", masks)
    assert "mask has 1 plane(s) but its image p0.tif has 3" in text
    code, text, err = run_cli(capsys, "check", "--images", images, "--masks", masks, "--plane-axis", "Z")
    assert "p0.tif: --plane-axis Z, but the file's axes are QYX; name one of Q" in text  # not "has 1 plane"


def test_a_run_trained_with_channel_axis_q_reads_other_files_by_their_own_axes(tmp_path, capsys):
    """A red-team round: a model trained on untagged two-channel TIFFs (--channel-axis Q) refused
    correctly tagged YXC files at predict and evaluate, and a gray file was told to "name one of
    (none)" for an option the user never typed. The run's axis now holds where a file has it; other
    files are read by their own metadata and their channels counted. And `check` names the option
    (channels first) or the save (channels last) where untagged pages are most likely channels."""
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:SIZE, :24]
    untagged, tagged, masks = (tmp_path / name for name in ("untagged", "tagged", "masks"))
    for folder in (untagged, tagged, masks):
        folder.mkdir()
    for index in range(6):
        cy, cx = rng.integers(8, 18, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 25
        channels = np.stack([rng.normal(9000, 2000, disc.shape), 9000 + 30000 * disc]).clip(0, 65535)
        channels = channels.astype(np.uint16)  # (C, Y, X)
        tifffile.imwrite(untagged / f"i{index}.tif", channels)  # axes QYX: two planes by the file
        tifffile.imwrite(tagged / f"i{index}.tif", np.moveaxis(channels, 0, -1), metadata={"axes": "YXC"})
        Image.fromarray((disc * 255).astype(np.uint8)).save(masks / f"i{index}.png")
    code, text, _ = run_cli(capsys, "check", "--images", untagged, "--masks", masks)
    assert code != 0 and "if its 2 planes are one image's channels (pages saved without axis names" in text
    assert "pass --channel-axis Q" in text
    channels_last = tmp_path / "channels_last"
    channels_last.mkdir()
    tifffile.imwrite(channels_last / "i0.tif", tifffile.imread(tagged / "i0.tif"))  # untagged (Y, X, C): pages
    code, text, _ = run_cli(capsys, "check", "--images", channels_last, "--masks", masks)
    assert "its planes are 2 pixel(s) wide: most likely a (Y, X, C) array saved without axis names" in text

    out = tmp_path / "run"
    args = ["train", "--images", untagged, "--masks", masks, "--out", out, "--epochs", "1", "--base-channels", "8"]
    args += ["--depth", "2", "--no-progress", "--no-report", "--workers", "0", "--channel-axis", "Q"]
    assert main([str(a) for a in args]) == 0
    capsys.readouterr()
    code, _, err = run_cli(capsys, "predict", "--checkpoint", out / "best.pt", tagged, "--out", tmp_path / "p",
                           "--no-progress")  # fmt: skip
    assert code == 0, err
    assert len(list((tmp_path / "p").glob("i*.png"))) == 6
    code, text, err = run_cli(capsys, "evaluate", "--checkpoint", out / "best.pt", "--images", tagged,
                              "--masks", masks, "--no-progress")  # fmt: skip
    assert code == 0, err
    gray = tmp_path / "gray"
    gray.mkdir()
    tifffile.imwrite(gray / "g.tif", tifffile.imread(untagged / "i0.tif")[1])  # YX: one channel
    code, _, err = run_cli(capsys, "predict", "--checkpoint", out / "best.pt", gray, "--out", tmp_path / "g")
    assert_one_line_error(code, err, "g.tif: the image has 1 channel(s) but the model was trained on 2-channel")
    code, _, err = run_cli(capsys, "predict", "--checkpoint", out / "best.pt", channels_last, "--out", tmp_path / "c")
    assert_one_line_error(code, err, "i0.tif: the image has 32 channels", "2 pixel(s) wide", "'axes': 'YXC'")
    code, _, err = run_cli(capsys, "predict", "--checkpoint", out / "best.pt", gray, "--out", tmp_path / "g",
                           "--channel-axis", "Q")  # typed: still strict  # fmt: skip
    assert_one_line_error(code, err, "g.tif: --channel-axis Q, but the file's axes are YX")
