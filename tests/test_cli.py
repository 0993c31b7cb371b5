import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from synthetic import TINY_TRAIN, make_shapes, run_cli

from unetkit.cli import main


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
        *TINY_TRAIN,
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
    assert code == 0 and "mean over all 12 classes, class 0 included" in out
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
        "1e-30",  # too small to move any float32 weight: the validation Dice never improves
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


def test_resume_takes_options_typed_even_at_their_default_and_from_a_config_file(tmp_path, capsys):
    images, masks = make_shapes(tmp_path, count=4)
    run = tmp_path / "run"
    common = ["--images", images, "--masks", masks, "--out", run, *TINY_TRAIN, "--val-fraction", "0.25"]
    assert run_cli(capsys, "train", *common, "--device", "cpu")[0] == 0
    epochs = json.loads((run / "config.json").read_text())["epochs"]
    # `--device auto` is TrainConfig's default, but typed here it must replace the saved "cpu".
    resume = ["train", "--resume", run / "last.pt", "--no-progress"]
    assert run_cli(capsys, *resume, "--epochs", str(epochs + 1), "--device", "auto")[0] == 0
    config = json.loads((run / "config.json").read_text())
    assert config["device"] == "auto" and config["epochs"] == epochs + 1
    # Not typed: kept from the checkpoint.
    assert run_cli(capsys, *resume, "--epochs", str(epochs + 2))[0] == 0
    assert json.loads((run / "config.json").read_text())["device"] == "auto"
    # From a --config file: taken where it differs from the default.
    (tmp_path / "more.toml").write_text(f"epochs = {epochs + 3}\n")
    assert run_cli(capsys, *resume, "--config", tmp_path / "more.toml")[0] == 0
    assert json.loads((run / "config.json").read_text())["epochs"] == epochs + 3


def test_predict_says_which_engine_runs_and_refuses_bf16_on_onnxruntime(rgb_run, tmp_path, capsys):
    _root, images, _masks, checkpoint = rgb_run
    args = ["predict", "--checkpoint", checkpoint, images, "--out", tmp_path / "p", "--no-progress", "--overwrite"]
    code, out, _ = run_cli(capsys, *args, "--backend", "torch", "--amp", "off")
    assert code == 0 and "running on PyTorch, cpu, fp32" in out
    code, out, _ = run_cli(capsys, *args, "--backend", "onnxruntime", "--amp", "off")
    assert code == 0 and "running on ONNX Runtime (as asked)" in out
    code, _, err = run_cli(capsys, *args, "--backend", "onnxruntime", "--amp", "bf16")
    assert code == 2 and "--backend onnxruntime runs in fp32" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--time", "0"], "argument --time: the time budget must be positive"),
        (["--time", "abc"], "expected a duration like 90s"),
        (["--time", "-5m"], "write --time=VALUE"),
        (["--epochs", "x"], "argument --epochs: invalid int value"),
    ],
)
def test_an_option_argparse_refuses_is_one_line_without_the_usage(args, said, capsys):
    """`--time 0` printed the whole usage, 35 lines, before its error (red-team finding)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--images", "x", "--masks", "y", *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "usage" not in err
    assert err.startswith("unetkit train: error: ") and said in err and "unetkit train --help" in err


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["predict", "--checkpoint", "b.pt", "--images", "x", "--out", "o"], "without an option: unetkit predict"),
        (["evaluate", "--checkpoint", "b.pt", "--images", "x", "--masks", "y", "--bogus"], "arguments: --bogus"),
    ],
)
def test_an_unknown_option_names_its_commands_help(args, said, capsys):
    """`predict --images` said `unetkit --help lists the options`, not predict's (a red-team round)."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and said in err
    assert err.startswith(f"unetkit {args[0]}: error: unrecognized arguments") and f"unetkit {args[0]} --help" in err


def test_a_demo_run_folder_resumes_and_reports_as_any_run(tmp_path, capsys, monkeypatch):
    """The demo's config named no data folder, so `--resume` (the command its Ctrl-C prints) and
    `report` asked for --images (a red-team finding); it names the bundled folders now."""
    import unetkit.demo as demo
    from unetkit.train import TrainConfig

    def tiny(out, progress=True, amp="auto"):
        return TrainConfig(epochs=1, base_channels=4, depth=2, patch_size=32, patches_per_image=1, amp="off",
                           out=str(out), progress=False, seed=0, val_fraction=0.1)  # fmt: skip

    monkeypatch.setattr(demo, "demo_config", tiny)
    monkeypatch.setattr(demo, "HELDOUT_SLICES", range(25, 26))  # one held-out slice is enough here
    out = tmp_path / "demo"
    demo.run_demo(out, progress=False, amp="off")
    config = json.loads((out / "config.json").read_text())
    assert config["images"] == str(demo.DEMO_DATA / "images") and config["masks"] == str(demo.DEMO_DATA / "masks")
    code, stdout, err = run_cli(capsys, "train", "--resume", out / "last.pt", "--no-progress")
    assert code == 2 and "already finished" in err  # not "train needs --images DIR and --masks DIR"


def test_an_allocation_that_fails_is_one_line_with_the_commands_fix(capsys):
    """What the memory check's floor lets through ended in the CPU allocator's traceback."""
    import argparse

    from unetkit.cli import run_command

    def fails(_args):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 335544320 bytes. Error code 12 (Cannot allocate memory)")  # fmt: skip

    assert run_command(argparse.Namespace(command="train", func=fails)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out of memory (could not allocate 320 MiB more)" in err and "--batch-size" in err
