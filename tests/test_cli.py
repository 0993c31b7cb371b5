import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import make_shapes

from unetkit.cli import main


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="module")
def rgb_run(tmp_path_factory):
    """A tiny RGB model trained for one epoch on 0/255 masks: enough to exercise the commands."""
    root = tmp_path_factory.mktemp("rgb")
    images, masks = make_shapes(root, count=5, size=(40, 56), rgb=True)
    code = main(
        [
            "train",
            "--images",
            str(images),
            "--masks",
            str(masks),
            "--out",
            str(root / "run"),
            "--epochs",
            "1",
            "--base-channels",
            "4",
            "--depth",
            "2",
            "--patch-size",
            "32",
            "--no-progress",
            "--amp",
            "off",
        ]
    )
    assert code == 0
    return root, images, masks, root / "run" / "best.pt"


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["predict"], ["demo"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: unetkit" in capsys.readouterr().out


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "unetkit", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "unetkit" in result.stdout


def test_predict_writes_masks_in_original_values_at_input_size(rgb_run, tmp_path, capsys):
    _root, images, _masks, checkpoint = rgb_run
    odd = tmp_path / "odd.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 61, 3), dtype=np.uint8)).save(odd)
    code, out, _ = run_cli(
        capsys,
        "predict",
        "--checkpoint",
        checkpoint,
        images,
        odd,
        "--out",
        tmp_path / "pred",
        "--overlay",
        "--no-progress",
    )
    assert code == 0 and "wrote 6 mask(s)" in out
    for source in [*sorted(images.iterdir()), odd]:
        mask = np.asarray(Image.open(tmp_path / "pred" / f"{source.stem}.png"))
        assert mask.shape == np.asarray(Image.open(source)).shape[:2]
        assert set(np.unique(mask)) <= {0, 255}
        assert (tmp_path / "pred" / f"{source.stem}_overlay.png").exists()


def test_threshold_moves_binary_predictions(rgb_run, tmp_path, capsys):
    _root, images, _masks, checkpoint = rgb_run
    run_cli(capsys, "predict", "--checkpoint", checkpoint, images, "--out", tmp_path / "lo", "--threshold", "0.0001")
    run_cli(capsys, "predict", "--checkpoint", checkpoint, images, "--out", tmp_path / "hi", "--threshold", "0.9999")
    lo = np.asarray(Image.open(tmp_path / "lo" / "img00.png"))
    hi = np.asarray(Image.open(tmp_path / "hi" / "img00.png"))
    assert (lo == 255).sum() >= (hi == 255).sum()


def test_evaluate_prints_a_table_and_writes_json(rgb_run, tmp_path, capsys):
    _root, images, masks, checkpoint = rgb_run
    code, out, _ = run_cli(
        capsys,
        "evaluate",
        "--checkpoint",
        checkpoint,
        "--images",
        images,
        "--masks",
        masks,
        "--json",
        tmp_path / "eval.json",
        "--no-progress",
    )
    assert code == 0 and "mean Dice" in out and "foreground" in out
    report = json.loads((tmp_path / "eval.json").read_text())
    for key in ("mean_dice", "mean_iou", "pixel_accuracy", "num_images", "per_class", "per_image"):
        assert key in report
    assert report["num_images"] == 5
    assert [c["mask_value"] for c in report["per_class"]] == [0, 255]
    assert {"file", "dice", "iou"} <= set(report["per_image"][0])
    fg = report["per_class"][1]
    assert report["mean_dice"] == pytest.approx(fg["dice"]) and report["mean_iou"] == pytest.approx(fg["iou"])


# ---- bad input: one line on stderr that names the file, exit code 2, nothing half-written ----


def test_missing_and_empty_folders(tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "train", "--images", tmp_path / "nope", "--masks", tmp_path / "nope2", "--out", tmp_path / "run"
    )
    assert_one_line_error(code, err, "nope", "not found")
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(
        capsys, "train", "--images", tmp_path / "empty", "--masks", tmp_path / "empty", "--out", tmp_path / "run"
    )
    assert_one_line_error(code, err, "empty", "no images")
    assert not (tmp_path / "run").exists()


def test_unpaired_images_and_masks(tmp_path, capsys):
    images, masks = make_shapes(tmp_path, count=4)
    (masks / "img02.png").rename(masks / "other.png")
    code, _, err = run_cli(capsys, "train", "--images", images, "--masks", masks, "--out", tmp_path / "run")
    assert_one_line_error(code, err, "img02.png", "no mask")


def test_size_mismatch(tmp_path, capsys):
    images, masks = make_shapes(tmp_path, count=4)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / "img01.png")
    code, _, err = run_cli(capsys, "train", "--images", images, "--masks", masks, "--out", tmp_path / "run")
    assert_one_line_error(code, err, "img01.png", "same size")


def test_colour_mask(tmp_path, capsys):
    images, masks = make_shapes(tmp_path, count=4)
    colour = np.zeros((48, 48, 3), np.uint8)
    colour[..., 0] = 255
    Image.fromarray(colour).save(masks / "img00.png")
    code, _, err = run_cli(capsys, "train", "--images", images, "--masks", masks, "--out", tmp_path / "run")
    assert_one_line_error(code, err, "img00.png", "channels")


def test_unreadable_image(tmp_path, capsys):
    images, masks = make_shapes(tmp_path, count=4)
    (images / "img01.png").write_bytes(b"\x89PNG broken")
    code, _, err = run_cli(capsys, "train", "--images", images, "--masks", masks, "--out", tmp_path / "run")
    assert_one_line_error(code, err, "img01.png", "cannot read")


def test_unexpected_mask_value_at_evaluation(rgb_run, tmp_path, capsys):
    _root, images, masks, checkpoint = rgb_run
    bad_masks = tmp_path / "masks"
    bad_masks.mkdir()
    for mask in masks.iterdir():
        bad_masks.joinpath(mask.name).write_bytes(mask.read_bytes())
    Image.fromarray(np.full((40, 56), 128, np.uint8)).save(bad_masks / "img03.png")
    code, _, err = run_cli(
        capsys, "evaluate", "--checkpoint", checkpoint, "--images", images, "--masks", bad_masks, "--no-progress"
    )
    assert_one_line_error(code, err, "img03.png", "[128]")


def test_not_a_checkpoint(tmp_path, capsys):
    fake = tmp_path / "model.pt"
    fake.write_text("hello")
    code, _, err = run_cli(capsys, "predict", "--checkpoint", fake, tmp_path, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "model.pt", "checkpoint")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    code, _, err = run_cli(capsys, "predict", "--checkpoint", tmp_path / "other.pt", tmp_path, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "other.pt", "not a unetkit checkpoint")
    code, _, err = run_cli(
        capsys, "predict", "--checkpoint", tmp_path / "missing.pt", tmp_path, "--out", tmp_path / "o"
    )
    assert_one_line_error(code, err, "missing.pt", "not found")


class Exploit:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_unsafe_checkpoint_is_refused_without_running_code(tmp_path, capsys):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "unetkit-checkpoint-v1", "payload": Exploit()}, evil, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    code, out, err = run_cli(capsys, "evaluate", "--checkpoint", evil, "--images", tmp_path, "--masks", tmp_path)
    assert_one_line_error(code, err, "evil.pt", "refused")
    assert "code ran" not in out


def test_resume_needs_a_real_checkpoint(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "gone" / "last.pt")
    assert_one_line_error(code, err, "last.pt", "not found")


def test_twelve_classes_from_ids_0_to_11(tmp_path, capsys):
    images, masks = make_shapes(tmp_path, count=4, size=(64, 64), values=tuple(range(12)))
    code, _, _ = run_cli(
        capsys,
        "train",
        "--images",
        images,
        "--masks",
        masks,
        "--out",
        tmp_path / "run",
        "--epochs",
        "1",
        "--base-channels",
        "4",
        "--depth",
        "2",
        "--patch-size",
        "32",
        "--no-progress",
        "--val-fraction",
        "0.25",
    )
    assert code == 0
    checkpoint = tmp_path / "run" / "best.pt"
    code, out, _ = run_cli(
        capsys,
        "evaluate",
        "--checkpoint",
        checkpoint,
        "--images",
        images,
        "--masks",
        masks,
        "--json",
        tmp_path / "e.json",
        "--no-progress",
    )
    assert code == 0 and "mean over all 12 classes, background included" in out
    report = json.loads((tmp_path / "e.json").read_text())
    assert [c["mask_value"] for c in report["per_class"]] == list(range(12))
    code, _, _ = run_cli(capsys, "predict", "--checkpoint", checkpoint, images, "--out", tmp_path / "p")
    assert code == 0
    assert set(np.unique(np.asarray(Image.open(tmp_path / "p" / "img00.png")))) <= set(range(12))


def test_explicit_validation_folders_and_early_stopping(tmp_path, capsys):
    images, masks = make_shapes(tmp_path / "train", count=4)
    val_images, val_masks = make_shapes(tmp_path / "val", count=2, seed=1)
    code, out, _ = run_cli(
        capsys,
        "train",
        "--images",
        images,
        "--masks",
        masks,
        "--val-images",
        val_images,
        "--val-masks",
        val_masks,
        "--out",
        tmp_path / "run",
        "--epochs",
        "30",
        "--patience",
        "1",
        "--lr",
        "0",
        "--scheduler",
        "none",
        "--base-channels",
        "4",
        "--depth",
        "1",
        "--patch-size",
        "32",
        "--no-progress",
    )
    assert code == 0 and "early stop" in out
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["resolved"]["val_images"] == ["img00.png", "img01.png"]
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]
    assert len(rows) < 30
