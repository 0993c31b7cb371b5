"""Refusals of training runs (options, config files, resume, the run folder, the data plan): broken
input gets exit code 2 and one line naming the file or option and the fix, no traceback, and no
user file changes (the harness: tests/refusals.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from refusals import (
    EACCES,
    USER_FILES,
    Case,
    bad_option,
    bad_value,
    cases_of,
    config_file,
    data,
    finished_run,
    killed,
    nothing_in,
    refused,
    resume_rgb_run,
    train_args,
    train_write_fault,
    unchanged,
    user_folder,
    yaml_config,
)
from synthetic import TINY_TRAIN, assert_one_line_error, make_shapes, nuclei_with_ids, run_cli

import unetkit.models.checkpoint
import unetkit.runtime.atomic
import unetkit.train.setup
from unetkit.errors import UnetkitError
from unetkit.runtime.folder_lock import LOCK_NAME
from unetkit.train import load_checkpoint
from unetkit.train.losses import SegmentationLoss


def case_single_image(tmp_path, **_):
    images, masks = make_shapes(tmp_path / "data", count=1)
    return Case(train_args(images, masks, tmp_path / "run"), ("only one image", "--val-fraction 0"))


def case_image_smaller_than_the_network_minimum(tmp_path, **_):
    images, masks = data(tmp_path)
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(images / "img00.png")  # above data/io.MIN_IMAGE_SIDE
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(masks / "img00.png")
    args = train_args(images, masks, tmp_path / "run", "--patch-size", "none", "--val-fraction", "0", "--depth", "4")
    return Case(args, ("img00.png", "12x10", "32x32 minimum", "--depth"))


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


def case_second_training_into_a_live_run_that_has_saved_a_checkpoint(tmp_path, **_):
    """It was told "continue it with --resume", which the lock then refused (a red-team round)."""
    images, masks = data(tmp_path)
    out = finished_run(tmp_path, "live")
    (out / LOCK_NAME).write_text(f"{os.getppid()}\n")  # the run still writes there
    return Case(train_args(images, masks, out), ("another training", "is writing to this folder"), unchanged(out))


def case_class_weights_of_the_wrong_length(tmp_path, **_):
    images, masks = data(tmp_path)
    out = tmp_path / "run"
    return Case(
        train_args(images, masks, out, "--class-weights", "1,2,3"), ("--class-weights has 3", "one weight per class")
    )


def case_config_file_not_text(tmp_path, **_):
    config = tmp_path / "run.toml"
    config.write_bytes(b"lr = 0.001\n\xff\xfe\xfa")
    return Case(["train", "--config", config], ("run.toml", "not UTF-8", "save it as UTF-8"))


def case_yaml_key_that_is_not_a_name(tmp_path, **_):
    pytest.importorskip("yaml")
    config = tmp_path / "run.yaml"
    config.write_text("1: 3\nlr: 0.001\n")
    return Case(["train", "--config", config], ("run.yaml", "key 1", "option name"))


def case_train_out_is_the_image_folder(tmp_path, **_):
    images, masks = data(tmp_path)
    return Case(train_args(images, masks, images), ("--out is the --images folder", "another --out"), unchanged(images))


def case_train_out_is_the_mask_folder(tmp_path, **_):
    images, masks = data(tmp_path)
    return Case(train_args(images, masks, masks), ("--out is the --masks folder",), unchanged(images, masks))


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
    from unetkit.runtime.ownership import MARKER

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


def case_resume_a_copied_checkpoint_among_the_users_files(tmp_path, **_):
    """A last.pt copied into a folder of the user's files: resuming there wrote the run's files over theirs."""
    first = finished_run(tmp_path, "first")
    folder = user_folder(tmp_path, {"metrics.csv": b"mine\n", "config.json": b'{"mine": 1}', "notes.txt": b"x"})
    (folder / "last.pt").write_bytes((first / "last.pt").read_bytes())
    args = ["train", "--resume", folder / "last.pt", "--epochs", "2", "--no-progress"]
    return Case(args, ("did not mark as a run folder", "--out NEW_FOLDER"), unchanged(folder))


def case_config_given_the_runs_config_json(tmp_path, rgb_run, **_):
    config = rgb_run[3].parent / "config.json"
    return Case(["train", "--config", config, "--out", tmp_path / "again"], ("config.json", "config.toml"))


def case_config_given_a_folder(tmp_path, rgb_run, **_):
    folder = rgb_run[3].parent  # a run folder: its config.toml is the file meant
    return Case(["train", "--config", folder, "--out", tmp_path / "again"], ("is a folder", "config.toml"))


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
    return Case(resume_rgb_run(rgb_run, "--multiclass"), ("--multiclass", "binary = true", "without --resume"))


def case_resume_with_no_augment(rgb_run, **_):
    return Case(resume_rgb_run(rgb_run, "--no-augment"), ("--no-augment", "augment = true"))


def case_resume_with_a_config_file_that_changes_the_lr(tmp_path, rgb_run, **_):
    more = config_file(tmp_path, "epochs = 3\nlr = 0.5\n", "more.toml")
    return Case(resume_rgb_run(rgb_run, "--config", more), ("more.toml: lr = 0.5", "keeps the options"))


def case_resume_with_val_images_on_a_run_that_split_its_own(tmp_path, rgb_run, **_):
    _root, images, masks, _checkpoint = rgb_run
    args = resume_rgb_run(rgb_run, "--val-images", images, "--val-masks", masks)
    return Case(args, ("--val-images", "val_images = None", "keeps the options"))


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


def case_train_into_a_folder_another_training_holds(tmp_path, **_):
    from unetkit.runtime.folder_lock import LOCK_NAME

    images, masks = data(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(f"{os.getppid()}\n")
    return Case(train_args(images, masks, out), ("another training", f"process {os.getppid()}"), unchanged(out))


def case_train_again_after_the_disk_filled_between_the_checkpoints(tmp_path, **_):
    """best.pt written, then the disk filled before last.pt: the same command is refused with a
    resume that exists (it named a last.pt that was not there)."""
    from unetkit.models.checkpoint import save_checkpoint
    from unetkit.train import load_checkpoint

    images, masks = data(tmp_path)
    out = finished_run(tmp_path, "run")
    state = load_checkpoint(out / "last.pt")
    (out / "last.pt").unlink()
    save_checkpoint(out / "best.pt", state)
    return Case(train_args(images, masks, out), ("already holds a checkpoint", f"--resume {out / 'best.pt'}"))


def case_train_after_a_kill_left_a_temporary_config(tmp_path, **_):
    """A kill mid-write leaves .config.toml.<random>.tmp.toml: the folder is still the run's (its
    temporaries are removed), and the same command is answered about the checkpoint, not the file."""
    images, masks = data(tmp_path)
    out = finished_run(tmp_path, "run")
    (out / ".config.abcd1234.tmp.toml").write_text("half")
    return Case(train_args(images, masks, out), ("already holds a checkpoint", "--resume"))


def case_resume_a_finished_run(tmp_path, **_):
    out = finished_run(tmp_path, "run")
    args = ["train", "--resume", out / "last.pt", "--no-progress"]
    return Case(args, ("already finished at epoch 1", "its 1 epochs are done", "a larger --epochs, or"), unchanged(out))


def case_resume_a_run_that_spent_its_time_budget(tmp_path, **_):
    from unetkit.models.checkpoint import save_checkpoint
    from unetkit.train import load_checkpoint

    out = finished_run(tmp_path, "run")
    state = load_checkpoint(out / "last.pt")
    state["config"] = {**state["config"], "epochs": None, "time": 1.0}
    state["elapsed_seconds"] = 5.0
    save_checkpoint(out / "last.pt", state)
    args = ["train", "--resume", out / "last.pt", "--no-progress"]
    # Only --time gives such a run more: "--epochs or --time" was refused again with --epochs (red-team)
    return Case(args, ("already finished", "budget", "a larger --time, or"), unchanged(out))


def case_yaml_alias_bomb(tmp_path, **_):
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]"
              for i in range(8)]  # fmt: skip
    lines += ["mask_values: [*i, *i]"]
    config = yaml_config(tmp_path, "\n".join(lines) + "\n")
    out = tmp_path / "run"
    return Case(
        ["train", "--config", config, "--out", out, *TINY_TRAIN], ("run.yaml", "YAML alias", "write the value out")
    )


def case_yaml_one_alias(tmp_path, **_):
    config = yaml_config(tmp_path, "lr: &rate 0.001\nweight_decay: *rate\n")
    return Case(["train", "--config", config, "--out", tmp_path / "run", *TINY_TRAIN], ("run.yaml", "line 4", "*rate"))


def case_toml_nested_ten_thousand_deep(tmp_path, **_):
    images, masks = data(tmp_path)
    config = tmp_path / "run.toml"
    config.write_text(f'images = "{images}"\nmasks = "{masks}"\nclass_weights = ' + "[" * 10_000 + "]" * 10_000 + "\n")
    args = ["train", "--config", config, "--out", tmp_path / "run", *TINY_TRAIN]
    return Case(args, ("run.toml", "nested too deep"))


def case_yaml_nested_ten_thousand_deep(tmp_path, **_):
    config = yaml_config(tmp_path, "class_weights: " + "[" * 10_000 + "]" * 10_000 + "\n")
    args = ["train", "--config", config, "--out", tmp_path / "run", *TINY_TRAIN]
    return Case(args, ("run.yaml", "nested too deep"))


def case_yaml_key_of_a_megabyte_given_twice(tmp_path, **_):
    key = "k" * 1_000_000
    config = yaml_config(tmp_path, f"? {key}\n: 1\n? {key}\n: 2\n")  # keys over 1024 characters are explicit
    return Case(["train", "--config", config, "--out", tmp_path / "run", *TINY_TRAIN], ("run.yaml", "given twice"))


def case_toml_unknown_key_of_two_megabytes(tmp_path, **_):
    images, masks = data(tmp_path)
    config = tmp_path / "run.toml"
    config.write_text(f'images = "{images}"\nmasks = "{masks}"\n{"k" * 2_000_000} = 1\n')
    return Case(["train", "--config", config, "--out", tmp_path / "run", *TINY_TRAIN], ("run.toml", "unknown option"))


def case_init_from_an_onnx_export(tmp_path, rgb_run, capsys, **_):
    model = tmp_path / "m.onnx"
    assert run_cli(capsys, "export", "--checkpoint", rgb_run[3], "--onnx", model)[0] == 0
    images, masks = make_shapes(tmp_path / "data", count=4, rgb=True)
    args = train_args(images, masks, tmp_path / "run", "--init-from", model)
    return Case(args, ("m.onnx", "ONNX export", "best.pt"), nothing_in(tmp_path / "run"))


def case_resume_from_an_onnx_export(tmp_path, rgb_run, capsys, **_):
    model = tmp_path / "m.onnx"
    assert run_cli(capsys, "export", "--checkpoint", rgb_run[3], "--onnx", model)[0] == 0
    return Case(["train", "--resume", model, "--no-progress"], ("m.onnx", "ONNX export", "last.pt"))


def case_patch_under_the_minimum_of_the_default_depth(tmp_path, **_):
    images, masks = data(tmp_path)  # no --depth: the message names the depth the limit comes from
    args = ["train", "--images", images, "--masks", masks, "--out", tmp_path / "run", "--patch-size", "7"]
    return Case(args, ("--patch-size 7", "at least 32", "default depth 4"), nothing_in(tmp_path / "run"))


def case_a_network_whose_training_state_passes_the_memory(tmp_path, monkeypatch, **_):
    """Refused before any weight exists (--depth 9 --base-channels 32 was killed for memory in
    silence): the parameters are counted on the meta device, here against a 0.5 GiB machine."""
    import unetkit.train.setup

    monkeypatch.setattr(unetkit.train.setup, "memory_bytes", lambda: 2.0**29)
    images, masks = data(tmp_path)
    args = train_args(images, masks, tmp_path / "run", "--depth", "4", "--base-channels", "128")
    needles = ("69M parameters", "1.0 GiB", "has 0.5 GiB", "smaller --depth or --base-channels")
    return Case(args, needles, nothing_in(tmp_path / "run"))


def case_a_batch_whose_activation_maps_pass_the_memory(tmp_path, monkeypatch, **_):
    """`--patch-size 512 --batch-size 512` was taken, then ended in the CPU allocator's traceback or
    the kernel's OOM kill (a red-team round): the maps one 128 px sample keeps are counted, then scaled."""
    import unetkit.train.setup

    monkeypatch.setattr(unetkit.train.setup, "memory_bytes", lambda: 2.0**31)
    images, masks = data(tmp_path)
    args = train_args(
        images, masks, tmp_path / "run", "--patch-size", "512", "--batch-size", "64", "--patches-per-image", "32"
    )
    needles = ("--batch-size 64 of 512x512 patches", "GiB of activation maps", "2.0 GiB", "use --batch-size 7 or less")
    return Case(args, needles, nothing_in(tmp_path / "run"))


CASES = cases_of(
    globals(),
    {
        "patch_smaller_than_the_network_minimum": bad_option("--patch-size", "4", "at least 8"),
        "huge_patch_size": bad_value(("--patch-size", "100000"), "--patch-size 100000", "at most 8192"),
        "min_epochs_zero": bad_value(("--time", "1m", "--min-epochs", "0"), "--min-epochs 0", "1 or more"),
        "train_marker_no_permission": train_write_fault(".unetkit-run.json", EACCES, "Permission denied"),
    },
)


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused(name, tmp_path, rgb_run, monkeypatch, capsys):
    refused(CASES[name], tmp_path, rgb_run, monkeypatch, capsys)


# ---- the same situations done right just work ----


def test_validation_set_smaller_than_a_batch_trains(tmp_path, capsys):
    images, masks = make_shapes(tmp_path / "data", count=3)
    out = tmp_path / "run"
    code, text, err = run_cli(capsys, *train_args(images, masks, out, "--val-fraction", "0.34", "--batch-size", "4"))
    assert code == 0, err
    assert load_checkpoint(out / "best.pt")["history"][0]["val_dice"] >= 0
    (val,) = json.loads((out / "config.json").read_text())["resolved"]["val_images"]
    assert f"2 training / 1 validation images ({val})" in text  # a few are named (a red-team round)


def test_single_image_without_validation_trains(tmp_path, capsys):
    images, masks = make_shapes(tmp_path / "data", count=1)
    code, text, err = run_cli(capsys, *train_args(images, masks, tmp_path / "run", "--val-fraction", "0"))
    assert code == 0, err
    epochs = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert epochs and not any("nan" in line or "val " in line for line in epochs)  # no validation columns


def test_resume_into_an_empty_folder_continues_there(tmp_path, capsys):
    first = finished_run(tmp_path, "first")
    code, _, err = run_cli(capsys, "train", "--resume", first / "last.pt", "--out", tmp_path / "more", "--epochs", "2")
    assert code == 0, err
    assert (tmp_path / "more" / "last.pt").exists()


def test_masks_beside_their_images_in_one_folder_train(tmp_path, capsys):
    images, masks = make_shapes(tmp_path / "d", count=4, mask_suffix="_mask")
    for mask in masks.iterdir():
        mask.rename(images / mask.name)
    code, _, err = run_cli(capsys, *train_args(images, images, tmp_path / "run"))
    assert code == 0, err


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
    assert (
        "1 image(s) of this run are gone" in out_text and "3 image(s) beside the run's are not in its split" in out_text
    )
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


def test_a_run_resumed_into_a_new_folder_takes_its_best_checkpoint_and_fingerprint(tmp_path, capsys):
    first = finished_run(tmp_path, "first")
    code, _, err = run_cli(capsys, "train", "--resume", first / "last.pt", "--out", tmp_path / "more", "--epochs", "2")
    assert code == 0, err
    assert (tmp_path / "more" / "best.pt").is_file() and (first / "best.pt").is_file()
    fingerprint = (first / "fingerprint.json").read_text()  # what the recipe read: not read again on resume
    assert (tmp_path / "more" / "fingerprint.json").read_text() == fingerprint


def test_carvana_gif_masks_train(tmp_path, capsys):
    images, masks = data(tmp_path)
    for mask in sorted(masks.iterdir()):
        Image.open(mask).convert("P").save(masks / f"{mask.stem}_mask.gif")
        mask.unlink()
    code, _, err = run_cli(capsys, *train_args(images, masks, tmp_path / "run", "--mask-suffix", "_mask"))
    assert code == 0, err


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
    from unetkit.runtime.ownership import MARKER

    images, masks = data(tmp_path)
    out = user_folder(tmp_path, {MARKER: b"{}", "config.json": b"{}", ".metrics.k3j2h1ab.tmp.csv": b"half"})
    code, text, err = run_cli(capsys, *train_args(images, masks, out))
    assert code == 0, err
    assert "removed 1 temporary file" in text and not (out / ".metrics.k3j2h1ab.tmp.csv").exists()


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
    from epochs_alone import train

    from unetkit.train import TrainConfig
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
    for same_list in ((0, 255), np.array([0, 255], np.uint8)):  # a tuple was refused as "not a list"
        given = config(mask_values=same_list)
        given.validate()
        assert given.mask_values == [0, 255] and [type(v) for v in given.mask_values] == [int, int]
    with pytest.raises(UnetkitError, match=r"^TrainConfig mask_values=array\(\[\[0, 0\], \[0, 0\]\]\) is not a list"):
        config(mask_values=np.zeros((2, 2), int)).validate()  # one line, not the array's repr
    assert not (tmp_path / "run").exists()


def test_a_killed_training_resumes_and_its_finished_run_is_refused_after(tmp_path, capsys):
    images, masks = data(tmp_path)
    out = tmp_path / "run"
    killed(train_args(images, masks, out, "--epochs", "3"), "last.pt", 2)  # dies before epoch 2's last.pt
    assert (out / "last.pt").is_file()
    code, _out, err = run_cli(capsys, "train", "--resume", out / "last.pt", "--no-progress", "--no-report")
    assert code == 0, err
    assert not [p.name for p in out.iterdir() if ".tmp" in p.name]
    code, _out, err = run_cli(capsys, "train", "--resume", out / "last.pt", "--no-progress")
    assert_one_line_error(code, err, "already finished at epoch 3")


def test_a_run_from_the_nuclei_model_keeps_its_instances_on_a_few_images(tmp_path, capsys):
    """Issue 33's loop on four images (28 ids): read as the model's instances and its classes,
    not as 29 semantic classes with a fresh output layer; from scratch the same masks are said
    plainly to be many classes, with the option that reads them the other way."""
    images, masks = nuclei_with_ids(tmp_path / "data", count=4)
    options = ["--epochs", "1", "--no-progress", "--no-report", "--amp", "off", "--val-fraction", "0.25"]
    code, text, err = run_cli(capsys, "train", "--images", images, "--masks", masks, "--out", tmp_path / "from",
                              "--init-from", "nuclei", *options)  # fmt: skip
    assert code == 0, err
    assert "as the --init-from model was" in text and "afresh" not in text
    config = json.loads((tmp_path / "from" / "config.json").read_text())
    from unetkit.train import load_checkpoint
    from unetkit.zoo import zoo_model

    model_target = load_checkpoint(zoo_model("nuclei").weights)["mask_values"]["instances"]
    assert config["instance_masks"] is True and config["instance_target"] == model_target
    # The summary says what best.pt holds: it said the tuned epoch's Dice where best.pt was the start (red-team)
    best, line = (
        load_checkpoint(tmp_path / "from" / "best.pt"),
        next(line for line in text.splitlines() if line.startswith("checkpoints: ")),
    )
    assert ("the --init-from model as it started" in line) == (best["epoch"] == 0)
    if best["epoch"] and "average" not in line:
        assert f"best val Dice {best['best_dice']:.4f}" in line
    code, text, err = run_cli(capsys, "train", "--images", images, "--masks", masks, "--out", tmp_path / "scratch",
                              *TINY_TRAIN, "--val-fraction", "0")  # fmt: skip
    assert code == 0, err
    assert "the masks hold 29 values, so this trains 29 classes from 4 images" in text and "--instance-masks" in text


def test_a_config_files_init_from_is_read_against_its_folder(tmp_path, rgb_run, monkeypatch, capsys):
    images, masks = make_shapes(tmp_path / "data", count=4, rgb=True)
    conf = tmp_path / "conf"
    (conf / "models").mkdir(parents=True)
    (conf / "models" / "m.pt").write_bytes(rgb_run[3].read_bytes())
    (conf / "run.toml").write_text(f'images = "{images}"\nmasks = "{masks}"\ninit_from = "models/m.pt"\n')
    monkeypatch.chdir(tmp_path)
    code, _text, err = run_cli(capsys, "train", "--config", conf / "run.toml", "--out", tmp_path / "run", *TINY_TRAIN)
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["init_from"] == str(conf / "models" / "m.pt")


@pytest.mark.parametrize(
    ("suffix", "nth"),
    [
        (".unetkit-run.json", 1),
        ("best.pt", 1),
        # written by the same atomic_write as .unetkit-run.json: 8 s of the default suite for no new path
        pytest.param("config.json", 1, marks=pytest.mark.slow),
        pytest.param("config.toml", 1, marks=pytest.mark.slow),
    ],
)
def test_the_same_train_command_after_a_kill_at_each_first_write(tmp_path, capsys, suffix, nth):
    images, masks = data(tmp_path)
    out = tmp_path / "run"
    killed(train_args(images, masks, out), suffix, nth)
    code, _text, err = run_cli(capsys, *train_args(images, masks, out))
    assert code == 0, err
    assert (out / "best.pt").is_file() and not [p.name for p in out.iterdir() if ".tmp" in p.name]


def test_an_architecture_option_the_model_does_not_read_is_refused(tmp_path, capsys):
    """`--encoder resnet18 --depth 7` trained the encoder's own depth, and config.json said 7."""
    from synthetic import assert_one_line_error, run_cli

    images, masks = data(tmp_path)
    code, _, err = run_cli(capsys, *train_args(images, masks, tmp_path / "run", "--model", "dumbnet"))
    assert_one_line_error(code, err, "--depth: not read by a dumbnet", "--base-channels", "drop --depth")
    assert not (tmp_path / "run").exists()


def test_what_the_encoder_arguments_alone_decide_is_refused_before_the_data_is_read(tmp_path, capsys):
    """A missing --encoder-weights file (or a missing timm, an unknown encoder) was said only after
    the training set's fingerprint: a large folder's minutes for an answer the arguments hold."""
    from synthetic import assert_one_line_error, run_cli

    images, masks = data(tmp_path)
    args = ["train", "--images", images, "--masks", masks, "--out", tmp_path / "run", "--epochs", "1"]
    code, out, err = run_cli(capsys, *args, "--encoder", "resnet18", "--encoder-weights", tmp_path / "r18.pth")
    assert_one_line_error(code, err, "r18.pth: no such file", "--encoder-weights takes imagenet")
    assert "recipe" not in out and not (tmp_path / "run").exists()
