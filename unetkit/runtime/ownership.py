"""Which files unetkit wrote, and so may replace or remove: one rule for train, predict and export.

A file is unetkit's only where unetkit can show that it wrote it; everything else is the user's
and is never replaced or removed, whatever its name. Each kind of output shows it its own way,
all here:
- a run folder (train): MARKER, written under the run lock before anything else, marks the
  folder, and in a marked folder the names a run writes (RUN_FILES, RUN_FOLDERS) are unetkit's
  (`foreign_files` lists the rest);
- a predict folder: its manifest (`Manifest`) records each output's sha256 the moment it is
  written, and a file is predict's while it is listed and its content is what was recorded (a
  mask corrected by hand since is the user's);
- a training set that napari's "Add to training set" fills: its record (TRAINING_SET_RECORD)
  keeps each written file's sha256, and a file is unetkit's while its content is what was recorded;
- one named output (`evaluate --json`, `report --out`, `export --onnx/--safetensors/--bioimageio`):
  its own content says who wrote it (`written_by_unetkit`): unetkit's JSON reports carry
  "written_by", its HTML a generator meta tag, its ONNX and safetensors files a "unetkit" metadata
  entry, its bioimage.io packages a description that names unetkit. What cannot be read is the user's.
In each, the temporaries of a name unetkit writes (runtime/atomic.py's shape) are unetkit's too.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from unetkit.runtime.atomic import is_temporary_of, recording, write_json
from unetkit.runtime.folder_lock import LOCK_NAME, is_lock_temporary

# ---- one named output: its content says who wrote it ----

WRITER = "unetkit"
HTML_GENERATOR = f'<meta name="generator" content="{WRITER}">'
METADATA_KEY = "unetkit"  # in ONNX metadata_props and the safetensors header's __metadata__


def written_by_unetkit(path: Path) -> bool:
    """True when `path` is one of unetkit's outputs (by its content, whatever its name)."""
    readers = {".json": _json, ".html": _html, ".onnx": _onnx, ".safetensors": _safetensors, ".zip": _zip}
    reader = readers.get(path.suffix.lower())
    try:
        return reader is not None and reader(path)
    except Exception:  # noqa: BLE001  (a file no reader understands, e.g. protobuf's DecodeError: not ours)
        return False


# JSON reports a command may replace; the run folder's and predict's markers ("unetkit train",
# "unetkit predict") are not among them: replacing one would strand the folder it describes.
REPLACEABLE_JSON = (f"{WRITER} evaluate", f"{WRITER} check")


def _json(path: Path) -> bool:
    data = json.loads(path.read_text(encoding="utf-8"))
    return isinstance(data, dict) and data.get("written_by") in REPLACEABLE_JSON


def _html(path: Path) -> bool:
    with path.open("rb") as handle:
        return HTML_GENERATOR.encode() in handle.read(4096)


def _onnx(path: Path) -> bool:
    import onnx  # the onnx extra: without it, no ONNX file can be written either

    model = onnx.load(str(path), load_external_data=False)
    return any(entry.key == METADATA_KEY for entry in model.metadata_props)


def _safetensors(path: Path) -> bool:
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > 100_000_000:
            return False
        header = json.loads(handle.read(length))
    return isinstance(header, dict) and METADATA_KEY in (header.get("__metadata__") or {})


def _zip(path: Path) -> bool:
    with zipfile.ZipFile(path) as package:
        descriptions = [name for name in package.namelist() if name in ("bioimageio.yaml", "rdf.yaml")]
        return any(WRITER in package.read(name).decode("utf-8", "replace") for name in descriptions)


# ---- a run folder: marked, and the names a run writes ----

MARKER = ".unetkit-run.json"
# Every name a run (train, then the demo's held-out step) writes in its folder.
RUN_FILES = (
    "best.pt",
    "last.pt",
    "start.pt",
    "config.json",
    "config.toml",
    "fingerprint.json",
    "metrics.csv",
    "curves.png",
    "report.html",
    "heldout.json",
)
RUN_FOLDERS = ("heldout", "tensorboard")


def foreign_files(out: Path) -> list[str]:
    """Names in `out` that are not unetkit's: all but the run lock in an unmarked folder; in a
    marked one, all but the names a run writes and their temporaries."""
    if not out.is_dir():
        return []
    marked = (out / MARKER).is_file()
    return sorted(entry.name for entry in out.iterdir() if not _ours(entry, marked))


def _ours(entry: Path, marked: bool) -> bool:
    if entry.name == LOCK_NAME or is_lock_temporary(entry.name):
        return True  # a killed run's lock is taken over as before (runtime/folder_lock.py)
    if is_temporary_of(entry.name, (MARKER,)):
        return True  # a run killed while marking the folder: only unetkit writes that name
    if not marked:
        return False
    if entry.is_dir():
        return entry.name in RUN_FOLDERS
    return entry.name in (MARKER, *RUN_FILES) or is_temporary_of(entry.name, (MARKER, *RUN_FILES))


def mark_run_folder(out: Path) -> None:
    """Write MARKER (under the run lock, before any other file of the run)."""
    if not (out / MARKER).is_file():
        write_json(out / MARKER, {"written_by": "unetkit train", "created": time.strftime("%Y-%m-%dT%H:%M:%S")})


def mark_last_steps(out: Path, state: str) -> None:
    """Record in MARKER whether the steps after the epochs (curves, object rule, report) are
    "pending" (from the first epoch on) or "done": a run killed after its last epoch but before
    them counted as finished, kept no object rule nor report, and refused --resume (a red-team
    finding); resumed, it now does those steps alone."""
    marker = out / MARKER
    data = json.loads(marker.read_text()) if marker.is_file() else {"written_by": "unetkit train"}
    write_json(marker, {**data, "last_steps": state})


def last_steps(out: Path) -> str | None:
    """MARKER's "last_steps" ("pending", "done"), or None (no marker, or a run of an older version)."""
    try:
        return json.loads((out / MARKER).read_text()).get("last_steps")
    except (OSError, ValueError, AttributeError):
        return None


# ---- a predict folder: the manifest of what predict wrote, with hashes ----

MANIFEST = ".unetkit-predict.json"
JOURNAL = ".unetkit-predict.journal"


def digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


@dataclass
class Manifest:
    folder: Path
    # name -> the sha256 of each version predict wrote (the last two: one being replaced, one new);
    # [] planned and not written yet; None: listed by a version that kept names only (predict's)
    files: dict[str, list[str] | None] = field(default_factory=dict)
    unfinished: bool = False  # a run stopped before its end (killed): a rerun may complete it

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        manifest = cls._read_snapshot(folder)
        try:
            lines = (folder / JOURNAL).read_text().splitlines()
        except OSError:
            return manifest
        manifest.unfinished = True  # only a run that ended folds its journal away
        for line in lines:
            try:
                entry = json.loads(line)
                manifest._add(str(entry["name"]), str(entry["sha256"]))
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by the kill
        return manifest

    @classmethod
    def _read_snapshot(cls, folder: Path) -> Manifest:
        try:
            data = json.loads((folder / MANIFEST).read_text())
            files = data["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return cls(folder)
        if isinstance(files, list):  # names only, as first written
            files = dict.fromkeys(files)
        if not isinstance(files, dict):
            return cls(folder)
        return cls(folder, {str(name): _hashes(value) for name, value in files.items()}, data.get("unfinished") is True)

    def lists(self, name: str) -> bool:
        return name in self.files

    def edited(self, path: Path) -> bool:
        """Whether `path` is not as predict last wrote it: changed since (corrected by hand), or
        there without predict having recorded writing it."""
        written = self.files.get(path.name, [])
        return written is not None and path.is_file() and digest(path) not in written

    def plan(self, outputs: Iterable[Path]) -> None:
        """Name `outputs` before they are written, and mark the run unfinished until it ends."""
        for path in outputs:
            self.files.setdefault(path.name, [])
        self.unfinished = True
        self._write()

    def forget(self, removed: Iterable[Path]) -> None:
        """Drop files predict removed (earlier outputs it no longer writes)."""
        for path in removed:
            self.files.pop(path.name, None)
        self._write()

    def fold(self, finished: bool) -> None:
        """The run ended (`finished`) or stopped on an error: keep each file's current hash (the
        version now there), fold the journal in; a run that did not finish stays unfinished."""
        for name, hashes in self.files.items():
            path = self.folder / name
            if hashes and len(hashes) > 1 and path.is_file():  # one hash: nothing to choose, nothing read
                now = digest(path)
                self.files[name] = [now] if now in hashes else hashes[-1:]
        self.unfinished = not finished
        self._write()
        (self.folder / JOURNAL).unlink(missing_ok=True)

    def _add(self, name: str, sha256: str) -> None:
        hashes = self.files.get(name) or []
        self.files[name] = [*hashes[-1:], sha256] if sha256 not in hashes else hashes

    def _write(self) -> None:
        data = {
            "written_by": "unetkit predict",
            "unfinished": self.unfinished,
            "files": dict(sorted(self.files.items())),
        }
        write_json(self.folder / MANIFEST, data)

    @contextmanager
    def journal(self) -> Iterator[None]:
        """Record, in the journal, the hash of every file written into the folder while open."""
        lock = threading.Lock()  # writer threads (inference/batched.py) record in turn
        with (self.folder / JOURNAL).open("a", encoding="utf-8") as handle:

            def record(path: Path, temporary: Path) -> None:
                sha256 = digest(temporary)
                with lock:
                    self._add(path.name, sha256)
                    handle.write(json.dumps({"name": path.name, "sha256": sha256}) + "\n")
                    handle.flush()  # in the file before the output is in place: a kill loses neither

            with recording(self.folder, record):
                yield


def _hashes(value: object) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(item) for item in value]
    return None


# ---- a training-set folder (the napari plugin's pairs): a record of each written file's sha256 ----

TRAINING_SET_RECORD = ".unetkit-training-set.json"


def recorded_files(folder: Path) -> dict[str, str]:
    """{path relative to `folder`: sha256} of the files its record says unetkit wrote."""
    try:
        data = json.loads((folder / TRAINING_SET_RECORD).read_text())
        return {str(k): str(v) for k, v in data.get("files", {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}


def replaceable(folder: Path, relative: str, recorded: dict[str, str]) -> bool:
    """Whether unetkit may write `folder / relative`: nothing is there, or what is there is the
    file it recorded writing, unedited."""
    path = folder / relative
    return not path.exists() or recorded.get(relative) == digest(path)


def record_files(folder: Path, recorded: dict[str, str]) -> None:
    write_json(folder / TRAINING_SET_RECORD, {"written_by": "unetkit napari", "files": recorded})
