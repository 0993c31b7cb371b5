"""What `predict` wrote into an --out folder, so that --overwrite replaces only its own outputs.

A user's file of the same name (a ground-truth mask in `--out data/masks`) is never predict's, nor
is a prediction the user corrected by hand since (the first step of training again from corrected
masks): the manifest keeps each output's sha256 as written, and a file whose content differs is
the user's now. An unreadable manifest counts as empty, which is the safe side.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from unetkit.runtime.atomic import write_json

MANIFEST = ".unetkit-predict.json"


def digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


@dataclass
class Manifest:
    folder: Path
    # name -> sha256 as written; None while planned (a killed run's half-done outputs stay predict's)
    files: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        try:
            files = json.loads((folder / MANIFEST).read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return cls(folder)
        if isinstance(files, list):  # names only, as first written
            files = dict.fromkeys(files)
        if not isinstance(files, dict):
            return cls(folder)
        return cls(folder, {str(name): value if isinstance(value, str) else None for name, value in files.items()})

    def lists(self, name: str) -> bool:
        return name in self.files

    def edited(self, path: Path) -> bool:
        """Whether predict wrote `path` and its content has changed since."""
        written = self.files.get(path.name)
        return written is not None and path.is_file() and digest(path) != written

    def plan(self, outputs: Iterable[Path]) -> None:
        """Name `outputs` before they are written: a file predict writes is always listed."""
        self.files.update(dict.fromkeys(path.name for path in outputs))
        self._write()

    def forget(self, removed: Iterable[Path]) -> None:
        """Drop files predict removed (earlier outputs it no longer writes)."""
        for path in removed:
            self.files.pop(path.name, None)
        self._write()

    def confirm(self, outputs: Iterable[Path]) -> None:
        """Keep the content of the outputs now in the folder."""
        self.files.update({path.name: digest(path) for path in outputs if path.is_file()})
        self._write()

    def _write(self) -> None:
        write_json(self.folder / MANIFEST, {"written_by": "unetkit predict", "files": dict(sorted(self.files.items()))})
