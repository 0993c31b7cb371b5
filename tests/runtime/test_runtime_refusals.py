"""Refusals of writes (disk full, read-only, no permission: one line, no temporaries), locks, limits
and provenance: broken input gets exit code 2 and one line naming the file or option and the fix,
no traceback, and no user file changes (the harness: tests/refusals.py)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from refusals import (
    EACCES,
    ENOSPC,
    EROFS,
    Case,
    bad_option,
    bad_value,
    cases_of,
    data,
    export_write_fault,
    finished_run,
    no_temporaries_in,
    predict_args,
    predict_write_fault,
    refused,
    train_args,
    train_write_fault,
    unchanged,
)
from synthetic import run_cli

import unetkit.models.checkpoint
import unetkit.runtime.atomic
import unetkit.train.setup
from unetkit.runtime.folder_lock import LOCK_NAME, PREDICT_LOCK_NAME
from unetkit.runtime.ownership import MANIFEST


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


def case_second_predict_into_a_folder_in_use(tmp_path, rgb_run, **_):
    out = tmp_path / "pred"
    out.mkdir()
    (out / PREDICT_LOCK_NAME).write_text(f"{os.getppid()}\n")  # a live process holds the folder
    args = predict_args(rgb_run[3], rgb_run[1], out)
    return Case(args, ("another unetkit predict", f"process {os.getppid()}", "choose another --out"), unchanged(out))


def case_second_predict_with_overwrite_into_a_folder_in_use(tmp_path, rgb_run, capsys, **_):
    out = tmp_path / "pred"
    assert run_cli(capsys, *predict_args(rgb_run[3], rgb_run[1], out))[0] == 0
    (out / PREDICT_LOCK_NAME).write_text(f"{os.getppid()}\n")
    args = predict_args(rgb_run[3], rgb_run[1], out, "--overwrite")
    return Case(args, ("another unetkit predict", "wait for it to finish"), unchanged(out))


def case_train_disk_full_at_the_first_checkpoint(tmp_path, monkeypatch, **_):
    """torch.save on a full disk says only "[enforce fail at inline_container.cc] unexpected pos"."""

    def full(*_args, **_kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 37120 vs 37016")

    monkeypatch.setattr(torch, "save", full)
    images, masks = data(tmp_path)
    out = tmp_path / "run"

    def no_temporaries() -> None:
        assert not [p.name for p in out.iterdir() if ".tmp" in p.name]

    return Case(train_args(images, masks, out), ("best.pt", "cannot write", "disk has space"), no_temporaries)


def case_export_bioimageio_into_a_read_only_folder(tmp_path, rgb_run, monkeypatch, **_):
    out = tmp_path / "export"
    real = unetkit.runtime.atomic.tempfile.mkstemp

    def read_only_out(*args, dir=None, **kwargs):  # the package's own temporary folder stays writable
        if Path(dir) == out:
            raise EROFS
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(unetkit.runtime.atomic.tempfile, "mkstemp", read_only_out)
    args = ["export", "--checkpoint", rgb_run[3], "--bioimageio", out / "model.zip"]
    return Case(args, ("model.zip", "Read-only file system"), no_temporaries_in(out))


CASES = cases_of(
    globals(),
    {
        "negative_epochs": bad_option("--epochs", "-3", "1 or more"),
        "zero_epochs": bad_option("--epochs", "0", "1 or more"),
        "lr_zero": bad_option("--lr", "0", "above 0"),
        "lr_negative": bad_option("--lr", "-0.01", "above 0"),
        "lr_nan": bad_option("--lr", "nan", "above 0"),
        "val_fraction_above_one": bad_option("--val-fraction", "1.5", "between 0 and 1"),
        "val_fraction_one": bad_option("--val-fraction", "1", "between 0 and 1"),
        "val_fraction_negative": bad_option("--val-fraction", "-0.2", "between 0 and 1"),
        "batch_size_zero": bad_option("--batch-size", "0", "1 or more"),
        "seed_above_32_bits": bad_value(("--seed", "1099511627776"), "--seed", "0 to 4294967295"),
        "negative_seed": bad_value(("--seed=-5",), "--seed -5", "0 to 4294967295"),
        "ignore_value_of_1e11": bad_value(("--ignore-value", "100000000000"), "--ignore-value", "0 to 65535"),
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
        "threshold_above_one": bad_value(("--threshold", "2"), "--threshold 2", "between 0 and 1", command="predict"),
        "threshold_nan": bad_value(("--threshold", "nan"), "--threshold nan", "between 0 and 1", command="predict"),
        "threshold_negative": bad_value(("--threshold=-1",), "--threshold -1", "between 0 and 1", command="predict"),
        "threshold_one": bad_value(("--threshold", "1"), "--threshold 1", "between 0 and 1", command="predict"),
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
        "train_config_toml_disk_full": train_write_fault("config.toml", ENOSPC, "No space left"),
        "train_config_json_read_only": train_write_fault("config.json", EROFS, "Read-only"),
        "train_metrics_disk_full": train_write_fault("metrics.csv", ENOSPC, "No space left"),
        "train_curves_disk_full": train_write_fault("curves.png", ENOSPC, "No space left"),
        "train_last_checkpoint_disk_full": train_write_fault("last.pt", ENOSPC, "No space left"),
        "train_best_checkpoint_read_only": train_write_fault("best.pt", EROFS, "Read-only"),
        "predict_mask_disk_full": predict_write_fault("img02.png", ENOSPC, "No space left"),
        "predict_manifest_read_only": predict_write_fault(MANIFEST, EROFS, "Read-only"),
        "predict_probabilities_disk_full": predict_write_fault(
            "img01_probs.tif", ENOSPC, "No space", "--probabilities"
        ),
        "predict_overlay_no_permission": predict_write_fault("img00_overlay.png", EACCES, "Permission", "--overlay"),
        "predict_objects_disk_full": predict_write_fault("img03_objects.tif", ENOSPC, "No space", "--instances"),
        "predict_object_table_disk_full": predict_write_fault("img00_objects.csv", ENOSPC, "No space", "--instances"),
        "predict_geojson_disk_full": predict_write_fault(".geojson", ENOSPC, "No space", "--instances", "--geojson"),
        "predict_imagej_rois_read_only": predict_write_fault(
            ".zip", EROFS, "Read-only", "--instances", "--imagej-rois"
        ),
        "export_onnx_disk_full": export_write_fault("--onnx", "model.onnx", ENOSPC, "No space left"),
        "export_safetensors_read_only": export_write_fault("--safetensors", "m.safetensors", EROFS, "Read-only"),
        "export_bioimageio_disk_full": export_write_fault("--bioimageio", "model.zip", ENOSPC, "No space left"),
    },
)


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused(name, tmp_path, rgb_run, monkeypatch, capsys):
    refused(CASES[name], tmp_path, rgb_run, monkeypatch, capsys)


# ---- the same situations done right just work ----


def test_a_stale_lock_of_a_killed_run_is_taken_over(tmp_path, capsys):
    images, masks = data(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK_NAME).write_text(dead.stdout)
    code, stdout, err = run_cli(capsys, *train_args(images, masks, out))
    assert code == 0, err
    assert "stale lock" in stdout and not (out / LOCK_NAME).exists()  # released at the end


def test_cleanup_takes_only_mkstemp_shaped_temporaries(tmp_path, capsys):
    """A user's `.last.mycopy.tmp.pt` in the run folder is not a temporary unetkit made (8 random characters)."""
    out = finished_run(tmp_path, "run")
    mine = out / ".last.mycopy.tmp.pt"
    mine.write_bytes(b"my copy")
    code, _, err = run_cli(capsys, "train", "--resume", out / "last.pt", "--epochs", "2", "--no-progress")
    assert code == 0, err
    assert mine.read_bytes() == b"my copy"


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


def test_a_killed_stale_predict_lock_is_taken_over(tmp_path, rgb_run, capsys):
    out = tmp_path / "pred"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / PREDICT_LOCK_NAME).write_text(dead.stdout)
    code, stdout, err = run_cli(capsys, *predict_args(rgb_run[3], rgb_run[1], out))
    assert code == 0, err
    assert "stale lock" in stdout and not (out / PREDICT_LOCK_NAME).exists()
