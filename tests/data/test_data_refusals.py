"""Refusals of reading images and masks (files, pixels, channels, axes, mask values, pairing, sizes):
broken input gets exit code 2 and one line naming the file or option and the fix, no traceback,
and no user file changes (the harness: tests/refusals.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tifffile
from PIL import Image
from refusals import (
    Case,
    assert_untouched,
    bad_value,
    bomb_case,
    cases_of,
    config_file,
    data,
    fluorescence_stack,
    gif_declaring,
    image_case,
    jpeg_declaring,
    mask_case,
    nothing_in,
    nothing_written,
    png_declaring,
    predict_args,
    refused,
    replace_image,
    rgb_nir,
    snapshot,
    tiff_declaring,
    train_args,
    two_sample_tiff,
    unchanged,
)
from synthetic import assert_one_line_error, make_shapes, run_cli

from unetkit.errors import UnetkitError
from unetkit.runtime.folder_lock import LOCK_NAME


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


def case_size_mismatch(tmp_path, **_):
    images, masks = data(tmp_path)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / "img01.png")
    return Case(train_args(images, masks, tmp_path / "run"), ("img01.png", "same size"))


def case_tiny_image(tmp_path, **_):
    """An image a 3x3 convolution sees no shape in (1x1 images "trained" to val Dice 1.0, then the
    object rule failed with a traceback)."""
    images, masks = data(tmp_path)
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(images / "img01.png")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(masks / "img01.png")
    return Case(train_args(images, masks, tmp_path / "run"), ("img01.png", "1x1 pixels", "too small", "remove it"))


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


def case_decompression_bomb(tmp_path, **_):
    images, masks = data(tmp_path)
    (images / "img02.png").write_bytes(png_declaring(30_000, 30_000))
    return Case(train_args(images, masks, tmp_path / "run"), ("img02.png", "decompression bomb", "tiles"))


def case_non_utf8_file_name(tmp_path, **_):
    images, masks = data(tmp_path)
    (images / "img01.png").rename(images / os.fsdecode(b"caf\xe9.png"))
    return Case(train_args(images, masks, tmp_path / "run"), ("caf\\xe9.png", "no mask"))


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


def case_images_and_masks_are_the_same_folder(tmp_path, **_):
    images, _masks = data(tmp_path)
    return Case(train_args(images, images, tmp_path / "run"), ("same folder", "own folder", "--mask-suffix"))


def case_evaluate_on_one_folder_of_images_and_masks(tmp_path, rgb_run, **_):
    _root, images, _masks, checkpoint = rgb_run
    args = ["evaluate", "--checkpoint", checkpoint, "--images", images, "--masks", images]
    return Case(args, ("same folder", "own folder"), unchanged(images))


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


def case_rgb_nir_tiff_out_of_core(tmp_path, rgb_run, **_):
    rgb_nir(tmp_path / "nir.tif")
    out = tmp_path / "pred"
    args = predict_args(rgb_run[3], tmp_path / "nir.tif", out, "--out-of-core", "on")
    return Case(args, ("nir.tif", "4 channel(s)", "trained on 3-channel images"), nothing_in(out))


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


def case_config_relative_paths_are_the_files_not_the_current_folders(tmp_path, monkeypatch, **_):
    data(tmp_path)  # tmp_path/data/images: what the current folder would find
    (tmp_path / "configs").mkdir()
    config = config_file(tmp_path / "configs", 'images = "data/images"\nmasks = "data/masks"\n')
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    return Case(["train", "--config", config, "--out", out], ("configs/data/images", "not found"), nothing_in(out))


def case_tiff_bomb_out_of_core_on(tmp_path, rgb_run, **_):
    bomb = tiff_declaring(tmp_path / "slide.tif", 100_000, 100_000, tile=(16, 16))
    out = tmp_path / "pred"
    args = predict_args(rgb_run[3], bomb, out, "--out-of-core", "on")
    return Case(args, ("slide.tif", "10,000,000,000 pixels", "UNETKIT_MAX_PIXELS"), nothing_in(out))


def case_tiff_bomb_as_a_mask(tmp_path, **_):
    images, masks = data(tmp_path)
    tiff_declaring(masks / "img02.tif", 50_000, 50_000)
    (masks / "img02.png").unlink()
    return Case(train_args(images, masks, tmp_path / "run"), ("img02.tif", "decompression bomb"))


def case_a_bad_pixel_limit_setting(tmp_path, monkeypatch, **_):
    monkeypatch.setenv("UNETKIT_MAX_PIXELS", "lots")
    images, masks = data(tmp_path)
    return Case(train_args(images, masks, tmp_path / "run"), ("UNETKIT_MAX_PIXELS", "whole number"))


def case_a_lowered_pixel_limit_refuses_an_ordinary_image(tmp_path, monkeypatch, **_):
    monkeypatch.setenv("UNETKIT_MAX_PIXELS", "1000")
    images, masks = data(tmp_path)  # 48 x 48 = 2,304 pixels
    return Case(train_args(images, masks, tmp_path / "run"), ("2,304 pixels", "limit of 1,000"))


def case_three_fluorescence_channels_to_the_gray_nuclei_model(tmp_path, **_):
    image = fluorescence_stack(tmp_path / "stains.tif")
    out = tmp_path / "pred"
    args = ["predict", "--model", "nuclei", image, "--out", out, "--no-progress"]
    return Case(args, ("stains.tif", "3 channel(s)", "C axis, not RGB", "1-channel"), nothing_in(out))


def case_two_fluorescence_channels_to_the_gray_nuclei_model(tmp_path, **_):
    image = fluorescence_stack(tmp_path / "two.tif", channels=2)
    out = tmp_path / "pred"
    args = ["predict", "--model", "nuclei", image, "--out", out, "--no-progress"]
    return Case(args, ("two.tif", "2 channel(s)", "1-channel"), nothing_in(out))


def case_three_fluorescence_channels_evaluated_by_the_gray_model(tmp_path, **_):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    fluorescence_stack(images / "a.tif")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(masks / "a.png")
    args = ["evaluate", "--model", "nuclei", "--images", images, "--masks", masks, "--no-progress"]
    return Case(args, ("a.tif", "C axis, not RGB"))


def case_rgb_model_given_a_gray_image_stack_of_four(tmp_path, rgb_run, **_):
    image = fluorescence_stack(tmp_path / "four.tif", channels=4)
    return Case(predict_args(rgb_run[3], image, tmp_path / "pred"), ("four.tif", "4 channel(s)", "3-channel"))


CASES = cases_of(
    globals(),
    {
        "ignore_value_equal_to_a_class": bad_value(
            ("--mask-values", "0,255", "--ignore-value", "255"), "--ignore-value 255", "would be dropped"
        ),
        "mask_values_out_of_order": bad_value(
            ("--mask-values", "255,0"), "--mask-values 255,0 is invalid", "increasing order"
        ),
        "mask_value_minus_one": bad_value(
            ("--mask-values=-1,0,255",), "--mask-values -1,0,255 is invalid", "0 to 65535"
        ),
        "tiff_bomb_in_training": bomb_case("img01.tif", lambda p: tiff_declaring(p, 100_000, 100_000)),
        "tiled_tiff_bomb_in_check": bomb_case(
            "img01.tif", lambda p: tiff_declaring(p, 100_000, 100_000, tile=(16, 16)), "check"
        ),
        "tiff_bomb_in_predict": bomb_case("img01.tif", lambda p: tiff_declaring(p, 100_000, 100_000), "predict"),
        "png_bomb_in_predict": bomb_case(
            "img01.png", lambda p: p.write_bytes(png_declaring(60_000, 60_000)), "predict"
        ),
        "png_bomb_in_evaluate": bomb_case(
            "img01.png", lambda p: p.write_bytes(png_declaring(60_000, 60_000)), "evaluate"
        ),
        "gif_bomb_in_training": bomb_case("img01.gif", lambda p: p.write_bytes(gif_declaring(65_000, 65_000))),
        "jpeg_bomb_in_training": bomb_case("img01.jpg", lambda p: p.write_bytes(jpeg_declaring(65_000, 65_000))),
        "jpeg_bomb_in_predict": bomb_case(
            "img01.jpg", lambda p: p.write_bytes(jpeg_declaring(65_000, 65_000)), "predict"
        ),
    },
)


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused(name, tmp_path, rgb_run, monkeypatch, capsys):
    refused(CASES[name], tmp_path, rgb_run, monkeypatch, capsys)


# ---- the same situations done right just work ----


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


def test_wide_integer_tiffs_holding_16_bit_data_are_not_squeezed(tmp_path):
    from unetkit.data import read_image

    tifffile.imwrite(tmp_path / "a.tif", np.array([[0, 4095]], dtype=np.int32))
    np.testing.assert_allclose(read_image(tmp_path / "a.tif")[0, :, 0], [0, 4095 / 65535], rtol=1e-6)


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

    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8)).save(tmp_path / "p.jpg", exif=exif)
    Image.fromarray(np.zeros((40, 60), dtype=np.uint8)).save(tmp_path / "p.png")
    with pytest.raises(UnetkitError, match="EXIF orientation"):
        read_pair(tmp_path / "p.jpg", tmp_path / "p.png")
    Image.fromarray(np.zeros((60, 40), dtype=np.uint8)).save(tmp_path / "q.png")  # no EXIF: not blamed on it
    with pytest.raises(UnetkitError, match="the mask is the image's size turned"):
        read_pair(tmp_path / "q.png", tmp_path / "p.png")


@pytest.mark.parametrize("mode", ["off", "on"])
def test_rgb_nir_is_refused_alike_in_memory_and_out_of_core(rgb_run, tmp_path, capsys, mode):
    """The two paths share one pixel rule (data.io.PixelRule): out of core NIR was dropped. Four
    channels are data now, and an RGB model refuses them in both paths before writing anything."""
    rgb_nir(tmp_path / "nir.tif")
    out = tmp_path / "pred"
    code, _, err = run_cli(capsys, *predict_args(rgb_run[3], tmp_path / "nir.tif", out, "--out-of-core", mode))
    assert_one_line_error(code, err, "nir.tif", "4 channel(s)", "trained on 3-channel images")
    assert not out.exists() or not any(out.iterdir())


def test_a_second_sample_marked_alpha_is_dropped_in_both_paths(tmp_path):
    from unetkit.data import read_image
    from unetkit.inference.slide.large_tiff import band_image, opened_pixels

    two_sample_tiff(tmp_path / "la.tif", marked_alpha=True)
    whole = read_image(tmp_path / "la.tif")
    assert whole.shape == (48, 48, 1)
    with opened_pixels(tmp_path / "la.tif") as (pixels, rule):
        assert np.array_equal(band_image(pixels, 0, 48, rule), whole)


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
