"""The refusal batteries' shared harness: every case runs one broken input through the CLI (or
the Python API) and expects exit code 2 (an UnetkitError), one line without a traceback that names
the file or option and says what to do, and the user's files byte for byte unchanged (hashed
before and after). The cases live beside the tests of the room whose refusal they check
(tests/<room>/test_<room>_refusals.py); this module holds what they share: the Case forms, the
runner, and the builders of broken inputs."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from synthetic import TINY_TRAIN, assert_one_line_error, make_shapes, run_cli

from unetkit.errors import UnetkitError
from unetkit.train import load_checkpoint


@dataclass
class Case:
    args: list[object]
    needles: tuple[str, ...]
    after: Callable[[], None] = field(default=lambda: None)


def train_args(images: Path, masks: Path, out: Path, *extra: object) -> list[object]:
    return ["train", "--images", images, "--masks", masks, "--out", out, *TINY_TRAIN, *extra]


def data(tmp_path: Path, **kwargs) -> tuple[Path, Path]:
    return make_shapes(tmp_path / "data", count=4, **kwargs)


def nothing_written(out: Path) -> Callable[[], None]:
    def check() -> None:
        assert not out.exists(), f"{out} was created by a failed run"

    return check


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression-bomb header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def predict_with(checkpoint: Path, tmp_path: Path) -> list[object]:
    return ["predict", "--checkpoint", checkpoint, tmp_path, "--out", tmp_path / "o", "--no-progress"]


class Exploit:
    """Unpickling this calls os.mkdir(marker): proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def bad_option(option: str, value: str, needle: str):
    def case(tmp_path, **_):
        images, masks = data(tmp_path)
        out = tmp_path / "run"
        return Case(
            train_args(images, masks, out, option, value),
            (f"{option} {value}", "must be", needle),
            nothing_written(out),
        )

    return case


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


def image_case(tmp_path, write, needles, name="img01"):
    """Replace one training image by what `write(path_stem)` writes; train must refuse it by name."""
    images, masks = data(tmp_path)
    (images / f"{name}.png").unlink()
    write(images / name)
    return Case(train_args(images, masks, tmp_path / "run"), needles)


def mask_case(tmp_path, write, needles, name="img01", extra=()):
    images, masks = data(tmp_path)
    (masks / f"{name}.png").unlink()
    write(masks / name)
    return Case(train_args(images, masks, tmp_path / "run", *extra), needles)


def edited_checkpoint(tmp_path: Path, checkpoint: Path, **preprocess) -> Path:
    state = load_checkpoint(checkpoint)
    state["preprocess"] = {**state["preprocess"], **preprocess}
    edited = tmp_path / "edited.pt"
    torch.save(state, edited)
    return edited


def bad_value(args: tuple[str, ...], *needles: str, command: str = "train"):
    """`command` with the options `args`, refused in one line containing the needles; nothing written."""

    def case(tmp_path, rgb_run, **_):
        if command == "train":
            images, masks = data(tmp_path)
            out = tmp_path / "run"
            return Case(train_args(images, masks, out, *args), needles, nothing_in(out))
        _root, images, _masks, checkpoint = rgb_run
        out = tmp_path / "pred"
        command_line = [command, "--checkpoint", checkpoint, images, "--out", out, *args, "--no-progress"]
        return Case(command_line, needles, nothing_in(out))

    return case


def assert_untouched(before: dict[Path, str]) -> None:
    """Every file that existed before the command is still there, byte for byte."""
    changed = [path for path, digest in before.items() if not path.is_file() or snapshot_file(path) != digest]
    assert not changed, f"the command changed or removed {changed[:3]}"


def snapshot_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def user_folder(tmp_path, files: dict[str, bytes]):
    out = tmp_path / "out"
    out.mkdir()
    for name, content in files.items():
        (out / name).write_bytes(content)
    return out


USER_FILES = {
    "config.json": b'{"mine": true}\n',
    "metrics.csv": b"week,sales\n1,3\n",
    ".notes.tmp": b"draft",
    ".report.tmpl": b"<html>{{ mine }}</html>",
    "README.txt": b"my folder",
}


def predict_args(checkpoint, source, out, *extra):
    return ["predict", "--checkpoint", checkpoint, source, "--out", out, "--no-progress", *extra]


def two_sample_tiff(path, marked_alpha=False):
    pixels = np.random.default_rng(0).integers(0, 255, (48, 48, 2), dtype=np.uint8)
    tifffile.imwrite(
        path, pixels, photometric="minisblack", planarconfig="contig", extrasamples=[2] if marked_alpha else [0]
    )


def replace_image(tmp_path, write, *extra):
    images, masks = data(tmp_path)
    (images / "img01.png").unlink()
    write(images / "img01.tif")
    needles = ("img01.tif has 2 channels", "marks it as alpha", "same channels")  # a set of RGB images and one of 2
    return Case(train_args(images, masks, tmp_path / "run", *extra), needles)


def rgb_nir(path):
    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 4), dtype=np.uint8)
    tifffile.imwrite(path, pixels, photometric="rgb", extrasamples=[0], tile=(16, 16))


DROP = object()  # bad_checkpoint(header={key: DROP}) removes the key


def bad_checkpoint(tmp_path, rgb_run, name, edit=None, header=None):
    """rgb_run's best.pt, edited (`edit(state)`), saved as `name`: torch.save unless the name ends in
    .safetensors (the export's own writer). `header`: the safetensors metadata's JSON, as text or as
    keys to change (DROP: remove)."""

    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from unetkit.models.safetensors_file import METADATA_KEY, save_safetensors
    from unetkit.train import load_checkpoint

    state = load_checkpoint(rgb_run[3])
    if edit:
        edit(state)
    path = tmp_path / name
    if not name.endswith(".safetensors"):
        torch.save(state, path)
        return path
    save_safetensors(state, path)
    if header is not None:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads(handle.metadata()[METADATA_KEY])
        if isinstance(header, dict):
            meta.update(header)
        text = header if isinstance(header, str) else json.dumps({k: v for k, v in meta.items() if v is not DROP})
        save_file(load_file(str(path)), str(path), metadata={METADATA_KEY: text})
    return path


def predict_case(tmp_path, rgb_run, checkpoint, *needles):
    """predict with `checkpoint` is refused naming it, and writes nothing."""
    out = tmp_path / "pred"
    args = ["predict", "--checkpoint", checkpoint, rgb_run[1], "--out", out, "--no-progress", "--backend", "torch"]
    return Case(args, (checkpoint.name, *needles), nothing_in(out))


def preprocess(**values):
    return lambda state: state["preprocess"].update(values)


def absent(path):
    def check() -> None:
        assert not path.exists(), f"a refused command wrote {path}"

    return check


def users_file(tmp_path, name, content=b"the user's own file\n"):
    path = tmp_path / "mine" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    return path


def run_copy(tmp_path, rgb_run):
    """A copy of rgb_run's run folder (config.json, metrics.csv, best.pt) to edit."""
    import shutil

    shutil.copytree(rgb_run[0] / "run", tmp_path / "run")
    return tmp_path / "run"


def report_case(run, *needles):
    def no_report() -> None:
        assert not (run / "report.html").exists(), "a refused report was written"

    return Case(["report", run], needles, no_report)


def config_file(tmp_path, text, name="run.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def resume_rgb_run(rgb_run, *extra):
    """Resume the shared run: every case here is refused before the run's folder is touched (hashed)."""
    return ["train", "--resume", rgb_run[0] / "run" / "last.pt", "--no-progress", *extra]


@dataclass
class ApiCase:
    """A call of the Python API that must raise one UnetkitError naming `needles`."""

    call: Callable[[], object]
    needles: tuple[str, ...]
    after: Callable[[], None] = field(default=lambda: None)


REPO = Path(__file__).resolve().parents[1]


def killed(args: list[object], suffix: str, nth: int, cwd: Path | None = None) -> None:
    """Run `unetkit ARGS` in a child that dies as under kill -9 (os._exit: no finally, no cleanup)
    just before its `nth` rename of a finished temporary onto a name ending in `suffix`."""
    script = f"""
import os, sys
real, count = os.replace, [0]
def replace(source, target, *a, **k):
    if str(target).endswith({suffix!r}):
        count[0] += 1
        if count[0] == {nth}:
            os._exit(137)
    return real(source, target, *a, **k)
os.replace = replace
from unetkit.cli import main
sys.exit(main({[str(a) for a in args]!r}))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 137, done.stderr[-2000:]


def many_images(tmp_path: Path, count: int = 12) -> Path:
    images, _masks = make_shapes(tmp_path / "many", count=count, size=(40, 56), rgb=True)
    return images


def failing(exception: OSError) -> Callable[..., None]:
    def fail(*_args, **_kwargs):
        raise exception

    return fail


ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


EROFS = OSError(errno.EROFS, os.strerror(errno.EROFS))


EACCES = OSError(errno.EACCES, os.strerror(errno.EACCES))


def killed_predict(tmp_path: Path, checkpoint: Path, count: int = 12, nth: int = 5) -> tuple[Path, Path]:
    """Killed before its `nth` mask lands (one writer: the masks land in order, img00 first)."""
    images, out = many_images(tmp_path, count), tmp_path / "pred"
    killed(predict_args(checkpoint, images, out, "--workers", "0"), ".png", nth)
    return images, out


def corrected(mask: Path) -> None:
    pixels = np.asarray(Image.open(mask)).copy()
    pixels[:5, :5] = 255 - pixels[:5, :5]  # a hand correction
    Image.fromarray(pixels).save(mask)


def fail_writes_of(monkeypatch, suffix: str, exception: OSError) -> None:
    """Every atomic write of a file ending in `suffix` fails with `exception` after its temporary
    is half-written (as a disk that fills mid-file)."""
    import importlib
    import pkgutil

    import unetkit

    for module in pkgutil.walk_packages(unetkit.__path__, "unetkit."):  # every writer, loaded or not yet
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    real = unetkit.runtime.atomic.atomic_write

    def write(path, writer, durable=False):
        if str(path).endswith(suffix):

            def half(temporary: Path) -> None:
                temporary.write_bytes(b"half")
                raise exception

            return real(path, half, durable)
        return real(path, writer, durable)

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("unetkit") and getattr(module, "atomic_write", None) is real:
            monkeypatch.setattr(module, "atomic_write", write)


def no_temporaries_in(folder: Path) -> Callable[[], None]:
    def check() -> None:
        left = [p.name for p in folder.rglob("*") if ".tmp" in p.name] if folder.exists() else []
        assert not left, left

    return check


def train_write_fault(suffix: str, exception: OSError, needle: str):
    def case(tmp_path, monkeypatch, **_):
        fail_writes_of(monkeypatch, suffix, exception)
        images, masks = data(tmp_path)
        out = tmp_path / "run"
        return Case(train_args(images, masks, out), (suffix, "cannot write", needle), no_temporaries_in(out))

    return case


def predict_write_fault(suffix: str, exception: OSError, needle: str, *extra: str):
    def case(tmp_path, rgb_run, monkeypatch, **_):
        fail_writes_of(monkeypatch, suffix, exception)
        out = tmp_path / "pred"
        args = predict_args(rgb_run[3], rgb_run[1], out, *extra)
        return Case(args, (suffix, "cannot write", needle), no_temporaries_in(out))

    return case


def export_write_fault(option: str, name: str, exception: OSError, needle: str):
    def case(tmp_path, rgb_run, monkeypatch, **_):
        fail_writes_of(monkeypatch, name, exception)
        out = tmp_path / "export"
        args = ["export", "--checkpoint", rgb_run[3], option, out / name]
        return Case(args, (name, "cannot write", needle), no_temporaries_in(out))

    return case


def tiff_declaring(path: Path, width: int, height: int, **write) -> Path:
    """A small TIFF whose header then claims width x height pixels (its tags rewritten in place)."""
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8), compression="zlib", metadata=None, **write)
    with tifffile.TiffFile(path, mode="r+") as tif:
        tags = tif.pages[0].tags
        tags["ImageWidth"].overwrite(width)
        tags["ImageLength"].overwrite(height)
        if "RowsPerStrip" in tags:
            tags["RowsPerStrip"].overwrite(height)
    return path


def gif_declaring(width: int, height: int) -> bytes:
    """A GIF whose logical screen and one frame claim width x height (both 16-bit fields)."""
    import struct

    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b";"


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small JPEG whose SOF0 header is rewritten to claim width x height."""
    import io
    import struct

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(buffer, format="JPEG")
    data_ = bytearray(buffer.getvalue())
    at = data_.index(b"\xff\xc0")
    data_[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data_)


def bomb_case(name: str, write: Callable[[Path], None], command: str = "train", needle: str = "decompression bomb"):
    def case(tmp_path, rgb_run, **_):
        images, masks = data(tmp_path)
        (images / "img01.png").unlink()  # the bomb takes its place, paired with its mask by name
        target = images / name
        write(target)
        if command == "train":
            return Case(train_args(images, masks, tmp_path / "run"), (name, needle), nothing_in(tmp_path / "run"))
        if command == "evaluate":
            args = ["evaluate", "--checkpoint", rgb_run[3], "--images", images, "--masks", masks, "--no-progress"]
            return Case(args, (name, needle))
        out = tmp_path / "pred"
        return Case(predict_args(rgb_run[3], target, out), (name, needle, "UNETKIT_MAX_PIXELS"), nothing_in(out))

    return case


def safetensors_with(tmp_path: Path, rgb_run, name: str = "m.safetensors", **changes) -> Path:
    """rgb_run's model as a .safetensors export whose metadata is changed by `changes`, holding
    one small tensor only (the file stays a few hundred bytes)."""
    import torch

    from unetkit.models.safetensors_file import save_safetensors
    from unetkit.train import load_checkpoint

    state = load_checkpoint(rgb_run[3])
    state["model"] = {"inc.double_conv.0.weight": torch.zeros(1)}
    for key, value in changes.items():
        state[key] = value(state[key]) if callable(value) else value
    return save_safetensors(state, tmp_path / name)


def yaml_config(tmp_path: Path, text: str) -> Path:
    images, masks = data(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(f"images: {images}\nmasks: {masks}\n{text}")
    return config


def fluorescence_stack(path: Path, channels: int = 3, axes: str = "CYX") -> Path:
    """An ImageJ-style TIFF of `channels` stains on a C axis (not RGB colour)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (channels, 64, 64), dtype=np.uint8)
    tifffile.imwrite(path, pixels, imagej=True, metadata={"axes": axes})
    return path


def api(call: Callable[..., object], *needles: str) -> Callable[..., ApiCase]:
    def case(tmp_path, rgb_run, **_):
        return ApiCase(lambda: call(tmp_path, rgb_run), needles)

    return case


def _predictor(source=None, **kwargs):
    from unetkit.inference import Predictor

    return Predictor(source, **kwargs)


def _config(tmp_path, **kwargs):
    from unetkit.train import TrainConfig

    images, masks = data(tmp_path)
    return TrainConfig(images=str(images), masks=str(masks), out=str(tmp_path / "run"), **kwargs)


def _run_training(*args, **kwargs):
    from unetkit.runs import run_training

    return run_training(*args, **kwargs)


def cases_of(names: dict, entries: dict | None = None) -> dict:
    """A battery's cases: its case_* functions by name, and the `entries` made by the builders."""
    return {n.removeprefix("case_"): f for n, f in names.items() if n.startswith("case_")} | (entries or {})


def refused(make, tmp_path, rgb_run, monkeypatch, capsys) -> None:
    """Build the case, run it, and check the refusal: exit 2 or UnetkitError, one line under 800
    characters (metadata is cut), the needles in it, the case's own check, no file changed."""
    case = make(tmp_path=tmp_path, rgb_run=rgb_run, monkeypatch=monkeypatch, capsys=capsys)
    before = snapshot(tmp_path, rgb_run[0])  # the user's files and finished runs
    capsys.readouterr()
    if isinstance(case, ApiCase):
        with pytest.raises(UnetkitError) as raised:
            case.call()
        message = str(raised.value)
        assert "\n" not in message.strip(), message
        assert all(needle in message for needle in case.needles), (case.needles, message)
    else:
        code, _out, err = run_cli(capsys, *case.args)
        assert_one_line_error(code, err, *case.needles)
        message = err
    assert len(message) < 800, f"{len(message)} characters: metadata is cut in messages"
    case.after()
    assert_untouched(before)
