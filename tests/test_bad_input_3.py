"""The third bad-input battery (issue 20): 60 more things a careless or unlucky user tried, none of
them among the first two batteries' cases. Same form: exit code 2, one line naming the file or
option and the fix, no traceback; every file that existed before the command (the user's data,
configs and finished runs under tmp_path and the shared model's folder) is byte-for-byte
unchanged after it (hashed)."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import tifffile
from PIL import Image
from synthetic import assert_one_line_error, run_cli
from test_bad_input import Case, data, train_args  # noqa: F401  (the sections below use them)
from test_bad_input_2 import assert_untouched, finished_run, nothing_in, snapshot, unchanged  # noqa: F401

# ---- run folders: a user's folder is never emptied or overwritten ----


def user_folder(tmp_path, files: dict[str, bytes]):
    out = tmp_path / "out"
    out.mkdir()
    for name, content in files.items():
        (out / name).write_bytes(content)
    return out


USER_FILES = {
    "config.json": b'{"mine": true}\n',
    "metrics.csv": b"week,sales\n1,3\n",
    ".notes.tmp": b"draft",
    ".report.tmpl": b"<html>{{ mine }}</html>",
    "README.txt": b"my folder",
}


def case_train_into_a_folder_of_the_users_files(tmp_path, **_):
    images, masks = data(tmp_path)
    out = user_folder(tmp_path, USER_FILES)
    return Case(train_args(images, masks, out), ("did not write", "new or empty --out"), unchanged(out))


def case_train_into_a_folder_with_only_a_dot_file(tmp_path, **_):
    images, masks = data(tmp_path)
    out = user_folder(tmp_path, {".notes.tmp": b"draft"})
    return Case(train_args(images, masks, out), (".notes.tmp", "did not write"), unchanged(out))


def case_train_into_a_folder_holding_a_temporary_shaped_file(tmp_path, **_):
    images, masks = data(tmp_path)
    out = user_folder(tmp_path, {".last.abcd1234.tmp.pt": b"not ours: the folder is not a run's"})
    return Case(train_args(images, masks, out), (".last.abcd1234.tmp.pt", "did not write"), unchanged(out))


def case_train_into_the_data_folders_parent(tmp_path, **_):
    images, masks = data(tmp_path)
    return Case(train_args(images, masks, tmp_path / "data"), ("did not write", "choose a new or empty --out"))


def case_train_into_a_killed_runs_folder_the_user_added_to(tmp_path, **_):
    from unetkit.train.run_folder import MARKER

    images, masks = data(tmp_path)
    out = user_folder(tmp_path, {MARKER: b'{"written_by": "unetkit train"}', "config.json": b"{}", "notes.txt": b"x"})
    return Case(train_args(images, masks, out), ("notes.txt", "did not write"), unchanged(out))


def case_resume_into_a_folder_of_the_users_files(tmp_path, **_):
    first = finished_run(tmp_path, "first")
    out = user_folder(tmp_path, {"metrics.csv": b"mine\n"})
    return Case(
        ["train", "--resume", first / "last.pt", "--out", out, "--epochs", "2", "--no-progress"],
        ("metrics.csv", "did not write"),
        unchanged(out, first),
    )


# ---- predict: --overwrite replaces only what predict wrote ----


def predict_args(checkpoint, source, out, *extra):
    return ["predict", "--checkpoint", checkpoint, source, "--out", out, "--no-progress", *extra]


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


def run_cli_quiet(args):
    from unetkit.cli import main

    return main([str(a) for a in args])


# ---- pixels: one reading rule, nothing dropped in silence ----


def two_sample_tiff(path, marked_alpha=False):
    pixels = np.random.default_rng(0).integers(0, 255, (48, 48, 2), dtype=np.uint8)
    tifffile.imwrite(
        path, pixels, photometric="minisblack", planarconfig="contig", extrasamples=[2] if marked_alpha else [0]
    )


def replace_image(tmp_path, write, *extra):
    images, masks = data(tmp_path)
    (images / "img01.png").unlink()
    write(images / "img01.tif")
    needles = ("img01.tif has 2 channels", "marks it as alpha", "same channels")  # a set of RGB images and one of 2
    return Case(train_args(images, masks, tmp_path / "run", *extra), needles)


def case_two_sample_tiff_not_marked_alpha(tmp_path, **_):
    return replace_image(tmp_path, two_sample_tiff)


def case_two_channel_imagej_tiff(tmp_path, **_):
    def write(path):
        pixels = np.random.default_rng(0).integers(0, 255, (2, 48, 48), dtype=np.uint8)
        tifffile.imwrite(path, pixels, imagej=True, metadata={"axes": "CYX"})

    return replace_image(tmp_path, write)


def case_two_channel_tiff_at_predict(tmp_path, rgb_run, **_):
    _root, _images, _masks, checkpoint = rgb_run
    two_sample_tiff(tmp_path / "two.tif")
    out = tmp_path / "pred"
    needles = ("two.tif", "2 channel(s)", "trained on 3-channel images")
    return Case(predict_args(checkpoint, tmp_path / "two.tif", out), needles, nothing_in(out))


def rgb_nir(path):
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 4), dtype=np.uint8)
    tifffile.imwrite(path, pixels, photometric="rgb", extrasamples=[0], tile=(16, 16))


@pytest.mark.parametrize("mode", ["off", "on"])
def test_rgb_nir_is_refused_alike_in_memory_and_out_of_core(rgb_run, tmp_path, capsys, mode):
    """The two paths share one pixel rule (data.io.PixelRule): out of core NIR was dropped. Four
    channels are data now, and an RGB model refuses them in both paths before writing anything."""
    rgb_nir(tmp_path / "nir.tif")
    out = tmp_path / "pred"
    code, _, err = run_cli(capsys, *predict_args(rgb_run[3], tmp_path / "nir.tif", out, "--out-of-core", mode))
    assert_one_line_error(code, err, "nir.tif", "4 channel(s)", "trained on 3-channel images")
    assert not out.exists() or not any(out.iterdir())


def case_rgb_nir_tiff_out_of_core(tmp_path, rgb_run, **_):
    rgb_nir(tmp_path / "nir.tif")
    out = tmp_path / "pred"
    args = predict_args(rgb_run[3], tmp_path / "nir.tif", out, "--out-of-core", "on")
    return Case(args, ("nir.tif", "4 channel(s)", "trained on 3-channel images"), nothing_in(out))


def test_a_second_sample_marked_alpha_is_dropped_in_both_paths(tmp_path):
    from unetkit.data import read_image
    from unetkit.inference.slide.large_tiff import band_image, opened_pixels

    two_sample_tiff(tmp_path / "la.tif", marked_alpha=True)
    whole = read_image(tmp_path / "la.tif")
    assert whole.shape == (48, 48, 1)
    with opened_pixels(tmp_path / "la.tif") as (pixels, rule):
        assert np.array_equal(band_image(pixels, 0, 48, rule), whole)


def case_resume_a_copied_checkpoint_among_the_users_files(tmp_path, **_):
    """A last.pt copied into a folder of the user's files: resuming there wrote the run's files over theirs."""
    first = finished_run(tmp_path, "first")
    folder = user_folder(tmp_path, {"metrics.csv": b"mine\n", "config.json": b'{"mine": 1}', "notes.txt": b"x"})
    (folder / "last.pt").write_bytes((first / "last.pt").read_bytes())
    args = ["train", "--resume", folder / "last.pt", "--epochs", "2", "--no-progress"]
    return Case(args, ("did not mark as a run folder", "--out NEW_FOLDER"), unchanged(folder))


def case_json_onto_predicts_manifest(tmp_path, rgb_run, **_):
    """Replacing predict's own manifest with a report stranded the folder (--overwrite refused after)."""
    from unetkit.predict import MANIFEST

    _root, images, masks, checkpoint = rgb_run
    out = tmp_path / "pred"
    assert run_cli_quiet(predict_args(checkpoint, images, out)) == 0
    args = ["evaluate", "--checkpoint", checkpoint, "--images", images, "--masks", masks, "--json", out / MANIFEST]
    return Case([*args, "--no-progress"], (MANIFEST, "did not write it"), unchanged(out))


def test_cleanup_takes_only_mkstemp_shaped_temporaries(tmp_path, capsys):
    """A user's `.last.mycopy.tmp.pt` in the run folder is not a temporary unetkit made (8 random characters)."""
    out = finished_run(tmp_path, "run")
    mine = out / ".last.mycopy.tmp.pt"
    mine.write_bytes(b"my copy")
    code, _, err = run_cli(capsys, "train", "--resume", out / "last.pt", "--epochs", "2", "--no-progress")
    assert code == 0, err
    assert mine.read_bytes() == b"my copy"


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


def case_resume_given_the_run_folder(tmp_path, rgb_run, **_):
    folder = rgb_run[3].parent
    return Case(["train", "--resume", folder, "--epochs", "2"], ("is a folder", "last.pt"))


def case_json_naming_a_folder(tmp_path, rgb_run, **_):
    _root, images, masks, checkpoint = rgb_run
    target = tmp_path / "scores.json"
    target.mkdir()
    args = ["evaluate", "--checkpoint", checkpoint, "--images", images, "--masks", masks, "--json", target]
    return Case([*args, "--no-progress"], ("scores.json", "is a folder", "file name"))


def case_config_given_the_runs_config_json(tmp_path, rgb_run, **_):
    config = rgb_run[3].parent / "config.json"
    return Case(["train", "--config", config, "--out", tmp_path / "again"], ("config.json", "config.toml"))


def test_a_torch_checkpoint_named_safetensors_predicts(rgb_run, tmp_path, capsys):
    """The content decides the format both ways (torch.load took the name .safetensors as the format)."""
    renamed = tmp_path / "pt_as.safetensors"
    renamed.write_bytes(rgb_run[3].read_bytes())
    code, _, err = run_cli(capsys, *predict_args(renamed, rgb_run[1], tmp_path / "o"))
    assert code == 0, err


def test_a_run_resumed_into_a_new_folder_takes_its_best_checkpoint(tmp_path, capsys):
    first = finished_run(tmp_path, "first")
    code, _, err = run_cli(capsys, "train", "--resume", first / "last.pt", "--out", tmp_path / "more", "--epochs", "2")
    assert code == 0, err
    assert (tmp_path / "more" / "best.pt").is_file() and (first / "best.pt").is_file()


# ---- files and names ----


def case_dangling_symlink_image(tmp_path, **_):
    images, masks = data(tmp_path)
    (images / "img01.png").unlink()
    (images / "img01.png").symlink_to(tmp_path / "moved" / "img01.png")
    return Case(train_args(images, masks, tmp_path / "run"), ("img01.png", "symbolic link", "does not exist"))


def case_animated_gif_mask(tmp_path, **_):
    images, masks = data(tmp_path)
    frames = [Image.fromarray(np.full((48, 48), v, np.uint8)).convert("P") for v in (0, 255)]
    (masks / "img01.png").unlink()
    frames[0].save(masks / "img01.gif", save_all=True, append_images=frames[1:])
    return Case(train_args(images, masks, tmp_path / "run"), ("img01.gif", "2 frames", "each frame"))


def case_sixteen_bit_instance_masks_turned_off(tmp_path, **_):
    """Detected as instance masks since issue 21; with --no-instance-masks the message names the cause
    (it said "a photo or JPEG-compressed mask")."""
    images, masks = data(tmp_path)
    rng = np.random.default_rng(0)
    for index, mask in enumerate(sorted(masks.iterdir())):
        labels = np.zeros((48, 48), np.uint16)
        for k in range(30):
            y, x = rng.integers(0, 44, 2)
            labels[y : y + 3, x : x + 3] = 1 + index * 30 + k
        mask.unlink()
        tifffile.imwrite(mask.with_suffix(".tif"), labels)
    args = train_args(images, masks, tmp_path / "run", "--no-instance-masks")
    return Case(args, ("instance masks", "--instance-masks"))


def test_carvana_gif_masks_train(tmp_path, capsys):
    images, masks = data(tmp_path)
    for mask in sorted(masks.iterdir()):
        Image.open(mask).convert("P").save(masks / f"{mask.stem}_mask.gif")
        mask.unlink()
    code, _, err = run_cli(capsys, *train_args(images, masks, tmp_path / "run", "--mask-suffix", "_mask"))
    assert code == 0, err


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


def test_resume_in_place_keeps_the_users_files_beside_the_run(tmp_path, capsys):
    out = finished_run(tmp_path, "run")
    for name, content in USER_FILES.items():
        if not (out / name).exists():
            (out / name).write_bytes(content)
    before = {name: (out / name).read_bytes() for name in (".notes.tmp", ".report.tmpl", "README.txt")}
    code, _, err = run_cli(capsys, "train", "--resume", out / "last.pt", "--epochs", "2", "--no-progress")
    assert code == 0, err
    assert {name: (out / name).read_bytes() for name in before} == before


def test_a_killed_runs_folder_is_reused_and_its_temporaries_removed(tmp_path, capsys):
    from unetkit.train.run_folder import MARKER

    images, masks = data(tmp_path)
    out = user_folder(tmp_path, {MARKER: b"{}", "config.json": b"{}", ".metrics.k3j2h1ab.tmp.csv": b"half"})
    code, text, err = run_cli(capsys, *train_args(images, masks, out))
    assert code == 0, err
    assert "removed 1 temporary file" in text and not (out / ".metrics.k3j2h1ab.tmp.csv").exists()


# ---- checkpoints: one validation for every format ----

DROP = object()  # bad_checkpoint(header={key: DROP}) removes the key


def bad_checkpoint(tmp_path, rgb_run, name, edit=None, header=None):
    """rgb_run's best.pt, edited (`edit(state)`), saved as `name`: torch.save unless the name ends in
    .safetensors (the export's own writer). `header`: the safetensors metadata's JSON, as text or as
    keys to change (DROP: remove)."""
    import json

    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from unetkit.models.safetensors_file import METADATA_KEY, save_safetensors
    from unetkit.train import load_checkpoint

    state = load_checkpoint(rgb_run[3])
    if edit:
        edit(state)
    path = tmp_path / name
    if not name.endswith(".safetensors"):
        torch.save(state, path)
        return path
    save_safetensors(state, path)
    if header is not None:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads(handle.metadata()[METADATA_KEY])
        if isinstance(header, dict):
            meta.update(header)
        text = header if isinstance(header, str) else json.dumps({k: v for k, v in meta.items() if v is not DROP})
        save_file(load_file(str(path)), str(path), metadata={METADATA_KEY: text})
    return path


def predict_case(tmp_path, rgb_run, checkpoint, *needles):
    """predict with `checkpoint` is refused naming it, and writes nothing."""
    out = tmp_path / "pred"
    args = ["predict", "--checkpoint", checkpoint, rgb_run[1], "--out", out, "--no-progress", "--backend", "torch"]
    return Case(args, (checkpoint.name, *needles), nothing_in(out))


def preprocess(**values):
    return lambda state: state["preprocess"].update(values)


def case_safetensors_with_zero_std(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "w.safetensors", preprocess(std=[0.0, 0.2, 0.2]))
    return predict_case(tmp_path, rgb_run, path, "std must be above 0")


def case_safetensors_with_nan_mean(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "w.safetensors", preprocess(mean=[float("nan"), 0.5, 0.5]))
    return predict_case(tmp_path, rgb_run, path, "finite")


def case_safetensors_lacking_preprocess(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "w.safetensors", header={"preprocess": DROP})
    return predict_case(tmp_path, rgb_run, path, "lacks preprocess", "damaged or was edited")


def case_safetensors_metadata_cut_short(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "w.safetensors", header='{"format": "unetkit-weights-v1", "model')
    return predict_case(tmp_path, rgb_run, path, "no unetkit metadata", "export")


def case_safetensors_metadata_with_null_model_args(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "w.safetensors", header={"model_args": None})
    return predict_case(tmp_path, rgb_run, path, "model_args", "malformed")


def case_safetensors_mask_values_as_a_list(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "w.safetensors", header={"mask_values": [0, 255]})
    return predict_case(tmp_path, rgb_run, path, "mask_values", "malformed")


def case_safetensors_binary_is_a_word(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "w.safetensors", header={"binary": "yes"})
    return predict_case(tmp_path, rgb_run, path, "binary", "not true or false")


def case_safetensors_truncated(tmp_path, rgb_run, **_):
    whole = bad_checkpoint(tmp_path, rgb_run, "whole.safetensors").read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(whole[: len(whole) // 2])
    return predict_case(tmp_path, rgb_run, path, "not a readable safetensors file")


def case_safetensors_with_an_extra_tensor(tmp_path, rgb_run, **_):
    import torch

    path = bad_checkpoint(tmp_path, rgb_run, "w.safetensors", lambda state: state["model"].update(extra=torch.ones(2)))
    return predict_case(tmp_path, rgb_run, path, "do not fit", "extra")


def case_safetensors_named_pt_with_zero_std(tmp_path, rgb_run, **_):
    """The content decides the format: a safetensors file named .pt is checked as one, not called pickle."""
    exported = bad_checkpoint(tmp_path, rgb_run, "w.safetensors", preprocess(std=[0.2, 0.0, 0.2]))
    path = tmp_path / "model.pt"
    path.write_bytes(exported.read_bytes())
    return predict_case(tmp_path, rgb_run, path, "std must be above 0")


def case_mask_values_beyond_the_model_outputs(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "edited.pt", lambda s: s["mask_values"].update(values=[0, 128, 255]))
    return predict_case(tmp_path, rgb_run, path, "mask values [0, 128, 255]", "1 output channel")


def case_safetensors_softmax_flag_on_a_one_logit_model(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "w.safetensors", lambda state: state.update(binary=False))
    return predict_case(tmp_path, rgb_run, path, "do not fit", "one output per value")


def case_preprocess_of_one_channel_on_an_rgb_model(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "edited.pt", preprocess(in_channels=1, mean=[0.5], std=[0.2]))
    return predict_case(tmp_path, rgb_run, path, "3 input channel(s)", "one mean and std per channel")


def case_uppercase_pt_with_a_negative_scale(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "BEST.PT", preprocess(scale=-0.5))
    return predict_case(tmp_path, rgb_run, path, "preprocessing", "not usable")


def case_object_rule_with_an_unknown_field(tmp_path, rgb_run, **_):
    rule = {"seed": 0.9, "flood": 0.3, "radius": 3}
    path = bad_checkpoint(tmp_path, rgb_run, "edited.pt", lambda state: state.update(object_rule=rule))
    return predict_case(tmp_path, rgb_run, path, "object_rule", "radius")


def case_safetensors_object_rule_seed_above_one(tmp_path, rgb_run, **_):
    rule = {"seed": 1.5, "flood": 0.3, "smooth": 2.0, "min_size": 16, "max_hole": 16}
    path = bad_checkpoint(tmp_path, rgb_run, "w.safetensors", lambda state: state.update(object_rule=rule))
    _root, images, masks, _ = rgb_run
    args = ["evaluate", "--checkpoint", path, "--images", images, "--masks", masks, "--no-progress"]
    return Case(args, ("w.safetensors", "object_rule", "seed and flood between 0 and 1"))


def case_boundary_model_without_an_object_class(tmp_path, rgb_run, **_):
    """What earlier versions wrote for --boundary-class on objects no thicker than their edge: classes
    [0, 2], the edge taken for class 1; predict --instances with it ended in IndexError."""

    def edit(state):
        state["mask_values"] = {"values": [0, 2], "ignore_value": None, "instances": "boundary"}

    path = bad_checkpoint(tmp_path, rgb_run, "old.pt", edit)
    out = tmp_path / "pred"
    args = ["predict", "--checkpoint", path, rgb_run[1], "--out", out, "--instances", "--no-progress"]
    return Case(args, ("old.pt", "instance-mask classes are [0, 2]", "train the run again"), nothing_in(out))


def case_export_of_an_edited_checkpoint(tmp_path, rgb_run, **_):
    path = bad_checkpoint(tmp_path, rgb_run, "edited.pt", lambda s: s["mask_values"].update(values=[0, 1, 255]))
    target = tmp_path / "shared.safetensors"
    return Case(["export", "--checkpoint", path, "--safetensors", target], ("edited.pt", "do not fit"), absent(target))


def absent(path):
    def check() -> None:
        assert not path.exists(), f"a refused command wrote {path}"

    return check


# ---- report and export ----


def users_file(tmp_path, name, content=b"the user's own file\n"):
    path = tmp_path / "mine" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    return path


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


def test_outputs_unetkit_wrote_are_replaced(rgb_run, tmp_path, capsys):
    """The same commands onto their own earlier outputs just work (their content says who wrote them)."""
    _root, images, masks, checkpoint = rgb_run
    target = tmp_path / "scores.json"
    evaluate = ["evaluate", "--checkpoint", checkpoint, "--images", images, "--masks", masks, "--json", target]
    for _ in range(2):
        code, _, err = run_cli(capsys, *evaluate, "--no-progress")
        assert code == 0, err
    export = ["export", "--checkpoint", checkpoint, "--safetensors", tmp_path / "w.safetensors"]
    for _ in range(2):
        code, _, err = run_cli(capsys, *export)
        assert code == 0, err


def run_copy(tmp_path, rgb_run):
    """A copy of rgb_run's run folder (config.json, metrics.csv, best.pt) to edit."""
    import shutil

    shutil.copytree(rgb_run[0] / "run", tmp_path / "run")
    return tmp_path / "run"


def report_case(run, *needles):
    def no_report() -> None:
        assert not (run / "report.html").exists(), "a refused report was written"

    return Case(["report", run], needles, no_report)


def case_report_on_a_config_json_cut_short(tmp_path, rgb_run, **_):
    run = run_copy(tmp_path, rgb_run)
    text = (run / "config.json").read_text()
    (run / "config.json").write_text(text[: len(text) // 2])
    return report_case(run, "config.json", "not readable JSON", "restore")


def case_report_on_a_config_json_that_is_a_list(tmp_path, rgb_run, **_):
    run = run_copy(tmp_path, rgb_run)
    (run / "config.json").write_text('["images", "masks"]\n')
    return report_case(run, "config.json", "not a run's options")


def case_report_on_a_config_json_with_a_number_for_a_folder(tmp_path, rgb_run, **_):
    run = run_copy(tmp_path, rgb_run)
    text = (run / "config.json").read_text()
    (run / "config.json").write_text(text.replace('"val_images": null', '"val_images": 5', 1))
    return report_case(run, "config.json", "val_images", "paths or null")


def case_report_on_a_metrics_csv_with_a_word(tmp_path, rgb_run, **_):
    run = run_copy(tmp_path, rgb_run)
    header, first, *rest = (run / "metrics.csv").read_text().splitlines()
    cells = first.split(",")
    cells[1] = "n/a"  # train_loss
    (run / "metrics.csv").write_text("\n".join([header, ",".join(cells), *rest]) + "\n")
    return report_case(run, "metrics.csv", "line 2", "not a row of 7 numbers")


def case_report_on_a_metrics_csv_without_a_column(tmp_path, rgb_run, **_):
    run = run_copy(tmp_path, rgb_run)
    (run / "metrics.csv").write_text("epoch,loss\n1,0.5\n")
    return report_case(run, "metrics.csv", "no column train_loss", "restore the header")


def case_report_on_a_metrics_csv_cut_mid_row(tmp_path, rgb_run, **_):
    run = run_copy(tmp_path, rgb_run)
    text = (run / "metrics.csv").read_text().rstrip("\n")
    (run / "metrics.csv").write_text(text[: text.rindex(",") - 3])
    return report_case(run, "metrics.csv", "line 2", "edited or cut")


def case_bioimageio_name_with_letters_beyond_ascii(tmp_path, rgb_run, **_):
    package = tmp_path / "model.zip"
    args = ["export", "--checkpoint", rgb_run[3], "--bioimageio", package, "--name", "Zellkerne Größe"]
    return Case(args, ("--name 'Zellkerne Größe'", "ASCII letters", "e.g. --name 'Zellkerne Gro-e'"), absent(package))


def case_bioimageio_author_with_a_slash(tmp_path, rgb_run, **_):
    package = tmp_path / "model.zip"
    args = ["export", "--checkpoint", rgb_run[3], "--bioimageio", package, "--author", "Lab A/B"]
    return Case(args, ("--author 'Lab A/B'", "cannot hold '/'"), absent(package))


# ---- configs and resume: paths, options and data ----


def config_file(tmp_path, text, name="run.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def resume_rgb_run(rgb_run, *extra):
    """Resume the shared run: every case here is refused before the run's folder is touched (hashed)."""
    return ["train", "--resume", rgb_run[0] / "run" / "last.pt", "--no-progress", *extra]


def case_resume_with_other_images_and_masks(tmp_path, rgb_run, **_):
    from synthetic import make_shapes

    images, masks = make_shapes(tmp_path / "other", count=4, prefix="other")
    args = resume_rgb_run(rgb_run, "--images", images, "--masks", masks, "--epochs", "2")
    return Case(args, (str(images), "none of this run's", "not the run's data", "without --resume"))


def case_resume_after_the_data_moved_without_saying_where(tmp_path, **_):
    run = finished_run(tmp_path, "run")
    (tmp_path / "run_data").rename(tmp_path / "moved")
    args = ["train", "--resume", run / "last.pt", "--epochs", "2", "--no-progress"]
    return Case(args, ("run_data", "folder is not there", "--images NEW_FOLDER"), unchanged(run))


def case_resume_with_another_depth(rgb_run, **_):
    return Case(resume_rgb_run(rgb_run, "--depth", "3"), ("--depth 3", "keeps the options it started", "depth = 2"))


def case_resume_with_other_mask_values(rgb_run, **_):
    return Case(resume_rgb_run(rgb_run, "--mask-values", "0,128,255"), ("--mask-values 0,128,255", "leave it out"))


def case_resume_with_multiclass(rgb_run, **_):
    return Case(resume_rgb_run(rgb_run, "--multiclass"), ("--multiclass", "binary = True", "without --resume"))


def case_resume_with_no_augment(rgb_run, **_):
    return Case(resume_rgb_run(rgb_run, "--no-augment"), ("--no-augment", "augment = True"))


def case_resume_with_a_config_file_that_changes_the_lr(tmp_path, rgb_run, **_):
    more = config_file(tmp_path, "epochs = 3\nlr = 0.5\n", "more.toml")
    return Case(resume_rgb_run(rgb_run, "--config", more), ("more.toml: lr = 0.5", "keeps the options"))


def case_resume_with_val_images_on_a_run_that_split_its_own(tmp_path, rgb_run, **_):
    _root, images, masks, _checkpoint = rgb_run
    args = resume_rgb_run(rgb_run, "--val-images", images, "--val-masks", masks)
    return Case(args, ("--val-images", "val_images = None", "keeps the options"))


def case_config_relative_paths_are_the_files_not_the_current_folders(tmp_path, monkeypatch, **_):
    data(tmp_path)  # tmp_path/data/images: what the current folder would find
    (tmp_path / "configs").mkdir()
    config = config_file(tmp_path / "configs", 'images = "data/images"\nmasks = "data/masks"\n')
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    return Case(["train", "--config", config, "--out", out], ("configs/data/images", "not found"), nothing_in(out))


def case_binary_config_on_multiclass_data(tmp_path, **_):
    images, masks = data(tmp_path, values=(0, 128, 255))
    config = config_file(tmp_path, "binary = true\n")
    out = tmp_path / "run"
    args = train_args(images, masks, out, "--config", config)
    return Case(args, ("binary = true", "two values", "[0, 128, 255]", "remove binary from the config file"))


def case_yaml_key_given_twice(tmp_path, **_):
    pytest.importorskip("yaml")
    config = config_file(tmp_path, "lr: 0.001\nepochs: 3\nlr: 0.1\n", "run.yaml")
    return Case(["train", "--config", config], ("run.yaml", "'lr' is given twice", "lines 1 and 3"))


def case_yaml_indented_with_a_tab(tmp_path, **_):
    pytest.importorskip("yaml")
    config = config_file(tmp_path, "lr: 0.001\n\tepochs: 3\n", "run.yaml")
    return Case(["train", "--config", config], ("run.yaml", "line 2", "spaces, not tabs"))


def case_config_key_with_a_typo(tmp_path, **_):
    config = config_file(tmp_path, "batch-sise = 2\n")
    return Case(["train", "--config", config], ("run.toml", "'batch-sise'", "did you mean batch-size?"))


def case_config_option_spelled_two_ways(tmp_path, **_):
    config = config_file(tmp_path, "batch-size = 2\nbatch_size = 4\n")
    return Case(["train", "--config", config], ("run.toml", "batch-size and batch_size are the same option"))


def case_config_time_in_an_unknown_unit(tmp_path, **_):
    config = config_file(tmp_path, 'time = "10 weeks"\n')
    return Case(["train", "--config", config], ("run.toml", 'time = "10 weeks"', "90s, 10m or 1.5h"))


def case_config_switch_written_as_text(tmp_path, **_):
    config = config_file(tmp_path, 'augment = "false"\n')
    return Case(["train", "--config", config], ("run.toml", 'augment = "false"', "true or false"))


def case_config_mask_values_with_a_word(tmp_path, **_):
    config = config_file(tmp_path, 'mask_values = "0,cells"\n')
    return Case(["train", "--config", config], ("run.toml", "mask_values", "integers like '0,255'"))


def case_val_images_are_the_training_images(tmp_path, **_):
    images, masks = data(tmp_path)
    out = tmp_path / "run"
    args = train_args(images, masks, out, "--val-images", images, "--val-masks", masks)
    return Case(args, ("img00.png", "also a training image", "leave --val-images/--val-masks out"), nothing_in(out))


def case_val_images_through_a_link_to_the_training_folder(tmp_path, **_):
    images, masks = data(tmp_path)
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "images").symlink_to(images, target_is_directory=True)
    (tmp_path / "val" / "masks").symlink_to(masks, target_is_directory=True)
    out = tmp_path / "run"
    args = train_args(images, masks, out, "--val-images", tmp_path / "val" / "images", "--val-masks", masks)
    return Case(args, ("val/images/img00.png", "also a training image"), nothing_in(out))


def case_val_masks_are_the_training_masks(tmp_path, **_):
    from synthetic import make_shapes

    images, masks = data(tmp_path)
    val_images, _ = make_shapes(tmp_path / "val", count=4, seed=5)  # the same names, other pictures
    out = tmp_path / "run"
    args = train_args(images, masks, out, "--val-images", val_images, "--val-masks", masks)
    return Case(args, ("img00.png", "validation mask is also a training mask"), nothing_in(out))


def case_val_masks_without_val_images(tmp_path, **_):
    images, masks = data(tmp_path)
    out = tmp_path / "run"
    return Case(train_args(images, masks, out, "--val-masks", masks), ("--val-masks needs --val-images",))


# ---- the battery ----


CASES = {name.removeprefix("case_"): function for name, function in globals().items() if name.startswith("case_")}


def test_the_three_batteries_hold_at_least_170_cases():
    import test_bad_input
    import test_bad_input_2

    assert len(test_bad_input.CASES) + len(test_bad_input_2.CASES) + len(CASES) >= 170


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_3(name, tmp_path, rgb_run, monkeypatch, capsys):
    case = CASES[name](tmp_path=tmp_path, rgb_run=rgb_run, monkeypatch=monkeypatch)
    before = snapshot(tmp_path, rgb_run[0])  # the user's files and finished runs
    capsys.readouterr()
    code, _out, err = run_cli(capsys, *case.args)
    assert_one_line_error(code, err, *case.needles)
    case.after()
    assert_untouched(before)


# ---- checkpoints, report and export: the same done right just works ----


def test_an_export_predicts_under_any_name_and_suffix_case(rgb_run, tmp_path, capsys):
    """M.SAFETENSORS that export wrote (predict refused it), the same file named model.pt (called unsafe
    pickle) and BEST.PT all predict best.pt's masks; none of them is changed."""
    import numpy as np
    from PIL import Image

    _root, images, _masks, checkpoint = rgb_run
    exported = tmp_path / "M.SAFETENSORS"
    assert run_cli(capsys, "export", "--checkpoint", checkpoint, "--safetensors", exported)[0] == 0
    (tmp_path / "model.pt").write_bytes(exported.read_bytes())
    (tmp_path / "BEST.PT").write_bytes(checkpoint.read_bytes())
    before = snapshot(tmp_path, rgb_run[0])
    predicted = []
    for source in (checkpoint, exported, tmp_path / "model.pt", tmp_path / "BEST.PT"):
        out = tmp_path / f"pred_{source.name}"
        args = ["predict", "--checkpoint", source, images / "img00.png", "--out", out, "--no-progress"]
        code, _out, err = run_cli(capsys, *args, "--backend", "torch", "--amp", "off")
        assert code == 0, err
        predicted.append(np.asarray(Image.open(out / "img00.png")))
    assert all(np.array_equal(mask, predicted[0]) for mask in predicted[1:])
    assert_untouched(before)


@pytest.mark.parametrize("target", ["boundary", "centres"])
def test_edge_targets_on_objects_no_thicker_than_their_edge(tmp_path, capsys, target):
    """Instance masks of 1-2 px wide objects are all edge: --instance-target boundary still trains
    classes 0/1/2 (the run ended in IndexError), centres 0/1/2/3, and predict --instances and
    evaluate run with its best.pt."""
    import numpy as np
    import tifffile
    from PIL import Image

    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for index in range(4):
        labels = np.zeros((40, 40), np.uint16)
        for k in range(1, 6):
            y, x = rng.integers(2, 32, 2)
            labels[y : y + 6, x : x + 1 + k % 2] = k
        Image.fromarray(np.where(labels > 0, 230, 40).astype(np.uint8)).save(images / f"i{index}.png")
        tifffile.imwrite(masks / f"i{index}.tif", labels)
    before = snapshot(images, masks)
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, *train_args(images, masks, run, "--instance-masks", "--instance-target", target))
    assert code == 0, err
    assert ("classes [0, 1, 2]" if target == "boundary" else "classes [0, 1, 2, 3]") in out
    predicted = tmp_path / "pred"
    code, _out, err = run_cli(capsys, "predict", "--checkpoint", run / "best.pt", images, "--out", predicted,
                              "--instances", "--no-progress", "--backend", "torch")  # fmt: skip
    assert code == 0, err
    assert (predicted / "i0_objects.tif").is_file()
    args = ["evaluate", "--checkpoint", run / "best.pt", "--images", images, "--masks", masks, "--no-progress"]
    code, out, err = run_cli(capsys, *args, "--backend", "torch")
    assert code == 0, err
    assert "adapted Rand error" in out
    assert_untouched(before)


def test_bioimageio_export_of_a_run_folder_with_a_dot_in_its_name(rgb_run, tmp_path, capsys):
    """The default name is made of the run folder's, `cells.v2`: bioimage.io names take no dot."""
    import zipfile

    pytest.importorskip("bioimageio.spec", reason="needs pip install 'unetkit[bioimageio]'")
    run = tmp_path / "cells.v2"
    run.mkdir()
    (run / "best.pt").write_bytes(rgb_run[3].read_bytes())
    before = snapshot(run)
    package = tmp_path / "model.zip"
    code, _out, err = run_cli(capsys, "export", "--checkpoint", run / "best.pt", "--bioimageio", package)
    assert code == 0, err
    with zipfile.ZipFile(package) as archive:
        assert "\nname: unetkit unet cells-v2\n" in archive.read("rdf.yaml").decode()
    assert_untouched(before)


def test_predictor_class_ids_take_an_8_bit_array_as_read_image_does(rgb_run):
    import numpy as np
    from PIL import Image

    from unetkit.data import read_image
    from unetkit.errors import UnetkitError
    from unetkit.inference import InferenceOptions, Predictor

    predictor = Predictor(rgb_run[3], amp="off", options=InferenceOptions(backend="torch"))
    path = rgb_run[1] / "img00.png"
    pixels = np.asarray(Image.open(path))
    assert pixels.dtype == np.uint8
    np.testing.assert_array_equal(predictor.class_ids(pixels), predictor.class_ids(read_image(path)))
    with pytest.raises(UnetkitError, match="an image array must be"):
        predictor.class_ids(np.array([["a", "b"]]))


def test_a_checkpoint_dict_given_in_python_is_checked_like_a_file(rgb_run):
    from unetkit.errors import UnetkitError
    from unetkit.inference import InferenceOptions, Predictor
    from unetkit.train import load_checkpoint

    state = load_checkpoint(rgb_run[3])
    state["object_rule"] = {"seed": "high"}
    with pytest.raises(UnetkitError, match="checkpoint: the checkpoint's object_rule"):
        Predictor(state, options=InferenceOptions(backend="torch"))


# ---- configs and resume: the same done right just works ----


def test_resume_after_the_data_moved_with_the_runs_own_options(tmp_path, capsys):
    """A moved data folder is named on resume; the run's own config.toml and options at the run's
    values are no change, so they are not refused."""
    import json

    from unetkit.train import load_checkpoint

    run = finished_run(tmp_path, "run")
    split = load_checkpoint(run / "last.pt")["split"]
    (tmp_path / "run_data").rename(tmp_path / "moved")
    images, masks = tmp_path / "moved" / "images", tmp_path / "moved" / "masks"
    resume = ["train", "--resume", run / "last.pt", "--config", run / "config.toml", "--depth", "2"]
    code, _, err = run_cli(capsys, *resume, "--images", images, "--masks", masks, "--epochs", "2")
    assert code == 0, err
    state = load_checkpoint(run / "last.pt")
    assert state["epoch"] == 2 and state["split"] == split
    assert json.loads((run / "config.json").read_text())["images"] == str(images)


def test_a_runs_config_toml_trains_again_from_any_folder(tmp_path, capsys, monkeypatch):
    import json
    import tomllib

    from synthetic import TINY_TRAIN, make_shapes

    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    make_shapes(tmp_path / "work" / "base", count=4)
    code, _, err = run_cli(
        capsys, "train", "--images", "base/images", "--masks", "base/masks", "--out", "run", *TINY_TRAIN
    )
    assert code == 0, err
    saved = tomllib.loads((tmp_path / "work" / "run" / "config.toml").read_text())
    assert saved["images"] == str(tmp_path / "work" / "base" / "images")  # absolute
    assert json.loads((tmp_path / "work" / "run" / "config.json").read_text())["out"] == str(tmp_path / "work" / "run")
    (tmp_path / "elsewhere").mkdir()
    make_shapes(tmp_path / "elsewhere" / "base", count=3, prefix="decoy")  # what `base/images` is there
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, _, err = run_cli(capsys, "train", "--config", tmp_path / "work" / "run" / "config.toml", "--out", "again")
    assert code == 0, err
    resolved = json.loads((tmp_path / "elsewhere" / "again" / "config.json").read_text())["resolved"]
    assert sorted(resolved["train_images"] + resolved["val_images"]) == [f"img0{i}.png" for i in range(4)]
    # The README's `unetkit report RUN_DIR` from another folder: the run's validation images by their stored paths.
    code, _, err = run_cli(capsys, "report", tmp_path / "work" / "run")
    assert code == 0, err
    assert "img0" in (tmp_path / "work" / "run" / "report.html").read_text()


def test_a_config_files_time_and_relative_paths_read_as_on_the_command_line(tmp_path, capsys, monkeypatch):
    import json

    from synthetic import make_shapes

    make_shapes(tmp_path / "project" / "d", count=4)
    (tmp_path / "project" / "run.toml").write_text(
        'images = "d/images"\nmasks = "d/masks"\ntime = "10m"\nepochs = 1\nbase-channels = 4\ndepth = 2\n'
        'patch-size = 32\npatches-per-image = 1\nprogress = false\namp = "off"\nreport = false\n'
    )
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    code, _, err = run_cli(capsys, "train", "--config", "../project/run.toml", "--out", "run")
    assert code == 0, err
    config = json.loads((tmp_path / "other" / "run" / "config.json").read_text())
    assert config["time"] == 600.0 and config["images"] == str(tmp_path / "project" / "d" / "images")


def test_train_config_takes_python_types_and_says_what_text_would_mean(tmp_path):
    import numpy as np

    from unetkit.errors import UnetkitError
    from unetkit.train import TrainConfig, train
    from unetkit.train.config_file import config_to_toml

    images, masks = data(tmp_path)

    def config(**values):
        return TrainConfig(images=str(images), masks=str(masks), out=str(tmp_path / "run"), **values)

    with pytest.raises(
        UnetkitError, match=r"mask_values='0,255' is not a list of whole numbers.*mask_values=\[0, 255\]"
    ):
        train(config(mask_values="0,255"), log=lambda _: None)
    with pytest.raises(UnetkitError, match=r"mask_values='05' .*write mask_values=\[5\]"):  # not [0, 5]
        train(config(mask_values="05"), log=lambda _: None)
    with pytest.raises(UnetkitError, match="epochs=True is not a whole number"):
        config(epochs=True).validate()
    numpy_numbers = config(epochs=np.int64(3), lr=np.float32(0.5), mask_values=[np.uint8(0), np.uint8(255)])
    numpy_numbers.validate()  # numpy's numbers are numbers, stored as Python's
    assert type(numpy_numbers.epochs) is int and [type(v) for v in numpy_numbers.mask_values] == [int, int]
    assert "mask_values = [0, 255]" in config_to_toml(numpy_numbers)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("typed", [["--channel-axis", "C"], ["--plane-axis", "Z", "--channel-axis", "S"]])
def test_axis_options_for_folders_without_a_tiff_are_refused_not_dropped(rgb_run, tmp_path, capsys, typed):
    root, images, masks, checkpoint = rgb_run
    before = {path: path.read_bytes() for path in [*images.iterdir(), *masks.iterdir()]}
    commands = [
        ["train", "--images", images, "--masks", masks, "--out", tmp_path / "run", "--epochs", "1"],
        ["evaluate", "--checkpoint", checkpoint, "--images", images, "--masks", masks, "--no-progress"],
        ["predict", "--checkpoint", checkpoint, "--out", tmp_path / "pred", images],
    ]
    for command in commands:
        code, _, err = run_cli(capsys, *command, *typed)
        assert_one_line_error(code, err, str(images), typed[1], "none of the 5 image(s) is a TIFF")
    code, text, _ = run_cli(capsys, "check", "--images", images, "--masks", masks, *typed)
    assert code == 1 and "none of the 5 image(s) is a TIFF" in text
    assert not (tmp_path / "run").exists() and not (tmp_path / "pred").exists()
    assert {path: path.read_bytes() for path in before} == before
