"""The second bad-input battery (issue 11): what a careless or unlucky user does that the first
battery (test_bad_input.py) did not try. Same form: exit code 2, one line naming the file or
option and the fix, no traceback; and for every destructive case, the user's files are
byte-for-byte unchanged (hashed before and after)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from synthetic import assert_one_line_error, make_shapes, run_cli
from test_bad_input import Case, data, train_args

from unetkit.train.run_lock import LOCK_NAME


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
        ("already exists", "never replaces", "--overwrite"),
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
    return Case(train_args(images, masks, out), ("another training", "is writing to this run folder", "--out"))


def case_class_weights_of_the_wrong_length(tmp_path, **_):
    images, masks = data(tmp_path)
    out = tmp_path / "run"
    return Case(
        train_args(images, masks, out, "--class-weights", "1,2,3"), ("--class-weights has 3", "one weight per class")
    )


CASES = {name.removeprefix("case_"): function for name, function in globals().items() if name.startswith("case_")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_2(name, tmp_path, rgb_run, monkeypatch, capsys):
    case = CASES[name](tmp_path=tmp_path, rgb_run=rgb_run, monkeypatch=monkeypatch)
    capsys.readouterr()
    code, _out, err = run_cli(capsys, *case.args)
    assert_one_line_error(code, err, *case.needles)
    case.after()


# ---- the same situations done right just work ----


def test_predict_overwrite_replaces_an_earlier_prediction(rgb_run, tmp_path, capsys):
    _root, images, _masks, checkpoint = rgb_run
    args = ["predict", "--checkpoint", checkpoint, images, "--out", tmp_path / "pred", "--no-progress"]
    assert run_cli(capsys, *args)[0] == 0
    assert run_cli(capsys, *args)[0] == 2  # a second time: refused
    assert run_cli(capsys, *args, "--overwrite")[0] == 0


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
