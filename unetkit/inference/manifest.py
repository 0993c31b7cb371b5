"""What `predict` wrote into an --out folder, so that --overwrite replaces only its own outputs.

A user's file of the same name (a ground-truth mask in `--out data/masks`) is never predict's, nor
is a prediction the user corrected by hand since (the first step of training again from corrected
masks): the manifest keeps each output's sha256 as written, and a file whose content differs is
the user's now. An unreadable manifest counts as empty, which is the safe side.

Each output's hash is recorded the moment it is written, before it is renamed into place
(`recording`, through runtime/atomic.py), in a journal beside the manifest: a run killed after 22
of 60 masks leaves 22 hashes, so a mask corrected since is known as the user's. One line is
appended per file (a whole rewrite per file would cost O(n^2) for a folder of thousands); the
journal is folded into the manifest when the run ends, and read with it when it did not.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from unetkit.runtime.atomic import recording, write_json

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
