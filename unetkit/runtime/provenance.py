"""Whether a file was written by unetkit, read from the file itself.

An output named by the user (`evaluate --json`, `report --out`, `export --onnx/--safetensors/
--bioimageio`) may replace an earlier output of unetkit, never a user's file that happens to have
that name. Each format says who wrote it: unetkit's JSON reports carry "written_by", its HTML a
generator meta tag, its ONNX and safetensors files a "unetkit" metadata entry, its bioimage.io
packages a description that names unetkit. Whatever cannot be read counts as the user's.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

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
