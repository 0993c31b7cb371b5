"""Writing files so that a crash never leaves a half-written one behind.

Every file unetkit writes (checkpoints, config.json, metrics.csv, curves.png, predicted masks)
goes through `atomic_write`: the content is written to a temporary file in the same folder and
then renamed over the target. A rename within one file system is atomic, so a reader (or a run
killed with SIGKILL) sees either the old file or the new one, never a mixture.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from unetkit.errors import UnetkitError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; give results the usual permissions instead.
FILE_MODE = 0o666 & ~_current_umask()
# In torch's messages for a failed write: a full disk mid-checkpoint surfaces as "[enforce fail at
# inline_container.cc] unexpected pos 37120 vs 37016" (measured on a 3 MB tmpfs), naming no cause.
WRITE_FAILURES = ("write", "Write", "space", "I/O", "Errno", "inline_container", "unexpected pos")
WRITE_FIX = "check that the folder is writable and the disk has space, or choose another output folder"


def ensure_folder(folder: str | Path) -> Path:
    """Create `folder` (and its parents) if needed; a one-line UnetkitError if that is impossible."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UnetkitError(f"{folder}: exists but is not a folder; choose another output folder") from None
    except OSError as err:
        raise UnetkitError(f"{folder}: cannot create the folder ({err.strerror or err}); {WRITE_FIX}") from None
    return folder


# folder -> called with (target, temporary) before each rename into it (predict's manifest journal)
_recorders: dict[str, Callable[[Path, Path], None]] = {}


def _folder_key(folder: Path) -> str:
    return os.path.abspath(folder)


@contextmanager
def recording(folder: Path, record: Callable[[Path, Path], None]) -> Iterator[None]:
    """While open, every atomic_write into `folder` calls `record(target, temporary)` once the
    content is complete and before it is renamed into place, so what is recorded is exactly what
    lands, and a file never lands unrecorded."""
    key = _folder_key(folder)
    _recorders[key] = record
    try:
        yield
    finally:
        _recorders.pop(key, None)


def atomic_write(path: str | Path, write: Callable[[Path], None], durable: bool = False) -> None:
    """Call `write(temporary_path)`, then rename the temporary file to `path`.

    The temporary name keeps the target's suffix, because Pillow and matplotlib pick the format
    from it. `durable` also fsyncs the data before the rename, so the file survives a power cut,
    not only a killed process (worth it for checkpoints, too slow for thousands of masks).
    """
    path = Path(path)
    ensure_folder(path.parent)
    try:
        handle, name = tempfile.mkstemp(
            prefix=_temporary_prefix(path.name), suffix=f".tmp{path.suffix}", dir=path.parent
        )
        os.close(handle)
        temporary = Path(name)
        try:
            write(temporary)
            os.chmod(temporary, FILE_MODE)
            if durable:
                with temporary.open("rb") as written:
                    os.fsync(written.fileno())
            record = _recorders.get(_folder_key(path.parent))
            if record is not None:
                record(path, temporary)
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    except OSError as err:
        raise UnetkitError(f"{path}: cannot write ({err.strerror or err}); {WRITE_FIX}") from None
    except RuntimeError as err:
        # torch.save wraps a full disk or an I/O error in a RuntimeError; other RuntimeErrors (an
        # export that fails, a bug) are not write errors and keep their own message.
        first = (str(err).strip().splitlines() or [err.__class__.__name__])[0][:100]
        if not any(word in str(err) for word in WRITE_FAILURES):
            raise
        raise UnetkitError(f"{path}: cannot write ({first}); {WRITE_FIX}") from None


def strict_json(data: Any) -> Any:
    """`data` with every float that is not finite (NaN, inf) as None, in dicts, lists and tuples."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {key: strict_json(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [strict_json(value) for value in data]
    return data


# A temporary name keeps at most this much of the target's stem: a 250-character image name gives
# a 250-character mask name, which is legal, while ".<stem>.<random>.tmp<suffix>" would pass the
# file system's 255-byte limit.
TEMPORARY_STEM_CHARACTERS = 64


def _temporary_prefix(name: str) -> str:
    return f".{Path(name).stem[:TEMPORARY_STEM_CHARACTERS]}."


def is_temporary_of(name: str, final_names: Iterable[str]) -> bool:
    """Whether `name` is a temporary file that `atomic_write` makes for one of `final_names`
    (".<stem>.<random>.tmp<suffix>", mkstemp's random part: 8 of [a-z0-9_])."""
    return any(
        re.fullmatch(
            re.escape(_temporary_prefix(final)) + r"[a-z0-9_]{8}" + re.escape(f".tmp{Path(final).suffix}"), name
        )
        for final in final_names
    )


def remove_stale_temporaries(folder: str | Path, final_names: Iterable[str]) -> list[Path]:
    """Delete the temporary files that killed writes of `final_names` left in `folder`; only the
    names atomic_write makes for those files, so a user's `.notes.tmp` is never touched. Call it
    only while holding the folder (the run lock), so no live write is touched."""
    final_names = list(final_names)
    removed = []
    for path in Path(folder).glob(".*.tmp*"):
        if path.is_file() and is_temporary_of(path.name, final_names):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def write_json(path: Path, data: Any) -> None:
    """Indented strict JSON, written atomically: a report or config.json is whole or absent. A
    number that is not one (NaN: no objects to score in an image) is written null, as strict
    readers (JavaScript, jq, QuPath scripts) reject Python's NaN."""
    text = json.dumps(strict_json(data), indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda temporary: temporary.write_text(text))
