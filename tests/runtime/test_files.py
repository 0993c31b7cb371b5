"""runtime/: writing files whole (the recording hook predict's manifest uses, strict JSON), the
pixel limit's setting, and the folder lock shared by train and predict."""

from __future__ import annotations

import json
import os

import pytest

from unetkit.data.limits import DEFAULT_MAX_PIXELS, MAX_PIXELS_VARIABLE, check_declared_pixels, max_pixels
from unetkit.errors import UnetkitError
from unetkit.runtime.atomic import atomic_write, recording, strict_json, write_json
from unetkit.runtime.folder_lock import PREDICT_LOCK_NAME, RunLock


def test_recording_sees_each_file_complete_before_it_lands(tmp_path):
    seen = []

    def record(target, temporary):
        seen.append((target.name, temporary.read_text(), target.exists()))

    with recording(tmp_path, record):
        atomic_write(tmp_path / "a.txt", lambda t: t.write_text("whole"))
    atomic_write(tmp_path / "b.txt", lambda t: t.write_text("not recorded"))  # the hook is gone
    (tmp_path / "sub").mkdir()
    with recording(tmp_path, record):
        atomic_write(tmp_path / "sub" / "c.txt", lambda t: t.write_text("another folder"))
    assert seen == [("a.txt", "whole", False)]


def test_json_is_strict_with_null_for_numbers_that_are_not(tmp_path):
    write_json(tmp_path / "r.json", {"dice": float("nan"), "rows": [1.0, float("inf"), (2, float("-inf"))]})
    assert json.loads((tmp_path / "r.json").read_text()) == {"dice": None, "rows": [1.0, None, [2, None]]}
    assert strict_json({"a": [float("nan")]}) == {"a": [None]}


def test_the_pixel_limit_reads_its_setting(monkeypatch, tmp_path):
    monkeypatch.delenv(MAX_PIXELS_VARIABLE, raising=False)
    assert max_pixels() == DEFAULT_MAX_PIXELS == 2**28
    monkeypatch.setenv(MAX_PIXELS_VARIABLE, "4000000000")
    assert max_pixels() == 4_000_000_000
    check_declared_pixels(tmp_path / "slide.tif", 60_000, 60_000)  # raised: a real slide passes
    for bad in ("lots", "0", "-5", "1e9"):
        monkeypatch.setenv(MAX_PIXELS_VARIABLE, bad)
        with pytest.raises(UnetkitError, match="whole number"):
            max_pixels()


def test_a_second_predict_lock_names_the_first_and_a_dead_one_is_taken_over(tmp_path):
    lock = tmp_path / PREDICT_LOCK_NAME
    lock.write_text(f"{os.getppid()}\n")  # a live process
    with pytest.raises(UnetkitError, match=f"another unetkit predict \\(process {os.getppid()}\\)"):
        RunLock(tmp_path, name=PREDICT_LOCK_NAME, holder="unetkit predict").acquire()
    lock.write_text("999999999\n")  # no such process
    notes = []
    with RunLock(tmp_path, notes.append, name=PREDICT_LOCK_NAME, holder="unetkit predict"):
        assert lock.read_text().strip() == str(os.getpid())
    assert not lock.exists() and "stale lock of a unetkit predict" in notes[0]


def test_a_lock_on_a_read_only_file_system_is_one_line(tmp_path, monkeypatch):
    """There a lock's temporary file cannot be written, and unlinking it, though it was never
    made, fails with EROFS too: the user still gets the one line, not that second error's traceback
    (red-team finding, a read-only mount)."""
    import errno
    from pathlib import Path

    def read_only(*_args, **_kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "write_text", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(UnetkitError, match=r"cannot create the run lock \(Read-only file system\)"):
        RunLock(tmp_path, name=PREDICT_LOCK_NAME, holder="unetkit predict").acquire()
