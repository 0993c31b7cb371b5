"""The bad-input battery: every case runs the CLI on one broken input and expects exit code 2 and
one line on stderr, without a traceback, that names the file or option and says what to do.

Each case builds its input under tmp_path and returns the command line, the words the message
must contain, and optionally a check to run afterwards (e.g. that nothing was executed or
overwritten)."""

from __future__ import annotations

import errno
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import TINY_TRAIN, assert_one_line_error, make_shapes, run_cli

import unetkit.runtime.atomic
import unetkit.train.setup
from unetkit.train import load_checkpoint
from unetkit.train.losses import SegmentationLoss


@dataclass
class Case:
    args: list[object]
    needles: tuple[str, ...]
    after: Callable[[], None] = field(default=lambda: None)


def train_args(images: Path, masks: Path, out: Path, *extra: object) -> list[object]:
    return ["train", "--images", images, "--masks", masks, "--out", out, *TINY_TRAIN, *extra]


def data(tmp_path: Path, **kwargs) -> tuple[Path, Path]:
    return make_shapes(tmp_path / "data", count=4, **kwargs)


def nothing_written(out: Path) -> Callable[[], None]:
    def check() -> None:
        assert not out.exists(), f"{out} was created by a failed run"

    return check


# ---- folders and pairing ----


def case_missing_folder(tmp_path, **_):
    return Case(train_args(tmp_path / "nope", tmp_path / "nope2", tmp_path / "run"), ("nope", "not found", "check"))


def case_empty_image_folder(tmp_path, **_):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "run"
    return Case(train_args(tmp_path / "empty", tmp_path / "empty", out), ("empty", "no images"), nothing_written(out))


def case_image_without_mask(tmp_path, **_):
    images, masks = data(tmp_path)
    (masks / "img02.png").unlink()
    return Case(train_args(images, masks, tmp_path / "run"), ("img02.png", "no mask", "--mask-suffix"))


def case_mask_without_image(tmp_path, **_):
    images, masks = data(tmp_path)
    (masks / "img02.png").rename(masks / "extra.png")
    (images / "img02.png").rename(images / "extra.png")
    (masks / "stray.png").write_bytes((masks / "img00.png").read_bytes())
    return Case(train_args(images, masks, tmp_path / "run"), ("stray.png", "no image", "remove"))


def case_duplicate_stems(tmp_path, **_):
    images, masks = data(tmp_path)
    Image.open(images / "img01.png").save(images / "img01.jpg")
    return Case(train_args(images, masks, tmp_path / "run"), ("img01.jpg", "same name", "keep one"))


def case_single_image(tmp_path, **_):
    images, masks = make_shapes(tmp_path / "data", count=1)
    return Case(train_args(images, masks, tmp_path / "run"), ("only one image", "--val-fraction 0"))


# ---- masks ----


def case_size_mismatch(tmp_path, **_):
    images, masks = data(tmp_path)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / "img01.png")
    return Case(train_args(images, masks, tmp_path / "run"), ("img01.png", "same size"))


def case_mask_with_three_channels(tmp_path, **_):
    images, masks = data(tmp_path)
    noisy = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(noisy).save(masks / "img00.png")
    return Case(train_args(images, masks, tmp_path / "run"), ("img00.png", "3 channels", "single-channel"))


def case_rgb_coded_mask(tmp_path, **_):
    images, masks = data(tmp_path)
    colour = np.zeros((48, 48, 3), np.uint8)
    colour[:24, :, 0] = 255  # red class on top, green class below
    colour[24:, :, 1] = 255
    Image.fromarray(colour).save(masks / "img00.png")
    return Case(train_args(images, masks, tmp_path / "run"), ("img00.png", "colour-coded", "palette PNG"))


def case_jpeg_mask_with_many_grey_levels(tmp_path, **_):
    images, masks = data(tmp_path)
    (masks / "img00.png").unlink()
    greys = np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)
    Image.fromarray(greys).save(masks / "img00.jpg", quality=70)
    args = train_args(images, masks, tmp_path / "run", "--val-fraction", "0")
    return Case(args, ("img00.jpg", "distinct values", "PNG"))


def case_jpeg_mask_in_validation(tmp_path, **_):
    images, masks = data(tmp_path)
    val_images, val_masks = make_shapes(tmp_path / "val", count=2, seed=1)
    (val_masks / "img00.png").unlink()
    noisy = np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)
    Image.fromarray(noisy).save(val_masks / "img00.jpg")
    args = train_args(images, masks, tmp_path / "run", "--val-images", val_images, "--val-masks", val_masks)
    return Case(args, ("img00.jpg", "not among the trained values", "save masks as PNG"))


def case_sixteen_bit_mask_among_eight_bit(tmp_path, **_):
    images, masks = data(tmp_path)
    wide = (np.asarray(Image.open(masks / "img03.png")) > 0).astype(np.uint16) * 65535
    Image.fromarray(wide).save(masks / "img03.png")
    return Case(train_args(images, masks, tmp_path / "run"), ("img03.png", "16-bit", "8-bit", "same bit depth"))


def case_mask_value_not_in_checkpoint(tmp_path, rgb_run, **_):
    _root, images, masks, checkpoint = rgb_run
    bad = tmp_path / "masks"
    bad.mkdir()
    for mask in masks.iterdir():
        bad.joinpath(mask.name).write_bytes(mask.read_bytes())
    Image.fromarray(np.full((40, 56), 128, np.uint8)).save(bad / "img03.png")
    args = ["evaluate", "--checkpoint", checkpoint, "--images", images, "--masks", bad, "--no-progress"]
    return Case(args, ("img03.png", "[128]", "--mask-values"))


# ---- broken or hostile image files ----


def case_zero_byte_file(tmp_path, **_):
    images, masks = data(tmp_path)
    (images / "img01.png").write_bytes(b"")
    return Case(train_args(images, masks, tmp_path / "run"), ("img01.png", "0 bytes", "replace"))


def case_truncated_png(tmp_path, **_):
    images, masks = data(tmp_path)
    whole = (images / "img01.png").read_bytes()
    (images / "img01.png").write_bytes(whole[: len(whole) // 2])
    return Case(train_args(images, masks, tmp_path / "run"), ("img01.png", "cannot read", "truncated"))


def case_text_file_named_png(tmp_path, **_):
    images, masks = data(tmp_path)
    (images / "img01.png").write_text("this is not an image\n")
    return Case(train_args(images, masks, tmp_path / "run"), ("img01.png", "cannot read", "valid PNG"))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression-bomb header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def case_decompression_bomb(tmp_path, **_):
    images, masks = data(tmp_path)
    (images / "img02.png").write_bytes(png_declaring(30_000, 30_000))
    return Case(train_args(images, masks, tmp_path / "run"), ("img02.png", "decompression bomb", "tiles"))


def case_image_smaller_than_the_network_minimum(tmp_path, **_):
    images, masks = data(tmp_path)
    Image.fromarray(np.zeros((5, 6), np.uint8)).save(images / "img00.png")
    Image.fromarray(np.zeros((5, 6), np.uint8)).save(masks / "img00.png")
    args = train_args(images, masks, tmp_path / "run", "--patch-size", "none", "--val-fraction", "0")
    return Case(args, ("img00.png", "6x5", "8x8 minimum", "--depth"))


def case_non_utf8_file_name(tmp_path, **_):
    images, masks = data(tmp_path)
    (images / "img01.png").rename(images / os.fsdecode(b"caf\xe9.png"))
    return Case(train_args(images, masks, tmp_path / "run"), ("caf\\xe9.png", "no mask"))


# ---- output folders ----


def case_output_is_a_file(tmp_path, rgb_run, **_):
    _root, images, _masks, checkpoint = rgb_run
    (tmp_path / "taken").write_text("")
    args = ["predict", "--checkpoint", checkpoint, images, "--out", tmp_path / "taken", "--no-progress"]
    return Case(args, ("taken", "not a folder", "another output folder"))


def case_read_only_output_folder(tmp_path, rgb_run, monkeypatch, **_):
    # Tests run as root in CI, where chmod cannot make a folder read-only: fail the OS call instead.
    def read_only(*_args, **_kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(unetkit.runtime.atomic.tempfile, "mkstemp", read_only)
    _root, images, _masks, checkpoint = rgb_run
    args = ["predict", "--checkpoint", checkpoint, images, "--out", tmp_path / "out", "--no-progress"]
    return Case(args, (".unetkit-predict.json", "Read-only file system", "writable"))  # its first write


def case_full_output_disk(tmp_path, rgb_run, monkeypatch, **_):
    def disk_full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Image.Image, "save", disk_full)
    _root, images, _masks, checkpoint = rgb_run
    out = tmp_path / "out"
    args = ["predict", "--checkpoint", checkpoint, images, "--out", out, "--no-progress"]

    def no_temporary_left() -> None:
        assert not out.exists() or list(out.iterdir()) == []  # the folder it made is taken away too

    return Case(args, ("img00.png", "No space left", "disk has space"), no_temporary_left)


# ---- checkpoints ----


def predict_with(checkpoint: Path, tmp_path: Path) -> list[object]:
    return ["predict", "--checkpoint", checkpoint, tmp_path, "--out", tmp_path / "o", "--no-progress"]


def case_checkpoint_is_a_text_file(tmp_path, **_):
    (tmp_path / "model.pt").write_text("hello")
    return Case(predict_with(tmp_path / "model.pt", tmp_path), ("model.pt", "not a readable PyTorch checkpoint"))


def case_checkpoint_of_another_program(tmp_path, **_):
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    return Case(predict_with(tmp_path / "other.pt", tmp_path), ("other.pt", "not a unetkit checkpoint"))


def case_checkpoint_missing(tmp_path, **_):
    return Case(predict_with(tmp_path / "missing.pt", tmp_path), ("missing.pt", "not found"))


def case_checkpoint_truncated(tmp_path, rgb_run, **_):
    whole = rgb_run[3].read_bytes()
    (tmp_path / "cut.pt").write_bytes(whole[: len(whole) // 2])
    return Case(predict_with(tmp_path / "cut.pt", tmp_path), ("cut.pt", "truncated"))


def case_checkpoint_of_another_model_size(tmp_path, rgb_run, **_):
    state = load_checkpoint(rgb_run[3])
    state["model_args"] = {**state["model_args"], "base_channels": 8}
    torch.save(state, tmp_path / "resized.pt")
    return Case(predict_with(tmp_path / "resized.pt", tmp_path), ("resized.pt", "do not fit", "base_channels"))


class Exploit:
    """Unpickling this calls os.mkdir(marker): proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def case_checkpoint_with_pickled_payload(tmp_path, **_):
    marker = tmp_path / "code-ran"
    torch.save({"format": "unetkit-checkpoint-v1", "payload": Exploit(marker)}, tmp_path / "evil.pt")

    def not_executed() -> None:
        assert not marker.exists(), "loading the checkpoint ran code"

    return Case(predict_with(tmp_path / "evil.pt", tmp_path), ("evil.pt", "refused"), not_executed)


def case_resume_from_a_missing_checkpoint(tmp_path, **_):
    return Case(["train", "--resume", tmp_path / "gone" / "last.pt"], ("last.pt", "not found"))


# ---- option values ----


def bad_option(option: str, value: str, needle: str):
    def case(tmp_path, **_):
        images, masks = data(tmp_path)
        out = tmp_path / "run"
        return Case(
            train_args(images, masks, out, option, value),
            (f"{option} {value}", "must be", needle),
            nothing_written(out),
        )

    return case


def case_tile_smaller_than_overlap(tmp_path, rgb_run, **_):
    _root, images, _masks, checkpoint = rgb_run
    out = tmp_path / "pred"
    args = ["predict", "--checkpoint", checkpoint, images, "--out", out, "--tile", "32", "--overlap", "64"]
    return Case(args, ("--overlap 64", "smaller than --tile 32"), nothing_written(out))


# ---- training that goes wrong ----


def case_nan_loss(tmp_path, monkeypatch, **_):
    """The loss turns NaN in epoch 2: stop, name the cure, and leave epoch 1's checkpoints alone."""

    def nan_after_first_step(*args, **kwargs):
        loss = SegmentationLoss(*args, **kwargs)
        original, steps = loss.forward, iter(range(1_000_000))
        loss.forward = lambda *inputs: original(*inputs) * (1.0 if next(steps) == 0 else torch.nan)
        return loss

    monkeypatch.setattr(unetkit.train.setup, "SegmentationLoss", nan_after_first_step)
    images, masks = data(tmp_path)
    out = tmp_path / "run"
    args = train_args(images, masks, out, "--epochs", "3", "--val-fraction", "0", "--batch-size", "4")

    def epoch_one_kept() -> None:
        for name in ("last.pt", "best.pt"):
            state = load_checkpoint(out / name)
            assert state["epoch"] == 1
            assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())

    return Case(args, ("loss became nan in epoch 2", "last.pt keeps epoch 1", "--lr"), epoch_one_kept)


CASES = {name.removeprefix("case_"): function for name, function in globals().items() if name.startswith("case_")} | {
    "negative_epochs": bad_option("--epochs", "-3", "1 or more"),
    "zero_epochs": bad_option("--epochs", "0", "1 or more"),
    "lr_zero": bad_option("--lr", "0", "above 0"),
    "lr_negative": bad_option("--lr", "-0.01", "above 0"),
    "lr_nan": bad_option("--lr", "nan", "above 0"),
    "val_fraction_above_one": bad_option("--val-fraction", "1.5", "between 0 and 1"),
    "val_fraction_one": bad_option("--val-fraction", "1", "between 0 and 1"),
    "val_fraction_negative": bad_option("--val-fraction", "-0.2", "between 0 and 1"),
    "batch_size_zero": bad_option("--batch-size", "0", "1 or more"),
    "patch_smaller_than_the_network_minimum": bad_option("--patch-size", "4", "at least 8"),
}


def test_the_battery_is_big_enough():
    assert len(CASES) >= 25


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name, tmp_path, rgb_run, monkeypatch, capsys):
    from test_bad_input_2 import assert_untouched, snapshot

    case = CASES[name](tmp_path=tmp_path, rgb_run=rgb_run, monkeypatch=monkeypatch)
    before = snapshot(tmp_path, rgb_run[0])  # the user's files and finished runs: checked unchanged after
    code, _out, err = run_cli(capsys, *case.args)
    assert_one_line_error(code, err, *case.needles)
    case.after()
    assert_untouched(before)


# ---- edge cases that are not errors: they must just work ----


def test_validation_set_smaller_than_a_batch_trains(tmp_path, capsys):
    images, masks = make_shapes(tmp_path / "data", count=3)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, *train_args(images, masks, out, "--val-fraction", "0.34", "--batch-size", "4"))
    assert code == 0, err
    assert load_checkpoint(out / "best.pt")["history"][0]["val_dice"] >= 0


def test_single_image_without_validation_trains(tmp_path, capsys):
    images, masks = make_shapes(tmp_path / "data", count=1)
    code, _, err = run_cli(capsys, *train_args(images, masks, tmp_path / "run", "--val-fraction", "0"))
    assert code == 0, err
