"""The fourth bad-input battery (issue 33): faults (kill -9, a full disk, a read-only folder, two
runs at once), bombs (files and metadata that declare far more than they hold), silently wrong
answers and tracebacks. Same form as the first three: exit code 2 and one line naming the file or
option and the fix, no traceback; every file that existed before the command is byte-for-byte
unchanged after it (hashed). Cases of the Python API raise one UnetkitError of one line instead.

Kills are real: the command runs in a child process that ends with os._exit (no cleanup runs, as
under kill -9) at a chosen write; faults of the disk are OSErrors raised where the write happens."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from synthetic import TINY_TRAIN, assert_one_line_error, make_shapes, nuclei_with_ids, run_cli
from test_bad_input import Case, data, png_declaring, train_args
from test_bad_input_2 import assert_untouched, finished_run, nothing_in, snapshot, unchanged

import unetkit.runtime.atomic
from unetkit.errors import UnetkitError
from unetkit.inference.manifest import JOURNAL, MANIFEST, Manifest, digest
from unetkit.runtime.folder_lock import PREDICT_LOCK_NAME


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


def predict_args(checkpoint, source, out, *extra):
    return ["predict", "--checkpoint", checkpoint, source, "--out", out, "--no-progress", *extra]


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


# ---- 1. data loss: a killed predict's outputs are known exactly ----


def killed_predict(tmp_path: Path, checkpoint: Path, count: int = 12, nth: int = 5) -> tuple[Path, Path]:
    """Killed before its `nth` mask lands (one writer: the masks land in order, img00 first)."""
    images, out = many_images(tmp_path, count), tmp_path / "pred"
    killed(predict_args(checkpoint, images, out, "--workers", "0"), ".png", nth)
    return images, out


def corrected(mask: Path) -> None:
    pixels = np.asarray(Image.open(mask)).copy()
    pixels[:5, :5] = 255 - pixels[:5, :5]  # a hand correction
    Image.fromarray(pixels).save(mask)


def case_overwrite_after_a_kill_keeps_a_hand_corrected_mask(tmp_path, rgb_run, **_):
    """Killed after 4 masks, one corrected by hand: --overwrite used to replace the correction."""
    images, out = killed_predict(tmp_path, rgb_run[3])
    corrected(out / "img01.png")
    return Case(predict_args(rgb_run[3], images, out, "--overwrite"), ("img01.png", "changed since predict wrote it"))


def case_rerun_after_a_kill_keeps_a_hand_corrected_mask(tmp_path, rgb_run, **_):
    images, out = killed_predict(tmp_path, rgb_run[3])
    corrected(out / "img00.png")
    return Case(predict_args(rgb_run[3], images, out), ("img00.png", "never replaced", "move it elsewhere"))


def case_kill_before_the_first_mask_then_a_users_file_of_that_name(tmp_path, rgb_run, **_):
    """Killed before any mask landed; the user then saved a mask of their own under an output's
    name: it was never recorded, so it is theirs."""
    images, out = killed_predict(tmp_path, rgb_run[3], nth=1)
    Image.fromarray(np.zeros((40, 56), np.uint8)).save(out / "img03.png")
    return Case(predict_args(rgb_run[3], images, out, "--overwrite"), ("img03.png", "never replaced"))


def case_kill_mid_object_files_then_a_corrected_object_table(tmp_path, rgb_run, **_):
    images, out = many_images(tmp_path, 6), tmp_path / "pred"
    killed(predict_args(rgb_run[3], images, out, "--instances", "--workers", "0"), ".csv", 3)
    (out / "img00_objects.csv").write_text("id,area\n1,40\n")  # counted by hand
    return Case(predict_args(rgb_run[3], images, out, "--instances", "--overwrite"), ("img00_objects.csv", "changed"))


# ---- 3. two runs at once ----


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


def case_train_into_a_folder_another_training_holds(tmp_path, **_):
    from unetkit.runtime.folder_lock import LOCK_NAME

    images, masks = data(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(f"{os.getppid()}\n")
    return Case(train_args(images, masks, out), ("another training", f"process {os.getppid()}"), unchanged(out))


# ---- 2. faults: a full disk, a read-only folder, no permission ----


def case_train_disk_full_at_the_first_checkpoint(tmp_path, monkeypatch, **_):
    """torch.save on a full disk says only "[enforce fail at inline_container.cc] unexpected pos"."""
    import torch

    def full(*_args, **_kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 37120 vs 37016")

    monkeypatch.setattr(torch, "save", full)
    images, masks = data(tmp_path)
    out = tmp_path / "run"

    def no_temporaries() -> None:
        assert not [p.name for p in out.iterdir() if ".tmp" in p.name]

    return Case(train_args(images, masks, out), ("best.pt", "cannot write", "disk has space"), no_temporaries)


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


def case_export_bioimageio_with_a_full_temporary_folder(tmp_path, rgb_run, monkeypatch, **_):
    import unetkit.inference.export.bioimageio as bioimageio

    monkeypatch.setattr(bioimageio.np, "save", failing(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/tmp/x.npy")))
    args = ["export", "--checkpoint", rgb_run[3], "--bioimageio", tmp_path / "model.zip"]
    return Case(args, ("/tmp/x.npy", "No space left", "disk has space"), nothing_in(tmp_path / "export"))


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


# ---- 5. silently wrong or surprising ----


def case_resume_a_finished_run(tmp_path, **_):
    out = finished_run(tmp_path, "run")
    args = ["train", "--resume", out / "last.pt", "--no-progress"]
    return Case(args, ("already finished at epoch 1", "its 1 epochs are done", "--epochs"), unchanged(out))


def case_resume_a_run_that_spent_its_time_budget(tmp_path, **_):
    from unetkit.models.checkpoint import save_checkpoint
    from unetkit.train import load_checkpoint

    out = finished_run(tmp_path, "run")
    state = load_checkpoint(out / "last.pt")
    state["config"] = {**state["config"], "epochs": None, "time": 1.0}
    state["elapsed_seconds"] = 5.0
    save_checkpoint(out / "last.pt", state)
    args = ["train", "--resume", out / "last.pt", "--no-progress"]
    return Case(args, ("already finished", "budget", "--time"), unchanged(out))


# ---- 4. bombs: sizes are checked before pixels are read or networks built ----


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


def case_tiff_bomb_out_of_core_on(tmp_path, rgb_run, **_):
    bomb = tiff_declaring(tmp_path / "slide.tif", 100_000, 100_000, tile=(16, 16))
    out = tmp_path / "pred"
    args = predict_args(rgb_run[3], bomb, out, "--out-of-core", "on")
    return Case(args, ("slide.tif", "10,000,000,000 pixels", "UNETKIT_MAX_PIXELS"), nothing_in(out))


def case_tiff_bomb_as_a_mask(tmp_path, **_):
    images, masks = data(tmp_path)
    tiff_declaring(masks / "img02.tif", 50_000, 50_000)
    (masks / "img02.png").unlink()
    return Case(train_args(images, masks, tmp_path / "run"), ("img02.tif", "decompression bomb"))


def case_a_bad_pixel_limit_setting(tmp_path, monkeypatch, **_):
    monkeypatch.setenv("UNETKIT_MAX_PIXELS", "lots")
    images, masks = data(tmp_path)
    return Case(train_args(images, masks, tmp_path / "run"), ("UNETKIT_MAX_PIXELS", "whole number"))


def case_a_lowered_pixel_limit_refuses_an_ordinary_image(tmp_path, monkeypatch, **_):
    monkeypatch.setenv("UNETKIT_MAX_PIXELS", "1000")
    images, masks = data(tmp_path)  # 48 x 48 = 2,304 pixels
    return Case(train_args(images, masks, tmp_path / "run"), ("2,304 pixels", "limit of 1,000"))


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


def case_safetensors_asking_for_6000_channels(tmp_path, rgb_run, **_):
    model = safetensors_with(tmp_path, rgb_run, model_args=lambda args: {**args, "base_channels": 6000})
    assert model.stat().st_size < 4096
    out = tmp_path / "pred"
    args = predict_args(model, rgb_run[1], out)
    return Case(args, ("m.safetensors", "do not fit", "damaged"), nothing_in(out))


def case_safetensors_asking_for_a_depth_of_40(tmp_path, rgb_run, **_):
    model = safetensors_with(tmp_path, rgb_run, model_args=lambda args: {**args, "depth": 40})
    args = ["export", "--checkpoint", model, "--onnx", tmp_path / "x.onnx"]
    return Case(args, ("m.safetensors", "do not fit"), nothing_in(tmp_path / "x.onnx"))


def case_five_megabytes_of_model_name(tmp_path, rgb_run, capsys, **_):
    model = safetensors_with(tmp_path, rgb_run, model_name="u" * 5_000_000)
    return Case(predict_args(model, rgb_run[1], tmp_path / "pred"), ("m.safetensors", "uuuu"))


def case_five_megabytes_of_mask_values(tmp_path, rgb_run, **_):
    model = safetensors_with(tmp_path, rgb_run, mask_values={"values": list(range(2_000_000)), "ignore_value": None})
    return Case(predict_args(model, rgb_run[1], tmp_path / "pred"), ("m.safetensors", "2000000 mask values"))


def yaml_config(tmp_path: Path, text: str) -> Path:
    images, masks = data(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(f"images: {images}\nmasks: {masks}\n{text}")
    return config


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


# ---- 5. channels: never blended in silence ----


def fluorescence_stack(path: Path, channels: int = 3, axes: str = "CYX") -> Path:
    """An ImageJ-style TIFF of `channels` stains on a C axis (not RGB colour)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (channels, 64, 64), dtype=np.uint8)
    tifffile.imwrite(path, pixels, imagej=True, metadata={"axes": axes})
    return path


def case_three_fluorescence_channels_to_the_gray_nuclei_model(tmp_path, **_):
    image = fluorescence_stack(tmp_path / "stains.tif")
    out = tmp_path / "pred"
    args = ["predict", "--model", "nuclei", image, "--out", out, "--no-progress"]
    return Case(args, ("stains.tif", "3 channel(s)", "C axis, not RGB", "1-channel"), nothing_in(out))


def case_two_fluorescence_channels_to_the_gray_nuclei_model(tmp_path, **_):
    image = fluorescence_stack(tmp_path / "two.tif", channels=2)
    out = tmp_path / "pred"
    args = ["predict", "--model", "nuclei", image, "--out", out, "--no-progress"]
    return Case(args, ("two.tif", "2 channel(s)", "1-channel"), nothing_in(out))


def case_three_fluorescence_channels_evaluated_by_the_gray_model(tmp_path, **_):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    fluorescence_stack(images / "a.tif")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(masks / "a.png")
    args = ["evaluate", "--model", "nuclei", "--images", images, "--masks", masks, "--no-progress"]
    return Case(args, ("a.tif", "C axis, not RGB"))


def case_rgb_model_given_a_gray_image_stack_of_four(tmp_path, rgb_run, **_):
    image = fluorescence_stack(tmp_path / "four.tif", channels=4)
    return Case(predict_args(rgb_run[3], image, tmp_path / "pred"), ("four.tif", "4 channel(s)", "3-channel"))


def case_a_large_tiff_whose_header_lies_out_of_core(tmp_path, rgb_run, **_):
    """100 Mpx declared (under the limit, so out of core), 267 bytes held: read through a memory
    map, it was numpy's "mmap length is greater than file size" traceback."""
    image = tmp_path / "slide.tif"
    tifffile.imwrite(image, np.zeros((48, 48), np.uint8), metadata=None)
    with tifffile.TiffFile(image, mode="r+") as tif:
        for tag in ("ImageWidth", "ImageLength", "RowsPerStrip"):
            tif.pages[0].tags[tag].overwrite(10_000)
    out = tmp_path / "pred"
    return Case(
        predict_args(rgb_run[3], image, out), ("slide.tif", "cannot read this file as an image"), nothing_in(out)
    )


def case_a_tiled_tiff_cut_short_out_of_core(tmp_path, rgb_run, **_):
    """An interrupted download: a tiled, compressed TIFF cut to half its size (the codec's error)."""
    whole = tmp_path / "whole.tif"
    rng = np.random.default_rng(0)
    tifffile.imwrite(whole, rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8), tile=(256, 256), compression="zlib")
    image = tmp_path / "cut.tif"
    image.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    out = tmp_path / "pred"
    args = predict_args(rgb_run[3], image, out, "--out-of-core", "on")
    return Case(args, ("cut.tif", "cannot read this file as an image"), nothing_in(out))


def case_toml_unknown_key_of_two_megabytes(tmp_path, **_):
    images, masks = data(tmp_path)
    config = tmp_path / "run.toml"
    config.write_text(f'images = "{images}"\nmasks = "{masks}"\n{"k" * 2_000_000} = 1\n')
    return Case(["train", "--config", config, "--out", tmp_path / "run", *TINY_TRAIN], ("run.toml", "unknown option"))


def case_init_from_a_folder_of_onnx_files(tmp_path, rgb_run, **_):
    images, masks = make_shapes(tmp_path / "data", count=4, rgb=True)
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "m.onnx").write_bytes(b"not read")
    args = train_args(images, masks, tmp_path / "run", "--init-from", exports)
    return Case(args, ("exports: is a folder", "it holds none"), nothing_in(tmp_path / "run"))


# ---- 5. paths and names: as the file says, never shadowed in silence ----


def case_config_init_from_relative_to_the_config_file(tmp_path, rgb_run, monkeypatch, **_):
    """init_from = "models/m.pt" in conf/run.toml means conf/models/m.pt (the other paths did; this
    one was read against the current folder, and the missing file named the wrong place)."""
    images, masks = data(tmp_path)
    conf = tmp_path / "conf"
    (conf / "models").mkdir(parents=True)
    config = conf / "run.toml"
    config.write_text(f'images = "{images}"\nmasks = "{masks}"\ninit_from = "models/m.pt"\n')
    monkeypatch.chdir(tmp_path)
    args = ["train", "--config", config, "--out", tmp_path / "run", *TINY_TRAIN]
    return Case(args, (str(conf / "models" / "m.pt"), "not found"), nothing_in(tmp_path / "run"))


def case_a_data_folder_named_like_a_ready_made_model(tmp_path, monkeypatch, **_):
    images, masks = data(tmp_path)
    (tmp_path / "nuclei").mkdir()
    (tmp_path / "nuclei" / "notes.txt").write_text("my nuclei data")
    monkeypatch.chdir(tmp_path)
    args = train_args(images, masks, tmp_path / "run", "--init-from", "nuclei")
    return Case(
        args, ("nuclei: is a folder here", "ready-made model", "nuclei.safetensors"), nothing_in(tmp_path / "run")
    )


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


# ---- 6. the Python API checks its arguments where they enter ----


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


API_CASES = {
    "api_predictor_of_none": api(lambda t, r: _predictor(None), "Predictor(source)", "NoneType", "best.pt"),
    "api_predictor_of_a_number": api(lambda t, r: _predictor(3), "Predictor(source)", "int"),
    "api_predictor_options_as_a_dict": api(
        lambda t, r: _predictor(r[3], options={"threshold": 0.3}), "Predictor(options=)", "InferenceOptions"
    ),
    "api_predictor_device_as_a_torch_device": api(
        lambda t, r: _predictor(r[3], device=object()), "Predictor(device=)", "'cpu'"
    ),
    "api_predict_file_of_an_array": api(
        lambda t, r: _predictor(r[3]).predict_file(np.zeros((32, 32))), "predict_file(path)", "ndarray"
    ),
    "api_class_ids_of_a_path": api(
        lambda t, r: _predictor(r[3]).class_ids(str(r[1] / "img00.png")), "logits(image)", "numpy array"
    ),
    "api_run_training_of_a_dict": api(lambda t, r: _run_training({"images": "x"}), "run_training(cfg)", "TrainConfig"),
    "api_run_training_of_a_path": api(lambda t, r: _run_training("config.toml"), "run_training(cfg)", "str"),
    "api_run_training_pairs_as_a_folder": api(
        lambda t, r: _run_training(_config(t, epochs=1), train_pairs="data/images"), "train_pairs", "Pair"
    ),
    "api_string_base_channels": api(
        lambda t, r: _run_training(_config(t, base_channels="16", epochs=1)), "base_channels='16'", "base_channels=16"
    ),
    "api_string_epochs": api(lambda t, r: _run_training(_config(t, epochs="3")), "epochs='3'", "whole number"),
    "api_negative_time": api(lambda t, r: _run_training(_config(t, time=-5.0)), "time"),
    "api_an_array_of_70000_squared": api(
        lambda t, r: _predictor(r[3]).predict_images([np.broadcast_to(np.uint8(0), (70_000, 70_000))]),
        "4,900,000,000 pixels",
        "UNETKIT_MAX_PIXELS",
    ),
}


# ---- the battery ----


CASES = {name.removeprefix("case_"): function for name, function in globals().items() if name.startswith("case_")} | {
    "train_config_toml_disk_full": train_write_fault("config.toml", ENOSPC, "No space left"),
    "train_config_json_read_only": train_write_fault("config.json", EROFS, "Read-only"),
    "train_marker_no_permission": train_write_fault(".unetkit-run.json", EACCES, "Permission denied"),
    "train_metrics_disk_full": train_write_fault("metrics.csv", ENOSPC, "No space left"),
    "train_curves_disk_full": train_write_fault("curves.png", ENOSPC, "No space left"),
    "train_last_checkpoint_disk_full": train_write_fault("last.pt", ENOSPC, "No space left"),
    "train_best_checkpoint_read_only": train_write_fault("best.pt", EROFS, "Read-only"),
    "predict_mask_disk_full": predict_write_fault("img02.png", ENOSPC, "No space left"),
    "predict_manifest_read_only": predict_write_fault(MANIFEST, EROFS, "Read-only"),
    "predict_probabilities_disk_full": predict_write_fault("img01_probs.tif", ENOSPC, "No space", "--probabilities"),
    "predict_overlay_no_permission": predict_write_fault("img00_overlay.png", EACCES, "Permission", "--overlay"),
    "predict_objects_disk_full": predict_write_fault("img03_objects.tif", ENOSPC, "No space", "--instances"),
    "predict_object_table_disk_full": predict_write_fault("img00_objects.csv", ENOSPC, "No space", "--instances"),
    "predict_geojson_disk_full": predict_write_fault(".geojson", ENOSPC, "No space", "--instances", "--geojson"),
    "predict_imagej_rois_read_only": predict_write_fault(".zip", EROFS, "Read-only", "--instances", "--imagej-rois"),
    "export_onnx_disk_full": export_write_fault("--onnx", "model.onnx", ENOSPC, "No space left"),
    "export_safetensors_read_only": export_write_fault("--safetensors", "m.safetensors", EROFS, "Read-only"),
    "export_bioimageio_disk_full": export_write_fault("--bioimageio", "model.zip", ENOSPC, "No space left"),
    "tiff_bomb_in_training": bomb_case("img01.tif", lambda p: tiff_declaring(p, 100_000, 100_000)),
    "tiled_tiff_bomb_in_check": bomb_case(
        "img01.tif", lambda p: tiff_declaring(p, 100_000, 100_000, tile=(16, 16)), "check"
    ),
    "tiff_bomb_in_predict": bomb_case("img01.tif", lambda p: tiff_declaring(p, 100_000, 100_000), "predict"),
    "png_bomb_in_predict": bomb_case("img01.png", lambda p: p.write_bytes(png_declaring(60_000, 60_000)), "predict"),
    "png_bomb_in_evaluate": bomb_case("img01.png", lambda p: p.write_bytes(png_declaring(60_000, 60_000)), "evaluate"),
    "gif_bomb_in_training": bomb_case("img01.gif", lambda p: p.write_bytes(gif_declaring(65_000, 65_000))),
    "jpeg_bomb_in_training": bomb_case("img01.jpg", lambda p: p.write_bytes(jpeg_declaring(65_000, 65_000))),
    **API_CASES,
    "jpeg_bomb_in_predict": bomb_case("img01.jpg", lambda p: p.write_bytes(jpeg_declaring(65_000, 65_000)), "predict"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_4(name, tmp_path, rgb_run, monkeypatch, capsys):
    case = CASES[name](tmp_path=tmp_path, rgb_run=rgb_run, monkeypatch=monkeypatch, capsys=capsys)
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


# ---- the same situations done right just work ----


def test_a_rerun_completes_a_killed_predict_without_overwrite(tmp_path, rgb_run, capsys):
    """Killed before its 5th mask: four masks and their hashes are there (the journal), the rerun
    writes the rest without --overwrite and leaves a finished manifest and no journal."""
    images, out = killed_predict(tmp_path, rgb_run[3])
    manifest = Manifest.read(out)
    assert manifest.unfinished
    landed = sorted(p.name for p in out.glob("img*.png"))
    assert len(landed) == 4
    assert all(digest(out / name) in manifest.files[name] for name in landed)
    assert [p.name for p in out.glob(".img*.tmp.png")]  # the kill left the fifth's temporary
    code, _out, err = run_cli(capsys, *predict_args(rgb_run[3], images, out))  # writer threads, as by default
    assert code == 0, err
    assert len(list(out.glob("img*.png"))) == 12 and not list(out.glob(".*.tmp*"))
    assert not (out / JOURNAL).exists() and not (out / PREDICT_LOCK_NAME).exists()
    final = json.loads((out / MANIFEST).read_text())
    assert final["unfinished"] is False
    assert all(final["files"][p.name] == [digest(p)] for p in out.glob("img*.png"))


def test_a_killed_stale_predict_lock_is_taken_over(tmp_path, rgb_run, capsys):
    out = tmp_path / "pred"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / PREDICT_LOCK_NAME).write_text(dead.stdout)
    code, stdout, err = run_cli(capsys, *predict_args(rgb_run[3], rgb_run[1], out))
    assert code == 0, err
    assert "stale lock" in stdout and not (out / PREDICT_LOCK_NAME).exists()


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
    code, text, err = run_cli(capsys, "train", "--images", images, "--masks", masks, "--out", tmp_path / "scratch",
                              *TINY_TRAIN, "--val-fraction", "0")  # fmt: skip
    assert code == 0, err
    assert "the masks hold 29 values, so this trains 29 classes from 4 images" in text and "--instance-masks" in text


def test_a_colour_photograph_to_the_gray_model_is_read_as_luminance_and_said(tmp_path, capsys):
    import unetkit.data.preprocess

    unetkit.data.preprocess._LUMINANCE_SAID.clear()
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(photo)
    code, text, err = run_cli(
        capsys, "predict", "--model", "nuclei", photo, "--out", tmp_path / "pred", "--no-progress"
    )
    assert code == 0, err
    assert text.count("read as their luminance") == 1 and (tmp_path / "pred" / "photo.png").is_file()


def test_geojson_of_a_time_lapse_puts_each_frame_on_t_not_z(tmp_path, capsys):
    frames = np.stack([np.asarray(Image.open(p)) for p in sorted(nuclei_with_ids(tmp_path / "d", 3)[0].iterdir())])
    movie = tmp_path / "movie.tif"
    tifffile.imwrite(movie, frames, imagej=True, metadata={"axes": "TYX"})
    out = tmp_path / "pred"
    args = ["predict", "--model", "nuclei", movie, "--out", out, "--instances", "--geojson", "--no-progress"]
    code, _text, err = run_cli(capsys, *args)
    assert code == 0, err
    features = json.loads((out / "movie_objects.geojson").read_text())["features"]
    planes = {(f["geometry"]["plane"]["z"], f["geometry"]["plane"]["t"]) for f in features}
    assert {z for z, _t in planes} == {0} and {t for _z, t in planes} == {0, 1, 2}


def test_evaluate_json_is_strict_json_with_null_for_an_image_without_objects(tmp_path, rgb_run, capsys):
    _root, images, masks, checkpoint = rgb_run
    empty = tmp_path / "masks"
    empty.mkdir()
    for mask in masks.iterdir():
        Image.fromarray(np.zeros_like(np.asarray(Image.open(mask)))).save(empty / mask.name)
    report = tmp_path / "eval.json"
    args = ["evaluate", "--checkpoint", checkpoint, "--images", images, "--masks", empty, "--json", report]
    code, _text, err = run_cli(capsys, *args, "--no-progress")
    assert code == 0, err

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in {report}")

    parsed = json.loads(report.read_text(), parse_constant=refuse)
    assert None in [row.get("dice") for row in parsed["per_class"]] or "null" in report.read_text()


def test_a_report_of_images_named_like_math_is_written(tmp_path, capsys):
    images, masks = make_shapes(tmp_path / "data", count=6, prefix="cell_$x^2$_")
    out = tmp_path / "run"
    args = [a for a in train_args(images, masks, out) if a != "--no-report"]
    code, _text, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "cell_$x^2$_" in (out / "report.html").read_text()


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


# ---- kills at each phase: the same command afterwards finishes the job, and leaves no debris ----


@pytest.mark.parametrize(
    ("suffix", "nth"),
    [(".unetkit-run.json", 1), ("config.json", 1), ("config.toml", 1), ("best.pt", 1)],
)
def test_the_same_train_command_after_a_kill_at_each_first_write(tmp_path, capsys, suffix, nth):
    images, masks = data(tmp_path)
    out = tmp_path / "run"
    killed(train_args(images, masks, out), suffix, nth)
    code, _text, err = run_cli(capsys, *train_args(images, masks, out))
    assert code == 0, err
    assert (out / "best.pt").is_file() and not [p.name for p in out.iterdir() if ".tmp" in p.name]


@pytest.mark.parametrize(("option", "name"), [("--onnx", "m.onnx"), ("--safetensors", "m.safetensors")])
def test_an_export_killed_before_it_landed_is_made_again_without_debris(tmp_path, rgb_run, capsys, option, name):
    target = tmp_path / "exports" / name
    killed(["export", "--checkpoint", rgb_run[3], option, target], name, 1)
    assert not target.exists() and [p.name for p in target.parent.iterdir()]  # only the temporary
    code, _text, err = run_cli(capsys, "export", "--checkpoint", rgb_run[3], option, target)
    assert code == 0, err
    assert [p.name for p in target.parent.iterdir()] == [name]


def test_predict_killed_while_planning_leaves_a_folder_the_rerun_takes(tmp_path, rgb_run, capsys):
    out = tmp_path / "pred"
    killed(predict_args(rgb_run[3], rgb_run[1], out), MANIFEST, 1)  # before its manifest landed
    code, _text, err = run_cli(capsys, *predict_args(rgb_run[3], rgb_run[1], out))
    assert code == 0, err
    assert len(list(out.glob("img*.png"))) == 5 and not list(out.glob(".*.tmp*"))


def test_a_killed_predicts_objects_are_completed_by_the_rerun(tmp_path, rgb_run, capsys):
    images = many_images(tmp_path, 6)
    out = tmp_path / "pred"
    killed(predict_args(rgb_run[3], images, out, "--instances", "--workers", "0"), "_objects.tif", 3)
    code, _text, err = run_cli(capsys, *predict_args(rgb_run[3], images, out, "--instances"))
    assert code == 0, err
    assert len(list(out.glob("*_objects.csv"))) == 6 and not list(out.glob(".*.tmp*"))


def test_the_four_batteries_hold_at_least_240_cases():
    import test_bad_input
    import test_bad_input_2
    import test_bad_input_3

    total = sum(len(module.CASES) for module in (test_bad_input, test_bad_input_2, test_bad_input_3)) + len(CASES)
    assert total >= 240, total
