"""The second bad-input battery (issue 11): what a careless or unlucky user does that the first
battery (test_bad_input.py) did not try. Same form: exit code 2, one line naming the file or
option and the fix, no traceback; and for every destructive case, the user's files are
byte-for-byte unchanged (hashed before and after)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from synthetic import assert_one_line_error, make_shapes, run_cli
from test_bad_input import Case, data, train_args

import unetkit.models.checkpoint
from unetkit.runtime.folder_lock import LOCK_NAME
from unetkit.train import load_checkpoint


def snapshot(*folders: Path) -> dict[Path, str]:
    """sha256 of every file under `folders`."""
    return {
        path: hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def unchanged(*folders: Path) -> Callable[[], None]:
    before = snapshot(*folders)

    def check() -> None:
        assert snapshot(*folders) == before, f"files under {folders} changed"

    return check


def nothing_in(out: Path) -> Callable[[], None]:
    def check() -> None:
        assert not out.exists() or not any(out.iterdir()), f"{out} was written by a refused command"

    return check


def finished_run(tmp_path: Path, name: str) -> Path:
    images, masks = make_shapes(tmp_path / f"{name}_data", count=4)
    out = tmp_path / name
    assert run_cli_quiet(train_args(images, masks, out)) == 0
    return out


def run_cli_quiet(args: list[object]) -> int:
    from unetkit.cli import main

    return main([str(a) for a in args])


# ---- predict never destroys the user's files ----


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


# ---- training never writes into a foreign or busy run folder ----


def case_resume_into_another_finished_run(tmp_path, **_):
    first, second = finished_run(tmp_path, "first"), finished_run(tmp_path, "second")
    return Case(
        ["train", "--resume", first / "last.pt", "--out", second, "--epochs", "2", "--no-progress"],
        ("another run's checkpoint", "own folder"),
        unchanged(first, second),
    )


def case_second_training_into_a_busy_run_folder(tmp_path, **_):
    images, masks = data(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(f"{os.getppid()}\n")  # a live process holds the folder
    return Case(train_args(images, masks, out), ("another training", "is writing to this folder", "--out"))


def case_class_weights_of_the_wrong_length(tmp_path, **_):
    images, masks = data(tmp_path)
    out = tmp_path / "run"
    return Case(
        train_args(images, masks, out, "--class-weights", "1,2,3"), ("--class-weights has 3", "one weight per class")
    )


# ---- pixels and layouts that used to be guessed in silence ----


def image_case(tmp_path, write, needles, name="img01"):
    """Replace one training image by what `write(path_stem)` writes; train must refuse it by name."""
    images, masks = data(tmp_path)
    (images / f"{name}.png").unlink()
    write(images / name)
    return Case(train_args(images, masks, tmp_path / "run"), needles)


def mask_case(tmp_path, write, needles, name="img01", extra=()):
    images, masks = data(tmp_path)
    (masks / f"{name}.png").unlink()
    write(masks / name)
    return Case(train_args(images, masks, tmp_path / "run", *extra), needles)


def case_nan_pixel_in_a_float_tiff(tmp_path, **_):
    def write(stem):
        pixels = np.random.default_rng(0).random((48, 48), dtype=np.float32)
        pixels[5, 7] = np.nan
        tifffile.imwrite(stem.with_suffix(".tif"), pixels)

    return image_case(tmp_path, write, ("img01.tif", "NaN or infinite", "fill them"))


def case_infinite_pixel_in_a_float_tiff(tmp_path, **_):
    def write(stem):
        pixels = np.zeros((48, 48), dtype=np.float32)
        pixels[0, 0] = np.inf
        tifffile.imwrite(stem.with_suffix(".tif"), pixels)

    return image_case(tmp_path, write, ("img01.tif", "NaN or infinite"))


def case_nan_pixel_at_predict(tmp_path, rgb_run, **_):
    _root, _images, _masks, checkpoint = rgb_run
    pixels = np.random.default_rng(0).random((40, 56, 3), dtype=np.float32)
    pixels[10, 10, 1] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", pixels, photometric="rgb")
    out = tmp_path / "pred"
    args = ["predict", "--checkpoint", checkpoint, tmp_path / "nan.tif", "--out", out, "--no-progress"]
    return Case(args, ("nan.tif", "NaN or infinite"), nothing_in(out))


def case_three_page_tiff_is_not_rgb(tmp_path, **_):
    """Three pages are a stack of three planes (never RGB), which needs a mask stack of three."""

    def write(stem):
        tifffile.imwrite(stem.with_suffix(".tif"), np.zeros((3, 48, 48), dtype=np.uint8), photometric="minisblack")

    return image_case(tmp_path, write, ("img01.png", "mask has 1 plane(s) but its image img01.tif has 3"))


def case_two_page_mask_tiff(tmp_path, **_):
    def write(stem):
        tifffile.imwrite(stem.with_suffix(".tif"), np.zeros((2, 48, 48), dtype=np.uint8), photometric="minisblack")

    return mask_case(tmp_path, write, ("img01.tif", "mask has 2 plane(s) but its image img01.png has 1"))


def case_four_channel_tiff_without_alpha(tmp_path, **_):
    def write(stem):
        four = np.zeros((48, 48, 4), dtype=np.uint8)
        tifffile.imwrite(stem.with_suffix(".tif"), four, photometric="rgb", extrasamples=["unspecified"])

    return image_case(tmp_path, write, ("img01.tif has 4 channels", "marks it as alpha", "same channels"))


def case_planar_four_channel_tiff_without_alpha(tmp_path, **_):
    def write(stem):
        four = np.zeros((4, 48, 48), dtype=np.uint8)
        tifffile.imwrite(
            stem.with_suffix(".tif"), four, photometric="rgb", planarconfig="separate", extrasamples=["unspecified"]
        )

    return image_case(tmp_path, write, ("img01.tif has 4 channels", "marks it as alpha", "same channels"))


def case_negative_mask_value(tmp_path, **_):
    def write(stem):
        mask = np.zeros((48, 48), dtype=np.int16)
        mask[:10] = -1
        tifffile.imwrite(stem.with_suffix(".tif"), mask)

    return mask_case(tmp_path, write, ("img01.tif", "-1 is outside 0..65535", "relabel"))


def case_mask_value_above_sixteen_bits(tmp_path, **_):
    images, masks = data(tmp_path)
    for path in list(masks.iterdir()):
        with Image.open(path) as mask:
            values = (np.array(mask) > 0).astype(np.uint32) * 70000
        path.unlink()
        tifffile.imwrite(path.with_suffix(".tif"), values)
    return Case(train_args(images, masks, tmp_path / "run"), ("70000 is outside 0..65535", "relabel"))


def case_mixed_one_bit_and_eight_bit_masks(tmp_path, **_):
    def write(stem):
        Image.fromarray(np.zeros((48, 48), dtype=bool)).save(stem.with_suffix(".png"))

    return mask_case(tmp_path, write, ("1-bit", "8-bit", "same bit depth"))


# ---- checkpoints and writes ----


def edited_checkpoint(tmp_path: Path, checkpoint: Path, **preprocess) -> Path:
    state = load_checkpoint(checkpoint)
    state["preprocess"] = {**state["preprocess"], **preprocess}
    edited = tmp_path / "edited.pt"
    torch.save(state, edited)
    return edited


def case_checkpoint_with_zero_std(tmp_path, rgb_run, **_):
    _root, images, _masks, checkpoint = rgb_run
    edited = edited_checkpoint(tmp_path, checkpoint, std=[0.0, 0.2, 0.2])
    out = tmp_path / "pred"
    return Case(
        ["predict", "--checkpoint", edited, images, "--out", out], ("edited.pt", "std must be above 0"), nothing_in(out)
    )


def case_checkpoint_with_nan_mean(tmp_path, rgb_run, **_):
    _root, images, _masks, checkpoint = rgb_run
    edited = edited_checkpoint(tmp_path, checkpoint, mean=[float("nan"), 0.5, 0.5])
    out = tmp_path / "pred"
    return Case(["predict", "--checkpoint", edited, images, "--out", out], ("edited.pt", "finite"), nothing_in(out))


def case_zip_bomb_checkpoint(tmp_path, rgb_run, **_):
    _root, images, _masks, _checkpoint = rgb_run
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"\0" * (32 * 2**20))  # 32 MiB of zeros in ~32 KiB
    return Case(["predict", "--checkpoint", bomb, images, "--out", tmp_path / "p"], ("bomb.pt", "unpacks to"))


def case_disk_full_while_saving_a_checkpoint(tmp_path, monkeypatch, **_):
    images, masks = data(tmp_path)
    out = tmp_path / "run"

    def full(*_args, **_kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file")

    monkeypatch.setattr(unetkit.models.checkpoint.torch, "save", full)

    def no_temporary_left() -> None:
        assert not [p for p in out.iterdir() if p.name.startswith(".") and ".tmp" in p.name]

    return Case(train_args(images, masks, out), ("best.pt", "cannot write", "disk has space"), no_temporary_left)


def case_disk_full_while_exporting_safetensors(tmp_path, rgb_run, monkeypatch, **_):
    import safetensors.torch

    def full(*_args, **_kwargs):
        raise safetensors.SafetensorError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    checkpoint = rgb_run[3]
    target = tmp_path / "w.safetensors"
    return Case(
        ["export", "--checkpoint", checkpoint, "--safetensors", target], ("w.safetensors", "cannot write", "No space")
    )


# ---- folders and config files ----


def case_images_and_masks_are_the_same_folder(tmp_path, **_):
    images, _masks = data(tmp_path)
    return Case(train_args(images, images, tmp_path / "run"), ("same folder", "own folder", "--mask-suffix"))


def case_config_file_not_text(tmp_path, **_):
    config = tmp_path / "run.toml"
    config.write_bytes(b"lr = 0.001\n\xff\xfe\xfa")
    return Case(["train", "--config", config], ("run.toml", "not UTF-8", "save it as UTF-8"))


def case_yaml_key_that_is_not_a_name(tmp_path, **_):
    pytest.importorskip("yaml")
    config = tmp_path / "run.yaml"
    config.write_text("1: 3\nlr: 0.001\n")
    return Case(["train", "--config", config], ("run.yaml", "key 1", "option name"))


# ---- outputs that would land on the user's data ----


def case_train_out_is_the_image_folder(tmp_path, **_):
    images, masks = data(tmp_path)
    return Case(train_args(images, masks, images), ("--out is the --images folder", "another --out"), unchanged(images))


def case_train_out_is_the_mask_folder(tmp_path, **_):
    images, masks = data(tmp_path)
    return Case(train_args(images, masks, masks), ("--out is the --masks folder",), unchanged(images, masks))


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


def case_evaluate_on_one_folder_of_images_and_masks(tmp_path, rgb_run, **_):
    _root, images, _masks, checkpoint = rgb_run
    args = ["evaluate", "--checkpoint", checkpoint, "--images", images, "--masks", images]
    return Case(args, ("same folder", "own folder"), unchanged(images))


# ---- option values ----


def bad_value(args: tuple[str, ...], *needles: str, command: str = "train"):
    """`command` with the options `args`, refused in one line containing the needles; nothing written."""

    def case(tmp_path, rgb_run, **_):
        if command == "train":
            images, masks = data(tmp_path)
            out = tmp_path / "run"
            return Case(train_args(images, masks, out, *args), needles, nothing_in(out))
        _root, images, _masks, checkpoint = rgb_run
        out = tmp_path / "pred"
        command_line = [command, "--checkpoint", checkpoint, images, "--out", out, *args, "--no-progress"]
        return Case(command_line, needles, nothing_in(out))

    return case


OPTION_CASES = {
    "seed_above_32_bits": bad_value(("--seed", "1099511627776"), "--seed", "0 to 4294967295"),
    "negative_seed": bad_value(("--seed=-5",), "--seed -5", "0 to 4294967295"),
    "ignore_value_of_1e11": bad_value(("--ignore-value", "100000000000"), "--ignore-value", "0 to 65535"),
    "huge_patch_size": bad_value(("--patch-size", "100000"), "--patch-size 100000", "at most 8192"),
    "huge_base_channels": bad_value(("--base-channels", "100000"), "--base-channels", "1 to 1024"),
    "huge_patches_per_image": bad_value(("--patches-per-image", "100000"), "--patches-per-image", "1 to 1000"),
    "lr_1e300": bad_value(("--lr", "1e300"), "--lr 1e+300", "at most 10"),
    "thousand_workers": bad_value(("--workers", "1000"), "--workers 1000", "0 to 64"),
    "scale_1e-6": bad_value(("--scale", "1e-6"), "--scale 1e-06", "between 1/64 and 16"),
    "huge_batch_size": bad_value(("--batch-size", "100000"), "--batch-size", "at most 4096"),
    "huge_class_weight": bad_value(("--class-weights", "1,1e9"), "--class-weights", "one per class"),
    "device_mps": bad_value(("--device", "mps"), "'mps'", "not supported"),
    "device_meta": bad_value(("--device", "meta"), "'meta'", "not supported"),
    "device_nonsense": bad_value(("--device", "gpu0"), "'gpu0'", "unknown device"),
    "ignore_value_equal_to_a_class": bad_value(
        ("--mask-values", "0,255", "--ignore-value", "255"), "--ignore-value 255", "would be dropped"
    ),
    "mask_values_out_of_order": bad_value(("--mask-values", "255,0"), "--mask-values 255,0", "increasing order"),
    "mask_value_minus_one": bad_value(("--mask-values=-1,0,255",), "-1 is outside 0..65535"),
    "threshold_above_one": bad_value(("--threshold", "2"), "--threshold 2", "between 0 and 1", command="predict"),
    "threshold_nan": bad_value(("--threshold", "nan"), "--threshold nan", "between 0 and 1", command="predict"),
    "threshold_negative": bad_value(("--threshold=-1",), "--threshold -1", "between 0 and 1", command="predict"),
    "threshold_one": bad_value(("--threshold", "1"), "--threshold 1", "between 0 and 1", command="predict"),
    # every numeric option has a range
    "min_epochs_zero": bad_value(("--time", "1m", "--min-epochs", "0"), "--min-epochs 0", "1 or more"),
    "patience_zero": bad_value(("--patience", "0"), "--patience 0", "1 or more"),
    "grad_clip_negative": bad_value(("--grad-clip=-1",), "--grad-clip -1", "0 (off) or more"),
    "momentum_above_one": bad_value(("--momentum", "1.5"), "--momentum 1.5", "in [0, 1)"),
    "warmup_negative": bad_value(("--warmup-epochs=-1",), "--warmup-epochs -1", "0 or more"),
    "depth_eleven": bad_value(("--depth", "11"), "--depth 11", "between 1 and 10"),
    "cache_negative": bad_value(("--cache-gb=-1",), "--cache-gb -1", "GiB"),
    "step_size_zero": bad_value(("--step-size", "0"), "--step-size 0", "1 or more"),
    "gamma_zero": bad_value(("--gamma", "0"), "--gamma 0", "above 0"),
    "weight_decay_negative": bad_value(("--weight-decay=-0.1",), "--weight-decay -0.1", "0 or more"),
    "val_fraction_nan": bad_value(("--val-fraction", "nan"), "--val-fraction nan", "between 0 and 1"),
}


CASES = {
    name.removeprefix("case_"): function for name, function in globals().items() if name.startswith("case_")
} | OPTION_CASES


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_2(name, tmp_path, rgb_run, monkeypatch, capsys):
    case = CASES[name](tmp_path=tmp_path, rgb_run=rgb_run, monkeypatch=monkeypatch)
    before = snapshot(tmp_path, rgb_run[0])  # the user's images, masks, configs and finished runs
    capsys.readouterr()
    code, _out, err = run_cli(capsys, *case.args)
    assert_one_line_error(code, err, *case.needles)
    case.after()
    assert_untouched(before)


def assert_untouched(before: dict[Path, str]) -> None:
    """Every file that existed before the command is still there, byte for byte."""
    changed = [path for path, digest in before.items() if not path.is_file() or snapshot_file(path) != digest]
    assert not changed, f"the command changed or removed {changed[:3]}"


def snapshot_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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


def test_a_stale_lock_of_a_killed_run_is_taken_over(tmp_path, capsys):
    images, masks = data(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK_NAME).write_text(dead.stdout)
    code, stdout, err = run_cli(capsys, *train_args(images, masks, out))
    assert code == 0, err
    assert "stale lock" in stdout and not (out / LOCK_NAME).exists()  # released at the end


def test_resume_into_an_empty_folder_continues_there(tmp_path, capsys):
    first = finished_run(tmp_path, "first")
    code, _, err = run_cli(capsys, "train", "--resume", first / "last.pt", "--out", tmp_path / "more", "--epochs", "2")
    assert code == 0, err
    assert (tmp_path / "more" / "last.pt").exists()


def test_the_two_batteries_have_at_least_100_cases():
    import test_bad_input

    assert len(test_bad_input.CASES) + len(CASES) >= 100


def test_exif_rotation_is_applied_to_images_and_masks(tmp_path, capsys):
    """A phone photo stored 60x40 with 'rotate 90' shows as 40x60; its mask was drawn on that view."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for index in range(4):
        stored = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90 clockwise to display
        Image.fromarray(stored).save(images / f"p{index}.jpg", exif=exif, quality=95)
        shown = np.zeros((60, 40), dtype=np.uint8)
        shown[:30] = 255
        Image.fromarray(shown).save(masks / f"p{index}.png")
    from unetkit.data import read_image

    assert read_image(images / "p0.jpg").shape == (60, 40, 3)
    code, _, err = run_cli(capsys, *train_args(images, masks, tmp_path / "run"))
    assert code == 0, err
    code, _, err = run_cli(
        capsys, "predict", "--checkpoint", tmp_path / "run" / "best.pt", images / "p0.jpg", "--out", tmp_path / "p"
    )
    assert code == 0, err
    with Image.open(tmp_path / "p" / "p0.png") as mask:
        assert mask.size == (40, 60)  # as viewers show the photo


def test_masks_beside_their_images_in_one_folder_train(tmp_path, capsys):
    images, masks = make_shapes(tmp_path / "d", count=4, mask_suffix="_mask")
    for mask in masks.iterdir():
        mask.rename(images / mask.name)
    code, _, err = run_cli(capsys, *train_args(images, images, tmp_path / "run"))
    assert code == 0, err


def test_wide_integer_tiffs_holding_16_bit_data_are_not_squeezed(tmp_path):
    from unetkit.data import read_image

    tifffile.imwrite(tmp_path / "a.tif", np.array([[0, 4095]], dtype=np.int32))
    np.testing.assert_allclose(read_image(tmp_path / "a.tif")[0, :, 0], [0, 4095 / 65535], rtol=1e-6)


def test_resume_keeps_the_split_when_images_come_and_go(tmp_path, capsys):
    images, masks = make_shapes(tmp_path / "d", count=10)
    out = tmp_path / "run"
    assert run_cli(capsys, *train_args(images, masks, out, "--val-fraction", "0.3"))[0] == 0
    split = load_checkpoint(out / "last.pt")["split"]
    make_shapes(tmp_path / "d", count=3, seed=9, prefix="new")
    kept = Path(split["train"][0]).name
    (images / kept).unlink()
    (masks / kept).unlink()
    code, out_text, err = run_cli(capsys, "train", "--resume", out / "last.pt", "--epochs", "2")
    assert code == 0, err
    assert "1 image(s) of this run are gone" in out_text and "3 image(s) added" in out_text
    resumed = load_checkpoint(out / "last.pt")["split"]
    assert resumed["val"] == split["val"] and resumed["train"] == split["train"][1:]


def test_config_files_in_utf16_with_bom_and_yaml_exponents_load(tmp_path):
    from unetkit.train.config_file import load_config_file

    (tmp_path / "a.toml").write_text("lr = 0.002\nbatch-size = 3\n", encoding="utf-16")
    (tmp_path / "b.toml").write_bytes(b"\xef\xbb\xbflr = 0.003\n")
    assert load_config_file(tmp_path / "a.toml").lr == 0.002
    assert load_config_file(tmp_path / "b.toml").lr == 0.003
    pytest.importorskip("yaml")
    (tmp_path / "c.yaml").write_text("lr: 1e-3\n")  # PyYAML reads this as the string '1e-3'
    assert load_config_file(tmp_path / "c.yaml").lr == 1e-3


def test_temporary_files_of_a_killed_run_are_removed_on_resume(tmp_path, capsys):
    out = finished_run(tmp_path, "run")
    leftover = out / ".last.k3j2h1ab.tmp.pt"  # mkstemp: 8 random characters
    leftover.write_bytes(b"half a checkpoint")
    code, text, err = run_cli(capsys, "train", "--resume", out / "last.pt", "--epochs", "2")
    assert code == 0, err
    assert not leftover.exists() and "removed 1 temporary file" in text


def test_check_reports_what_train_would_refuse(tmp_path, capsys):
    images, masks = data(tmp_path)
    Image.fromarray(np.zeros((48, 48), dtype=bool)).save(masks / "img01.png")
    pixels = np.zeros((48, 48), dtype=np.float32)
    pixels[1, 1] = np.nan
    (images / "img02.png").unlink()
    tifffile.imwrite(images / "img02.tif", pixels)
    tifffile.imwrite(images / "img03.tif", np.zeros((3, 48, 48), dtype=np.uint8), photometric="minisblack")
    (images / "img03.png").unlink()
    (masks / "img00.png").unlink()
    tifffile.imwrite(masks / "img00.tif", np.full((48, 48), -1, dtype=np.int16))
    code, out, _ = run_cli(capsys, "check", "--images", images, "--masks", masks)
    assert code == 1
    assert (
        "bit depths" in out and "NaN or infinite" in out and "mask has 1 plane(s) but its image img03.tif has 3" in out
    )
    assert "[-1] are outside 0..65535" in out


def test_review_cases_that_must_keep_working(tmp_path):
    """Older checkpoints' stored values load as they are; ImageJ channel stacks are channels; 1-bit
    masks beside 8-bit 0/1 masks are one labelling; a lock holding this very process id is stale."""
    from unetkit.data import read_image
    from unetkit.data.mask_values import MaskValues, discover_mask_values
    from unetkit.runtime.folder_lock import RunLock

    assert MaskValues.from_dict({"values": [255, 0], "ignore_value": None}).values == [255, 0]
    tifffile.imwrite(tmp_path / "ij.tif", np.zeros((3, 20, 30), np.uint8), imagej=True, metadata={"axes": "CYX"})
    assert read_image(tmp_path / "ij.tif").shape == (20, 30, 3)
    one_bit, byte = np.zeros((4, 4), dtype=bool), np.eye(4, dtype=np.uint8)
    assert discover_mask_values(
        [
            (tmp_path / "a", *np.unique(one_bit, return_counts=True)),
            (tmp_path / "b", *np.unique(byte, return_counts=True)),
        ]
    ).values == [0, 1]
    (tmp_path / LOCK_NAME).write_text(f"{os.getpid()}\n")
    notes = []
    with RunLock(tmp_path, log=notes.append) as lock:
        assert lock.held and (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
    assert notes and not (tmp_path / LOCK_NAME).exists()


def test_a_mask_drawn_on_the_unrotated_photo_gets_a_hint(tmp_path):
    from unetkit.data.io import read_pair
    from unetkit.errors import UnetkitError

    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8)).save(tmp_path / "p.jpg", exif=exif)
    Image.fromarray(np.zeros((40, 60), dtype=np.uint8)).save(tmp_path / "p.png")
    with pytest.raises(UnetkitError, match="EXIF orientation"):
        read_pair(tmp_path / "p.jpg", tmp_path / "p.png")
