"""Refusals of the command line (option values, output folders named by the user): broken input gets
exit code 2 and one line naming the file or option and the fix, no traceback, and no user file
changes (the harness: tests/refusals.py)."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import tifffile
from PIL import Image
from refusals import (
    Case,
    cases_of,
    corrected,
    killed,
    killed_predict,
    many_images,
    nothing_in,
    predict_args,
    refused,
    run_cli_quiet,
    unchanged,
    users_file,
)


def case_predict_into_the_image_folder(tmp_path, rgb_run, **_):
    _root, images, masks, checkpoint = rgb_run
    return Case(
        ["predict", "--checkpoint", checkpoint, images, "--out", images, "--no-progress"],
        ("--out is the folder of the input image", "choose another --out"),
        unchanged(images, masks),
    )


def case_predict_into_the_mask_folder(tmp_path, rgb_run, **_):
    _root, images, masks, checkpoint = rgb_run
    return Case(
        ["predict", "--checkpoint", checkpoint, images, "--out", masks, "--no-progress"],
        ("img00.png", "did not write", "choose an empty --out folder"),  # the hint must not be --overwrite
        unchanged(images, masks),
    )


def case_predict_overlay_name_collides_with_an_input(tmp_path, rgb_run, **_):
    _root, images, _masks, checkpoint = rgb_run
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "a.png").write_bytes((images / "img00.png").read_bytes())
    (inputs / "a_overlay.png").write_bytes((images / "img01.png").read_bytes())
    out = tmp_path / "pred"
    return Case(
        ["predict", "--checkpoint", checkpoint, inputs, "--out", out, "--overlay", "--no-progress"],
        ("a_overlay.png", "also the output of", "rename"),
        nothing_in(out),
    )


def case_predict_overwrite_into_the_image_folder(tmp_path, rgb_run, **_):
    _root, images, masks, checkpoint = rgb_run
    args = ["predict", "--checkpoint", checkpoint, images, "--out", images, "--overwrite", "--no-progress"]
    return Case(args, ("--out is the folder of the input image",), unchanged(images, masks))


def case_export_onnx_over_the_checkpoint(tmp_path, rgb_run, **_):
    run = rgb_run[3].parent
    return Case(
        ["export", "--checkpoint", run / "best.pt", "--onnx", run / "best.pt"],
        ("--onnx", "ending in .onnx"),
        unchanged(run),
    )


def case_export_safetensors_over_the_checkpoint(tmp_path, rgb_run, **_):
    run = rgb_run[3].parent
    args = ["export", "--checkpoint", run / "best.pt", "--safetensors", run / "last.pt"]
    return Case(args, ("--safetensors", "ending in .safetensors"), unchanged(run))


def case_evaluate_json_over_a_mask(tmp_path, rgb_run, **_):
    _root, images, masks, checkpoint = rgb_run
    args = ["evaluate", "--checkpoint", checkpoint, "--images", images, "--masks", masks, "--json", masks / "img00.png"]
    return Case(args, ("--json", "ending in .json"), unchanged(images, masks))


def case_check_json_over_an_image(tmp_path, rgb_run, **_):
    _root, images, masks, _checkpoint = rgb_run
    args = ["check", "--images", images, "--masks", masks, "--json", images / "img01.png"]
    return Case(args, ("--json", "ending in .json"), unchanged(images, masks))


def case_overwrite_hint_into_the_mask_folder(tmp_path, rgb_run, **_):
    """Following the old hint (--overwrite) replaced every ground-truth mask."""
    _root, images, masks, checkpoint = rgb_run
    return Case(
        predict_args(checkpoint, images, masks, "--overwrite"), ("did not write", "empty --out"), unchanged(masks)
    )


def case_overwrite_beside_a_users_image_in_a_prediction_folder(tmp_path, rgb_run, **_):
    _root, images, _masks, checkpoint = rgb_run
    out = tmp_path / "pred"
    assert run_cli_quiet(predict_args(checkpoint, images, out)) == 0
    (out / "holiday.jpg").write_bytes((images / "img00.png").read_bytes())
    return Case(predict_args(checkpoint, images, out, "--overwrite"), ("holiday.jpg", "did not write"), unchanged(out))


def case_overwrite_a_users_table_named_like_an_output(tmp_path, rgb_run, **_):
    _root, images, _masks, checkpoint = rgb_run
    out = tmp_path / "pred"
    out.mkdir()
    (out / "img00_objects.csv").write_text("my,own,counts\n")
    args = predict_args(checkpoint, images, out, "--instances", "--overwrite")
    return Case(args, ("img00_objects.csv", "did not write it", "never replaced"), unchanged(out))


def case_overwrite_with_a_damaged_manifest(tmp_path, rgb_run, **_):
    from unetkit.predict import MANIFEST

    _root, images, _masks, checkpoint = rgb_run
    out = tmp_path / "pred"
    assert run_cli_quiet(predict_args(checkpoint, images, out)) == 0
    (out / MANIFEST).write_text("{not json")  # then nothing there counts as predict's
    return Case(predict_args(checkpoint, images, out, "--overwrite"), ("did not write", "empty --out"), unchanged(out))


def case_predict_into_a_folder_of_the_users_tiffs(tmp_path, rgb_run, **_):
    _root, images, _masks, checkpoint = rgb_run
    out = tmp_path / "scans"
    out.mkdir()
    tifffile.imwrite(out / "scan.tif", np.zeros((8, 8), np.uint8))
    return Case(predict_args(checkpoint, images, out), ("scan.tif", "did not write"), unchanged(out))


def case_json_onto_predicts_manifest(tmp_path, rgb_run, **_):
    """Replacing predict's own manifest with a report stranded the folder (--overwrite refused after)."""
    from unetkit.predict import MANIFEST

    _root, images, masks, checkpoint = rgb_run
    out = tmp_path / "pred"
    assert run_cli_quiet(predict_args(checkpoint, images, out)) == 0
    args = ["evaluate", "--checkpoint", checkpoint, "--images", images, "--masks", masks, "--json", out / MANIFEST]
    return Case([*args, "--no-progress"], (MANIFEST, "did not write it"), unchanged(out))


def case_overwrite_a_prediction_corrected_by_hand(tmp_path, rgb_run, **_):
    """The loop predict -> correct -> train again: --overwrite replaced the corrected mask."""
    _root, images, _masks, checkpoint = rgb_run
    out = tmp_path / "pred"
    assert run_cli_quiet(predict_args(checkpoint, images, out)) == 0
    corrected = np.zeros((40, 56), np.uint8)
    corrected[5:20, 5:20] = 255
    Image.fromarray(corrected).save(out / "img02.png")
    args = predict_args(checkpoint, images, out, "--overwrite")
    return Case(args, ("img02.png", "changed since predict wrote it", "move it"), unchanged(out))


def case_json_naming_a_folder(tmp_path, rgb_run, **_):
    _root, images, masks, checkpoint = rgb_run
    target = tmp_path / "scores.json"
    target.mkdir()
    args = ["evaluate", "--checkpoint", checkpoint, "--images", images, "--masks", masks, "--json", target]
    return Case([*args, "--no-progress"], ("scores.json", "is a folder", "file name"))


def case_evaluate_json_onto_a_users_file(tmp_path, rgb_run, **_):
    _root, images, masks, checkpoint = rgb_run
    target = users_file(tmp_path, "scores.json", b'{"my": "scores"}')
    args = ["evaluate", "--checkpoint", checkpoint, "--images", images, "--masks", masks, "--json", target]
    return Case([*args, "--no-progress"], ("scores.json", "unetkit did not write it", "new file name"))


def case_check_json_onto_a_users_file(tmp_path, rgb_run, **_):
    _root, images, masks, _checkpoint = rgb_run
    target = users_file(tmp_path, "notes.json", b"[1, 2, 3]")
    return Case(["check", "--images", images, "--masks", masks, "--json", target], ("notes.json", "did not write"))


def case_export_onnx_onto_a_users_file(tmp_path, rgb_run, **_):
    target = users_file(tmp_path, "model.onnx", b"someone else's model")
    return Case(["export", "--checkpoint", rgb_run[3], "--onnx", target], ("model.onnx", "did not write"))


def case_export_safetensors_onto_a_users_file(tmp_path, rgb_run, **_):
    target = users_file(tmp_path, "weights.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{}              ")
    return Case(
        ["export", "--checkpoint", rgb_run[3], "--safetensors", target], ("weights.safetensors", "did not write")
    )


def case_export_bioimageio_onto_a_users_zip(tmp_path, rgb_run, **_):
    target = tmp_path / "mine" / "package.zip"
    target.parent.mkdir()
    with zipfile.ZipFile(target, "w") as package:
        package.writestr("rdf.yaml", "name: my own model\n")
    return Case(["export", "--checkpoint", rgb_run[3], "--bioimageio", target], ("package.zip", "did not write"))


def case_report_out_onto_a_users_page(tmp_path, rgb_run, **_):
    target = users_file(tmp_path, "index.html", b"<html>my lab's page</html>")
    return Case(["report", rgb_run[3].parent, "--out", target], ("index.html", "did not write"))


def case_overwrite_after_a_kill_keeps_a_hand_corrected_mask(tmp_path, rgb_run, **_):
    """Killed after 4 masks, one corrected by hand: --overwrite used to replace the correction."""
    images, out = killed_predict(tmp_path, rgb_run[3])
    corrected(out / "img01.png")
    return Case(predict_args(rgb_run[3], images, out, "--overwrite"), ("img01.png", "changed since predict wrote it"))


def case_rerun_after_a_kill_keeps_a_hand_corrected_mask(tmp_path, rgb_run, **_):
    images, out = killed_predict(tmp_path, rgb_run[3])
    corrected(out / "img00.png")
    return Case(predict_args(rgb_run[3], images, out), ("img00.png", "never replaced", "move it elsewhere"))


def case_kill_before_the_first_mask_then_a_users_file_of_that_name(tmp_path, rgb_run, **_):
    """Killed before any mask landed; the user then saved a mask of their own under an output's
    name: it was never recorded, so it is theirs."""
    images, out = killed_predict(tmp_path, rgb_run[3], nth=1)
    Image.fromarray(np.zeros((40, 56), np.uint8)).save(out / "img03.png")
    return Case(predict_args(rgb_run[3], images, out, "--overwrite"), ("img03.png", "never replaced"))


def case_kill_mid_object_files_then_a_corrected_object_table(tmp_path, rgb_run, **_):
    images, out = many_images(tmp_path, 6), tmp_path / "pred"
    killed(predict_args(rgb_run[3], images, out, "--instances", "--workers", "0"), ".csv", 3)
    (out / "img00_objects.csv").write_text("id,area\n1,40\n")  # counted by hand
    return Case(predict_args(rgb_run[3], images, out, "--instances", "--overwrite"), ("img00_objects.csv", "changed"))


CASES = cases_of(globals(), {})


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused(name, tmp_path, rgb_run, monkeypatch, capsys):
    refused(CASES[name], tmp_path, rgb_run, monkeypatch, capsys)
