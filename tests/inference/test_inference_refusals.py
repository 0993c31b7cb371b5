"""Refusals of predict (models, images, output folders and their manifest; the Predictor's
arguments): broken input gets exit code 2 and one line naming the file or option and the fix, no
traceback, and no user file changes (the harness: tests/refusals.py)."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest
import tifffile
from PIL import Image
from refusals import (
    Case,
    _predictor,
    absent,
    api,
    assert_untouched,
    cases_of,
    failing,
    killed,
    killed_predict,
    many_images,
    nothing_in,
    nothing_written,
    predict_args,
    refused,
    snapshot,
)
from synthetic import assert_one_line_error, nuclei_with_ids, run_cli

from unetkit.errors import UnetkitError
from unetkit.runtime.folder_lock import PREDICT_LOCK_NAME
from unetkit.runtime.ownership import JOURNAL, MANIFEST, Manifest, digest


def case_tile_smaller_than_overlap(tmp_path, rgb_run, **_):
    _root, images, _masks, checkpoint = rgb_run
    out = tmp_path / "pred"
    args = ["predict", "--checkpoint", checkpoint, images, "--out", out, "--tile", "32", "--overlap", "64"]
    return Case(args, ("--overlap 64", "smaller than --tile 32"), nothing_written(out))


def case_bioimageio_name_with_letters_beyond_ascii(tmp_path, rgb_run, **_):
    """Refused before any of the export's files is written (the ONNX file was, before the package's check)."""
    out = tmp_path / "export"
    args = ["export", "--checkpoint", rgb_run[3], "--bioimageio", out / "model.zip", "--name", "Zellkerne Größe"]
    args += ["--onnx", out / "model.onnx", "--safetensors", out / "model.safetensors"]
    return Case(args, ("--name 'Zellkerne Größe'", "ASCII letters", "e.g. --name 'Zellkerne Gro-e'"), nothing_in(out))


def case_bioimageio_author_with_a_slash(tmp_path, rgb_run, **_):
    package = tmp_path / "model.zip"
    args = ["export", "--checkpoint", rgb_run[3], "--bioimageio", package, "--author", "Lab A/B"]
    return Case(args, ("--author 'Lab A/B'", "cannot hold '/'"), absent(package))


def case_export_bioimageio_with_a_full_temporary_folder(tmp_path, rgb_run, monkeypatch, **_):
    import unetkit.inference.export.bioimageio as bioimageio

    monkeypatch.setattr(bioimageio.np, "save", failing(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/tmp/x.npy")))
    args = ["export", "--checkpoint", rgb_run[3], "--bioimageio", tmp_path / "model.zip"]
    return Case(args, ("/tmp/x.npy", "No space left", "disk has space"), nothing_in(tmp_path / "export"))


def case_a_large_tiff_whose_header_lies_out_of_core(tmp_path, rgb_run, **_):
    """100 Mpx declared (under the limit, so out of core), 267 bytes held: read through a memory
    map, it was numpy's "mmap length is greater than file size" traceback."""
    image = tmp_path / "slide.tif"
    tifffile.imwrite(image, np.zeros((48, 48), np.uint8), metadata=None)
    with tifffile.TiffFile(image, mode="r+") as tif:
        for tag in ("ImageWidth", "ImageLength", "RowsPerStrip"):
            tif.pages[0].tags[tag].overwrite(10_000)
    out = tmp_path / "pred"
    return Case(
        predict_args(rgb_run[3], image, out), ("slide.tif", "cannot read this file as an image"), nothing_in(out)
    )


def case_two_images_of_one_name(tmp_path, rgb_run, **_):
    """a.png and a.tif in one folder: their masks (a.png, or a.tif out of core) and _probs collide."""
    folder = tmp_path / "images"
    folder.mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "a.png")
    tifffile.imwrite(folder / "a.tif", pixels)
    out = tmp_path / "pred"
    said = ("a.", "same name as", "outputs named a (the mask, a_probs", "different --out folders")
    return Case(predict_args(rgb_run[3], folder, out), said, nothing_in(out))


def case_a_tiled_tiff_cut_short_out_of_core(tmp_path, rgb_run, **_):
    """An interrupted download: a tiled, compressed TIFF cut to half its size (the codec's error)."""
    whole = tmp_path / "whole.tif"
    rng = np.random.default_rng(0)
    tifffile.imwrite(whole, rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8), tile=(256, 256), compression="zlib")
    image = tmp_path / "cut.tif"
    image.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    out = tmp_path / "pred"
    args = predict_args(rgb_run[3], image, out, "--out-of-core", "on")
    return Case(args, ("cut.tif", "cannot read this file as an image"), nothing_in(out))


CASES = cases_of(
    globals(),
    {
        "api_predictor_of_none": api(lambda t, r: _predictor(None), "Predictor(source)", "NoneType", "best.pt"),
        "api_predictor_of_a_number": api(lambda t, r: _predictor(3), "Predictor(source)", "int"),
        "api_predictor_options_as_a_dict": api(
            lambda t, r: _predictor(r[3], options={"threshold": 0.3}), "Predictor(options=)", "InferenceOptions"
        ),
        "api_predictor_device_as_a_torch_device": api(
            lambda t, r: _predictor(r[3], device=object()), "Predictor(device=)", "'cpu'"
        ),
        "api_predict_file_of_an_array": api(
            lambda t, r: _predictor(r[3]).predict_file(np.zeros((32, 32))), "predict_file(path)", "ndarray"
        ),
    },
)


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused(name, tmp_path, rgb_run, monkeypatch, capsys):
    refused(CASES[name], tmp_path, rgb_run, monkeypatch, capsys)


# ---- the same situations done right just work ----


def test_predict_overwrite_replaces_an_earlier_prediction(rgb_run, tmp_path, capsys):
    _root, images, _masks, checkpoint = rgb_run
    args = ["predict", "--checkpoint", checkpoint, images, "--out", tmp_path / "pred", "--no-progress"]
    assert run_cli(capsys, *args)[0] == 0
    assert run_cli(capsys, *args)[0] == 2  # a second time: refused
    assert run_cli(capsys, *args, "--overwrite")[0] == 0


def test_overwrite_takes_away_earlier_outputs_it_no_longer_writes(rgb_run, tmp_path, capsys):
    """Objects and overlays of an earlier --instances --overlay run would be left beside the new
    masks, out of date; predict's own go (and it says so), one corrected by hand stays."""
    _root, images, _masks, checkpoint = rgb_run
    out = tmp_path / "pred"
    args = ["predict", "--checkpoint", checkpoint, images, "--out", out, "--no-progress"]
    assert run_cli(capsys, *args, "--instances", "--overlay")[0] == 0
    objects = sorted(out.glob("*_objects.*"))
    assert objects and sorted(out.glob("*_overlay.png"))
    objects[0].write_bytes(objects[0].read_bytes() + b"\n")  # corrected by hand: the user's now
    code, text, err = run_cli(capsys, *args, "--overwrite")
    assert code == 0, err
    assert "removed" in text and "earlier output(s)" in text
    assert sorted(out.glob("*_objects.*")) == [objects[0]] and not list(out.glob("*_overlay.png"))
    assert sorted(out.glob("*.png")) and run_cli(capsys, *args, "--overwrite")[0] == 0  # and again


def test_a_240_character_image_name_predicts(rgb_run, tmp_path, capsys):
    long_name = "a" * 240 + ".png"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / long_name).write_bytes((rgb_run[1] / "img00.png").read_bytes())
    code, _, err = run_cli(capsys, *predict_args(rgb_run[3], tmp_path / "in" / long_name, tmp_path / "o", "--overlay"))
    assert code == 0, err
    assert (tmp_path / "o" / long_name).is_file() and (tmp_path / "o" / ("a" * 240 + "_overlay.png")).is_file()


def test_one_file_named_by_two_paths_is_predicted_once(rgb_run, tmp_path, capsys):
    image = rgb_run[1] / "img00.png"
    other_path = rgb_run[1] / ".." / "images" / "img00.png"
    code, _, err = run_cli(capsys, "predict", "--checkpoint", rgb_run[3], image, other_path, "--out", tmp_path / "o")
    assert code == 0, err
    assert (tmp_path / "o" / "img00.png").is_file()


@pytest.mark.parametrize("damage", ["{not json", '{"pad_multiple": "16"}'])
def test_onnx_with_damaged_metadata_is_one_line(tmp_path, capsys, rgb_run, damage):
    """An .onnx whose unetkit metadata was edited or cut ended in KeyError/ValueError; now one line."""
    import onnx

    from unetkit.inference.export.onnx import export_onnx

    path = tmp_path / "model.onnx"
    export_onnx(rgb_run[3], path)
    model = onnx.load(path)
    next(p for p in model.metadata_props if p.key == "unetkit").value = damage
    onnx.save(model, path)
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "predict", "--checkpoint", path, rgb_run[1], "--out", tmp_path / "pred")
    assert_one_line_error(code, err, "model.onnx", "metadata is damaged", "re-export")
    assert_untouched(before)
    assert not (tmp_path / "pred").exists()


@pytest.mark.parametrize("name", ["notes.txt", "best.pt"])
def test_onnx_given_a_file_that_is_no_onnx_model_names_the_option_to_use(tmp_path, capsys, rgb_run, name):
    """--onnx notes.txt was read as a PyTorch checkpoint and said so, with a KeyError in brackets
    (red-team finding): the option takes an exported .onnx, and a run's checkpoint has its own."""
    path = tmp_path / name
    path.write_bytes(b"not a model" if name.endswith(".txt") else rgb_run[3].read_bytes())
    for command in ("predict", "evaluate"):
        where = [rgb_run[1], "--out", tmp_path / "pred"] if command == "predict" else ["--images", rgb_run[1],
                 "--masks", rgb_run[2]]  # fmt: skip
        code, _, err = run_cli(capsys, command, "--onnx", path, *where)
        assert_one_line_error(code, err, name, "--onnx takes a model.onnx", "use --checkpoint")
    assert not (tmp_path / "pred").exists()


def test_predictor_class_ids_take_an_8_bit_array_as_read_image_does(rgb_run):
    import numpy as np
    from PIL import Image

    from unetkit.data import read_image
    from unetkit.inference import InferenceOptions, Predictor

    predictor = Predictor(rgb_run[3], amp="off", options=InferenceOptions(backend="torch"))
    path = rgb_run[1] / "img00.png"
    pixels = np.asarray(Image.open(path))
    assert pixels.dtype == np.uint8
    np.testing.assert_array_equal(predictor.class_ids(pixels), predictor.class_ids(read_image(path)))
    with pytest.raises(UnetkitError, match="an image array must be"):
        predictor.class_ids(np.array([["a", "b"]]))


def test_a_rerun_completes_a_killed_predict_without_overwrite(tmp_path, rgb_run, capsys):
    """Killed before its 5th mask: four masks and their hashes are there (the journal), the rerun
    writes the rest without --overwrite and leaves a finished manifest and no journal."""
    images, out = killed_predict(tmp_path, rgb_run[3])
    manifest = Manifest.read(out)
    assert manifest.unfinished
    landed = sorted(p.name for p in out.glob("img*.png"))
    assert len(landed) == 4
    assert all(digest(out / name) in manifest.files[name] for name in landed)
    assert [p.name for p in out.glob(".img*.tmp.png")]  # the kill left the fifth's temporary
    code, _out, err = run_cli(capsys, *predict_args(rgb_run[3], images, out))  # writer threads, as by default
    assert code == 0, err
    assert len(list(out.glob("img*.png"))) == 12 and not list(out.glob(".*.tmp*"))
    assert not (out / JOURNAL).exists() and not (out / PREDICT_LOCK_NAME).exists()
    final = json.loads((out / MANIFEST).read_text())
    assert final["unfinished"] is False
    assert all(final["files"][p.name] == [digest(p)] for p in out.glob("img*.png"))


def test_a_colour_photograph_to_the_gray_model_is_read_as_luminance_and_said(tmp_path, capsys):
    import unetkit.runtime.notes

    unetkit.runtime.notes._SAID.clear()
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(photo)
    code, text, err = run_cli(
        capsys, "predict", "--model", "nuclei", photo, "--out", tmp_path / "pred", "--no-progress"
    )
    assert code == 0, err
    assert text.count("read as their luminance") == 1 and (tmp_path / "pred" / "photo.png").is_file()


def test_a_gray_photograph_to_a_colour_model_is_repeated_and_said_once(tmp_path, rgb_run, capsys):
    """The other way round was said, this one was not (a red-team round: a gray street photograph
    predicted by a CamVid model, its classes visibly off)."""
    import unetkit.runtime.notes

    unetkit.runtime.notes._SAID.clear()
    photos = tmp_path / "gray"
    photos.mkdir()
    for index in range(3):
        gray = np.random.default_rng(index).integers(0, 255, (40, 56), dtype=np.uint8)
        Image.fromarray(gray).save(photos / f"g{index}.png")
    code, text, err = run_cli(capsys, "predict", "--checkpoint", rgb_run[3], photos, "--out", tmp_path / "p",
                              "--no-progress")  # fmt: skip
    assert code == 0, err
    assert text.count("gray images are repeated to the 3 channels of this colour (RGB) model") == 1
    assert len(list((tmp_path / "p").glob("g*.png"))) == 3


def test_geojson_of_a_time_lapse_puts_each_frame_on_t_not_z(tmp_path, capsys):
    frames = np.stack([np.asarray(Image.open(p)) for p in sorted(nuclei_with_ids(tmp_path / "d", 3)[0].iterdir())])
    movie = tmp_path / "movie.tif"
    tifffile.imwrite(movie, frames, imagej=True, metadata={"axes": "TYX"})
    out = tmp_path / "pred"
    args = ["predict", "--model", "nuclei", movie, "--out", out, "--instances", "--geojson", "--no-progress"]
    code, _text, err = run_cli(capsys, *args)
    assert code == 0, err
    features = json.loads((out / "movie_objects.geojson").read_text())["features"]
    planes = {(f["geometry"]["plane"]["z"], f["geometry"]["plane"]["t"]) for f in features}
    assert {z for z, _t in planes} == {0} and {t for _z, t in planes} == {0, 1, 2}


def test_predict_killed_while_planning_leaves_a_folder_the_rerun_takes(tmp_path, rgb_run, capsys):
    out = tmp_path / "pred"
    killed(predict_args(rgb_run[3], rgb_run[1], out), MANIFEST, 1)  # before its manifest landed
    code, _text, err = run_cli(capsys, *predict_args(rgb_run[3], rgb_run[1], out))
    assert code == 0, err
    assert len(list(out.glob("img*.png"))) == 5 and not list(out.glob(".*.tmp*"))


def test_a_killed_predicts_objects_are_completed_by_the_rerun(tmp_path, rgb_run, capsys):
    images = many_images(tmp_path, 6)
    out = tmp_path / "pred"
    killed(predict_args(rgb_run[3], images, out, "--instances", "--workers", "0"), "_objects.tif", 3)
    code, _text, err = run_cli(capsys, *predict_args(rgb_run[3], images, out, "--instances"))
    assert code == 0, err
    assert len(list(out.glob("*_objects.csv"))) == 6 and not list(out.glob(".*.tmp*"))
