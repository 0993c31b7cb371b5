"""Out-of-core prediction of large TIFFs: the tiled mask it writes band by band equals the
in-memory tiled path's, and it never holds the image whole."""

import csv
import dataclasses
from functools import partial

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F
from PIL import Image
from synthetic import run_cli

import unetkit.inference.slide.band_objects as band_objects
import unetkit.inference.slide.large_tiff as large_tiff
from unetkit.data import MaskValues, read_image
from unetkit.data.preprocess import Preprocess
from unetkit.data.tiff_axes import tiff_layout
from unetkit.errors import UnetkitError
from unetkit.inference import InferenceOptions, Predictor
from unetkit.inference.objects import ObjectRule, object_table, split_objects
from unetkit.inference.slide.row_resample import RowResampler
from unetkit.models.checkpoint import load_checkpoint
from unetkit.scoring.objects import object_scores

TILES = ("--tiling", "on", "--tile", "64", "--overlap", "16", "--batch-size", "8", "--backend", "torch")


def slide(path, height: int = 700, width: int = 900, tiled: bool = True) -> np.ndarray:
    """An RGB TIFF (tiled, else in strips of 16 rows) of bright discs on a noisy background,
    like the rgb_run images."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:height, :width]
    image = rng.normal(40, 12, (height, width))
    for _ in range(60):
        cy, cx, radius = rng.integers(0, height), rng.integers(0, width), rng.integers(5, 20)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 230
    gray = np.clip(image, 0, 255).astype(np.uint8)
    rgb = np.stack([gray, gray // 2 + 60, 255 - gray], axis=-1)
    layout = {"tile": (128, 128)} if tiled else {"rowsperstrip": 16}
    tifffile.imwrite(path, rgb, compression="zlib", **layout)
    return rgb


def test_out_of_core_mask_equals_the_in_memory_one(rgb_run, tmp_path, capsys, monkeypatch):
    _, _, _, checkpoint = rgb_run
    rgb = slide(tmp_path / "slide.tif")
    # The tiny model is barely trained: cut at its median probability so both classes are common.
    predictor = Predictor(
        checkpoint, amp="off", options=InferenceOptions(backend="torch", tiling="on", tile=64, overlap=16)
    )
    probability = predictor.probabilities(predictor.logits(rgb.astype(np.float32) / 255))[1]
    threshold = str(float(np.median(probability)))
    reads = []
    rows_of = large_tiff.rows_of
    monkeypatch.setattr(large_tiff, "rows_of", lambda *a: reads.append(a[2] - a[1]) or rows_of(*a))
    args = ("predict", "--checkpoint", checkpoint, tmp_path / "slide.tif", "--amp", "off", "--threshold", threshold)
    args += TILES
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "big", "--out-of-core", "on")
    assert code == 0, err
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "small", "--out-of-core", "off")
    assert code == 0, err
    with tifffile.TiffFile(tmp_path / "big" / "slide.tif") as written:
        assert written.pages[0].is_tiled and written.is_bigtiff
        big = written.asarray()
    small = np.asarray(Image.open(tmp_path / "small" / "slide.png"))
    assert big.shape == small.shape == (700, 900) and big.dtype == small.dtype
    assert 0.2 < (small > 0).mean() < 0.8  # both classes, so the comparison means something
    assert (big == small).mean() >= 0.999
    assert max(reads) == 64 and reads.count(64) > 10  # read a band of one tile height at a time
    # By default too: in memory the tile is the one out of core takes, so the masks agree (a
    # red-team finding: 512 against 768 px tiles disagreed on 0.36% of a slide's pixels)
    defaults = ("predict", "--checkpoint", checkpoint, tmp_path / "slide.tif", "--amp", "off", "--threshold", threshold)
    for mode in ("on", "off"):
        code, _, err = run_cli(capsys, *defaults, "--tiling", "on", "--out", tmp_path / mode, "--out-of-core", mode)
        assert code == 0, err
    on, off = tifffile.imread(tmp_path / "on" / "slide.tif"), np.asarray(Image.open(tmp_path / "off" / "slide.png"))
    assert (on == off).mean() >= 0.9999


def test_auto_picks_large_tiffs_only(tmp_path, monkeypatch):
    slide(tmp_path / "s.tif", 64, 64)
    assert not large_tiff.out_of_core(tmp_path / "s.tif", "auto")
    monkeypatch.setattr(large_tiff, "LARGE_PIXELS", 1000)
    assert large_tiff.out_of_core(tmp_path / "s.tif", "auto")
    assert not large_tiff.out_of_core(tmp_path / "s.tif", "off")


def test_out_of_core_writes_no_overlay(rgb_run, tmp_path, capsys):
    _, _, _, checkpoint = rgb_run
    slide(tmp_path / "slide.tif", 64, 64)
    code, _, err = run_cli(
        capsys, "predict", "--checkpoint", checkpoint, tmp_path / "slide.tif", "--out", tmp_path / "o",
        "--out-of-core", "on", "--overlay",
    )  # fmt: skip
    assert code == 2 and "writes no overlay" in err and not (tmp_path / "o").exists()


def discs_probabilities(height: int = 300, width: int = 340) -> np.ndarray:
    """(2, H, W) smooth probabilities of many touching discs, some across every block edge, and
    on their right a tall ellipse and a wide one."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:height, :width]
    tall = 1 - np.sqrt(((yy - 150) / 45) ** 2 + ((xx - 225) / 6) ** 2)
    foreground = np.maximum(tall, 1 - np.sqrt(((yy - 60) / 6) ** 2 + ((xx - 290) / 45) ** 2))
    for _ in range(70):
        cy, cx, radius = rng.integers(0, height), rng.integers(0, 200), rng.integers(4, 11)
        foreground = np.maximum(foreground, 1 - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / (radius + 3))
    probability = np.clip(foreground * 1.4, 0, 1).astype(np.float32)
    return np.stack([1 - probability, probability])


class WholeRule:
    """The part of a Predictor that BandObjects uses: the whole-image object rule, and the mask
    values (not an instance model's)."""

    mask_values = MaskValues([0, 255])

    def objects_from_probabilities(self, probabilities):
        return split_objects(probabilities, ObjectRule(seed=0.9, flood=0.3))


def blocks_of(probabilities, folder):
    objects = band_objects.BandObjects(WholeRule(), *probabilities.shape[1:], folder)
    for top in range(0, len(probabilities[0]), 37):  # bands of any height, as the tiles make them
        objects.add(probabilities[:, top : top + 37])
    objects.save(folder / "o.tif", folder / "o.csv", [0, 255])
    return objects, tifffile.imread(folder / "o.tif")


def test_objects_cut_in_blocks_are_the_whole_image_objects(tmp_path, monkeypatch):
    monkeypatch.setattr(band_objects, "OBJECT_BLOCK", 40)  # 300 x 340: 8 x 9 blocks, each seeing 30 px around it
    monkeypatch.setattr(band_objects, "OBJECT_CONTEXT", 30)  # ... and up to 120 more, for the ellipses
    monkeypatch.setattr(band_objects, "MAX_OBJECT_CONTEXT", 120)
    probabilities = discs_probabilities()
    whole, classes = WholeRule().objects_from_probabilities(probabilities)
    objects, blocks = blocks_of(probabilities, tmp_path)
    assert blocks.dtype == np.uint16 and objects.cut == 0 and whole.max() > 30
    assert object_scores(whole, blocks)["adapted_rand_error"] < 1e-3  # the same partition, other ids
    with open(tmp_path / "o.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == blocks.max() == whole.max()
    table = object_table(whole, classes, probabilities)
    assert sorted(int(r["area"]) for r in rows) == sorted(table["area"].tolist())
    top_left = {(int(r["bbox_min_y"]), int(r["bbox_min_x"])): r for r in rows}
    for y, x, cy in zip(table["bbox_min_y"], table["bbox_min_x"], table["centroid_y"], strict=True):
        assert float(top_left[y, x]["centroid_y"]) == pytest.approx(cy, abs=1e-3)  # rows offset back


def test_objects_taller_than_the_context_are_cut_and_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(band_objects, "OBJECT_BLOCK", 40)
    monkeypatch.setattr(band_objects, "OBJECT_CONTEXT", 30)
    monkeypatch.setattr(band_objects, "MAX_OBJECT_CONTEXT", 30)  # no room to grow: the ellipses are cut
    objects, blocks = blocks_of(discs_probabilities(), tmp_path)
    assert objects.cut >= 2 and blocks.max() > 30


def test_rows_resized_band_by_band_equal_the_whole_resize():
    x = torch.randn(2, 151, 97)
    whole = F.interpolate(x[None], size=(300, 190), mode="bilinear", align_corners=False)[0]
    resampler = RowResampler(151, 300, 190)
    parts = [resampler.add(x[:, top : top + 23]) for top in range(0, 151, 23)]
    assert torch.allclose(torch.cat(parts, dim=1), whole, atol=1e-6)  # PyTorch's rounding too


def test_tall_strips_are_memory_mapped_or_refused(rgb_run, tmp_path, capsys, monkeypatch):
    _, _, _, checkpoint = rgb_run
    monkeypatch.setattr(large_tiff, "MAX_CHUNK_ROWS", 32)  # stands in for 4096 rows
    rgb = slide(tmp_path / "slide.tif", 96, 128)
    tifffile.imwrite(tmp_path / "tiled.tif", rgb, tile=(32, 32))
    tifffile.imwrite(tmp_path / "one_strip.tif", rgb)  # uncompressed, one strip: tifffile's default
    tifffile.imwrite(tmp_path / "zipped.tif", rgb, compression="zlib", rowsperstrip=96)
    nan = rgb[:, :, 0].astype(np.float32) / 255
    nan[70, 5] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", nan, tile=(32, 32))
    args = ("predict", "--checkpoint", checkpoint, "--amp", "off", *TILES, "--out-of-core", "on")
    for name in ("tiled", "one_strip"):
        code, _, err = run_cli(capsys, *args, tmp_path / f"{name}.tif", "--out", tmp_path / name)
        assert code == 0, err
    assert np.array_equal(
        tifffile.imread(tmp_path / "tiled" / "tiled.tif"), tifffile.imread(tmp_path / "one_strip" / "one_strip.tif")
    )
    code, _, err = run_cli(capsys, *args, tmp_path / "zipped.tif", "--out", tmp_path / "z")
    assert code == 2 and "strips of 96 rows" in err and "save it tiled" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, *args, tmp_path / "nan.tif", "--out", tmp_path / "n")
    assert code == 2 and "nan.tif: 1 pixel(s) are NaN or infinite (e.g. at row 70)" in err and err.count("\n") == 1


def test_probabilities_and_objects_out_of_core(rgb_run, tmp_path, capsys, monkeypatch):
    _, _, _, checkpoint = rgb_run
    monkeypatch.setattr(band_objects, "OBJECT_BLOCK", 64)  # 300 x 400: 5 x 7 blocks
    monkeypatch.setattr(band_objects, "OBJECT_CONTEXT", 48)  # the discs are at most 41 px tall
    rgb = slide(tmp_path / "slide.tif", 300, 400, tiled=False)  # strips read as well as tiles
    # The tiny model barely tells discs (18% of pixels) from background: cut objects at its quantiles.
    predictor = Predictor(
        checkpoint, amp="off", options=InferenceOptions(backend="torch", tiling="on", tile=64, overlap=16)
    )
    probability = predictor.probabilities(predictor.logits(rgb.astype(np.float32) / 255))[1]
    seed, flood = (str(float(np.quantile(probability, q))) for q in (0.9, 0.8))
    args = ("predict", "--checkpoint", checkpoint, tmp_path / "slide.tif", "--amp", "off", *TILES)
    args += ("--probabilities", "--instances", "--seed-threshold", seed, "--flood-threshold", flood)
    for mode in ("on", "off"):
        code, _, err = run_cli(capsys, *args, "--out", tmp_path / mode, "--out-of-core", mode)
        assert code == 0, err
    big = tifffile.imread(tmp_path / "on" / "slide_probs.tif")
    small = tifffile.imread(tmp_path / "off" / "slide_probs.tif")
    assert big.shape == small.shape == (2, 300, 400)
    assert np.abs(big - small).max() < 1e-4
    for mode in ("on", "off"):  # the same file layout either way: a page per class (not one page of 2 samples)
        with tifffile.TiffFile(tmp_path / mode / "slide_probs.tif") as tif:
            assert (len(tif.pages), tif.series[0].axes) == (2, "QYX"), mode
    labels = [tifffile.imread(tmp_path / mode / "slide_objects.tif") for mode in ("on", "off")]
    assert labels[1].max() >= 5  # objects to compare
    assert object_scores(labels[1], labels[0])["adapted_rand_error"] < 0.01
    lines = [len((tmp_path / mode / "slide_objects.csv").read_text().splitlines()) for mode in ("on", "off")]
    assert lines[0] == lines[1] == labels[0].max() + 1


def test_a_scaled_model_reads_the_matching_pyramid_level(rgb_run, tmp_path, capsys):
    _, _, _, checkpoint = rgb_run
    state = load_checkpoint(checkpoint)
    state["preprocess"]["scale"] = 0.5  # a fully convolutional model runs at any scale
    torch.save(state, tmp_path / "half.pt")
    image = slide(tmp_path / "flat.tif", 300, 400).astype(np.float32) / 255
    half = Preprocess(3, scale=0.5).resized_image(image, tmp_path).numpy().transpose(1, 2, 0)
    with tifffile.TiffWriter(tmp_path / "pyramid.tif") as writer:
        writer.write(image, tile=(64, 64), subifds=1, photometric="rgb")
        writer.write(np.ascontiguousarray(half), tile=(64, 64), subfiletype=1, photometric="rgb")
    args = ("predict", "--checkpoint", tmp_path / "half.pt", "--amp", "off", *TILES, "--threshold", "0.5")
    code, _, err = run_cli(capsys, *args, tmp_path / "pyramid.tif", "--out", tmp_path / "on", "--out-of-core", "on")
    assert code == 0, err
    code, _, err = run_cli(capsys, *args, tmp_path / "flat.tif", "--out", tmp_path / "off", "--out-of-core", "off")
    assert code == 0, err
    big = tifffile.imread(tmp_path / "on" / "pyramid.tif")
    small = np.asarray(Image.open(tmp_path / "off" / "flat.png"))
    assert big.shape == small.shape == (300, 400)  # full size, as in memory
    assert (big == small).mean() >= 0.999
    code, _, err = run_cli(capsys, *args, tmp_path / "flat.tif", "--out", tmp_path / "no", "--out-of-core", "on")
    assert code == 2 and "pyramid level of 200 x 150 pixels" in err and err.count("\n") == 1
    # the model at its own scale 1, the images at --zoom 0.5: the same level, the same mask
    zoomed = (*args[:2], checkpoint, *args[3:], "--zoom", "0.5", tmp_path / "pyramid.tif", "--out-of-core", "on")
    code, _, err = run_cli(capsys, *zoomed, "--out", tmp_path / "zoomed")
    assert code == 0, err
    assert np.array_equal(tifffile.imread(tmp_path / "zoomed" / "pyramid.tif"), big)


def test_out_of_core_tiles_and_batches_fit_the_memory_and_run_on_pytorch_where_auto_timed_onnx(rgb_run, monkeypatch):
    """Out of core the tile is the largest of 768 and 512 px whose full-size activation map fits
    32 MiB, and the tiles per batch keep a batch's map within it (the shipped 16-channel model: one
    768^2 tile in bf16, 2 of 512^2 in fp32); --tile and --batch-size win; in memory the same tile, 4 a batch.
    ONNX Runtime, whose arena keeps its largest batch, runs a slide only when asked for."""
    import unetkit.inference.predictor as predictor_module

    zoo = "unetkit/zoo/em-membranes.safetensors"  # base_channels 16
    torch_only = InferenceOptions(backend="torch")
    assert Predictor(zoo, amp="bf16", options=torch_only).slide_plan()[1:] == (768, 1)
    assert Predictor(zoo, amp="off", options=torch_only).slide_plan()[1:] == (512, 2)
    assert Predictor(zoo, amp="bf16", options=InferenceOptions(backend="torch", tile=256)).slide_plan()[1:] == (256, 4)
    assert Predictor(zoo, amp="off", options=InferenceOptions(backend="torch", tile=1024)).slide_plan()[1:] == (1024, 1)
    three = InferenceOptions(backend="torch", batch_size=3)
    assert Predictor(zoo, amp="off", options=three).slide_plan()[1:] == (512, 3)
    in_memory = Predictor(zoo, amp="bf16", options=torch_only)
    assert (in_memory.tile, in_memory.batch_size) == (768, 4)  # in memory the same tile, so the same mask
    assert Predictor(zoo, amp="bf16", options=InferenceOptions(backend="torch", overlap=600)).tile == 768
    with pytest.raises(UnetkitError, match=r"--overlap 600 must be smaller than the tile, 512 px .*fp32.*--tile"):
        Predictor(zoo, amp="off", options=InferenceOptions(backend="torch", overlap=600))  # the tile it would take
    with pytest.raises(UnetkitError, match="smaller than --tile 512"):
        InferenceOptions(tile=512, overlap=600)
    paper = Predictor(zoo, amp="bf16", options=torch_only)
    paper.spec = dataclasses.replace(paper.spec, args={**paper.spec.args, "base_channels": 64})
    assert paper.slide_plan()[1:] == (512, 1)  # the paper's 64 channels: 512^2 alone fills 32 MiB

    _, _, _, checkpoint = rgb_run
    speeds = iter([2.0, 1.0])  # PyTorch is timed first; ONNX Runtime wins the timing
    monkeypatch.setattr(predictor_module, "fastest_call", lambda call, repeats: next(speeds))
    timed = Predictor(checkpoint, amp="off", options=InferenceOptions(tta=True))
    timed.choose_backend_now()
    assert timed.backend == "onnxruntime"
    x = torch.rand(2, 3, 64, 64)
    forward = timed.slide_plan().forward
    on_torch = Predictor(checkpoint, amp="off", options=InferenceOptions(backend="torch", tta=True))
    torch.testing.assert_close(forward(x), on_torch.forward(x))  # PyTorch's model, with the views
    asked = Predictor(checkpoint, amp="off", options=InferenceOptions(backend="onnxruntime"))
    assert asked.slide_plan().forward is asked._forward  # asked for: ONNX Runtime runs the slide too


def test_a_run_of_slides_alone_never_exports_to_onnx_runtime(rgb_run, tmp_path, capsys, monkeypatch):
    """--backend auto times ONNX Runtime only where an image is predicted in memory: its export
    would stay in a slide's peak memory (170 MiB at 20,000^2) while PyTorch runs the slide."""
    import unetkit.inference.export.onnx as export_module

    _, _, _, checkpoint = rgb_run
    exports = []
    monkeypatch.setattr(export_module, "export_onnx", lambda *args: exports.append(args) or 1.0)
    slide(tmp_path / "slide.tif", 200, 240)
    args = ("predict", "--checkpoint", checkpoint, tmp_path / "slide.tif", "--amp", "off", *TILES[:6])
    code, out, err = run_cli(capsys, *args, "--out", tmp_path / "big", "--out-of-core", "on")
    assert code == 0, err
    assert exports == [] and "running on PyTorch, cpu, fp32" in out
    code, out, err = run_cli(capsys, *args, "--out", tmp_path / "small", "--out-of-core", "off")
    assert code == 0, err
    assert len(exports) == 1 and "running on PyTorch, cpu, fp32" in out  # tried; a drifting export is not used


@pytest.mark.parametrize("layout", ["planar RGB", "ImageJ CYX"])
def test_an_image_with_its_channels_first_is_read_band_by_band_as_in_memory(tmp_path, layout):
    """Out of core as in memory: a planar-configured RGB TIFF (SYX) and an ImageJ CYX one give the
    same (h, W, C) rows (before, both were refused: "save it channels last")."""
    rgb = slide(tmp_path / "contig.tif", 300, 200)
    path = tmp_path / "first.tif"
    if layout == "planar RGB":
        tifffile.imwrite(path, np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate", tile=(64, 64))
    else:
        tifffile.imwrite(path, np.moveaxis(rgb[..., :2], -1, 0), imagej=True, metadata={"axes": "CYX"})
    expected = rgb if layout == "planar RGB" else rgb[..., :2]
    assert large_tiff.channels_first(tiff_layout(path)) and not large_tiff.channels_first(
        tiff_layout(tmp_path / "contig.tif")
    )
    with large_tiff.opened_pixels(path) as (pixels, _):
        assert pixels.shape == expected.shape
        assert np.array_equal(large_tiff.rows_of(pixels, 37, 130, path), expected[37:130])
    assert np.array_equal(read_image(path), read_image(tmp_path / "contig.tif")[..., : expected.shape[2]])


def test_a_full_disk_under_the_temporary_store_is_one_line_once_zarrs_writes_have_ended(tmp_path, monkeypatch):
    """zarr gathers a write's chunks and does not cancel the rest when one fails: they went on
    writing into the temporary folder while it was removed, and were reported at exit as pending
    tasks (a red-team finding on a full disk). The write now waits for them, then says one line."""
    import asyncio
    import errno
    import shutil

    import zarr.storage
    from zarr.core.sync import sync

    from unetkit.errors import UnetkitError
    from unetkit.inference.slide.band_outputs import RowStore

    store = RowStore(tmp_path / "tmp", "probabilities", (2, 512, 512), np.float32)
    real_set, calls = zarr.storage.LocalStore.set, []

    async def full_disk_on_the_third(self, key, value):
        calls.append(key)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        await asyncio.sleep(0.05)  # the others still under way when the third fails
        return await real_set(self, key, value)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", full_disk_on_the_third)
    with pytest.raises(UnetkitError, match=r"cannot write the temporary 2-plane store .*No space left"):
        store.add(np.ones((2, 256, 512), np.float32))  # zeros are the fill value: not written

    async def others() -> int:
        return len([task for task in asyncio.all_tasks() if task is not asyncio.current_task()])

    assert sync(others()) == 0  # nothing left writing
    shutil.rmtree(tmp_path / "tmp")  # and the folder goes whole


def test_a_ctrl_c_while_zarr_writes_lets_them_end_before_the_folder_goes(tmp_path, monkeypatch):
    """A Ctrl-C while the objects' store was written left zarr's chunk writes going into the
    temporary folder as it was removed: a traceback ("Directory not empty") and the folder left
    (a red-team finding). Whatever stops the outputs now waits for those writes first."""
    import asyncio
    import shutil

    import zarr.core.sync
    import zarr.storage
    from zarr.core.sync import sync

    from unetkit.inference.slide.band_outputs import RowStore, writes_settled_on_error

    store = RowStore(tmp_path / "tmp", "objects", (1, 512, 512), np.uint32)
    real_set, real_wait, interrupted = zarr.storage.LocalStore.set, zarr.core.sync.wait, []

    async def slow(self, key, value):
        await asyncio.sleep(0.2)  # still writing when the Ctrl-C comes
        return await real_set(self, key, value)

    def ctrl_c_once(*args, **kwargs):  # the main thread's wait for the write is where a Ctrl-C lands
        if not interrupted:
            interrupted.append(True)
            raise KeyboardInterrupt
        return real_wait(*args, **kwargs)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", slow)
    monkeypatch.setattr(zarr.core.sync, "wait", ctrl_c_once)
    with pytest.raises(KeyboardInterrupt), writes_settled_on_error():
        store.add(np.ones((1, 256, 512), np.uint32))

    async def others() -> int:
        return len([task for task in asyncio.all_tasks() if task is not asyncio.current_task()])

    assert interrupted and sync(others()) == 0  # nothing left writing
    shutil.rmtree(tmp_path / "tmp")  # and the folder goes whole


def test_the_whole_images_percentiles_keep_a_sample_not_its_bands(tmp_path):
    """image_percentiles kept each band alive through a strided view of it: the whole image in
    float32 by the last band (an 8000^2 RGB slide: +278 MB before the first tile, against +63 MB
    with copies; a 20,000^2 one 1.6 GB). Its ranges are the sample's all the same."""
    import tracemalloc

    path = tmp_path / "slide.tif"
    image = np.random.default_rng(0).integers(0, 255, (4000, 4000), dtype=np.uint8)
    tifffile.imwrite(path, image, tile=(256, 256))
    with large_tiff.opened_pixels(path) as (pixels, rule):
        tracemalloc.start()
        try:
            ranges = large_tiff.image_percentiles(pixels, rule, path, [1.0, 99.8], 1)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 30 * 2**20, peak / 2**20  # the whole image in float32: 61 MiB
    expected = np.percentile(image[::4, ::4].astype(np.float32) / 255, [1.0, 99.8])
    np.testing.assert_allclose(ranges.ravel(), expected, atol=1e-6)


def test_a_band_taken_as_its_class_ids_equals_its_logits_then_ids(monkeypatch):
    """Blend.take(rows, each) makes the mask's ids TAKE_ROWS rows at a time, so a 4-class model's
    20,000 px band of logits (225 MB) is never whole: the nuclei slide's peak 1,655 -> 1,174 MiB.
    The ids, and the rows kept for the next band, are those of the whole take."""
    from unetkit.inference import tiling

    monkeypatch.setattr(tiling, "TAKE_ROWS", 7)  # several chunks and a ragged last one
    generator = torch.Generator().manual_seed(0)
    whole, chunked = (tiling.Blend(4, 48, (16, 16)) for _ in range(2))
    for top in range(0, 40, 8):
        for left in range(0, 40, 8):
            logits = torch.randn(4, 16, 16, generator=generator)
            whole.add((top, left, 16, 16), logits)
            chunked.add((top, left, 16, 16), logits)
    each = partial(large_tiff.classes_of, threshold=0.5)
    np.testing.assert_array_equal(chunked.take(30, each), each(whole.take(30)))
    assert torch.equal(chunked.take(), whole.take())  # the rows left behind are the same


@pytest.mark.parametrize("tiled", [True, False])
def test_a_band_reads_a_stored_tile_s_columns_at_a_time_into_one_buffer(tmp_path, monkeypatch, tiled):
    """band_input reads a tiled file a few stored tiles' columns at a time (each tile decoded once)
    and a file in strips whole rows at a time, into the slide's one buffer; the input is the same."""
    path = tmp_path / "s.tif"
    slide(path, 200, 300, tiled)
    if tiled:  # tiles 48 wide: BAND_COLUMNS 100 reads 96 columns (two tiles) at a time
        tifffile.imwrite(path, tifffile.imread(path), tile=(48, 48))
    monkeypatch.setattr(large_tiff, "BAND_COLUMNS", 100)
    preprocess = Predictor("unetkit/zoo/nuclei.safetensors", amp="off").preprocess  # per-image percentiles
    reads = []
    rows_of = large_tiff.rows_of
    monkeypatch.setattr(large_tiff, "rows_of", lambda *a: reads.append(a[4:]) or rows_of(*a))
    with large_tiff.opened_pixels(path) as (pixels, rule):
        ranges = large_tiff.image_percentiles(pixels, rule, path, preprocess.percentiles, 1)
        reads.clear()
        buffer = torch.full((1, 64, 300), float("nan"))
        x = large_tiff.band_input(preprocess, pixels, 40, 104, (rule, path, ranges), buffer)
        read = list(reads)
        whole = preprocess.band_tensor(large_tiff.band_image(pixels, 40, 104, rule, path), path, ranges)
    assert x.data_ptr() == buffer.data_ptr()
    torch.testing.assert_close(x, whole, rtol=0, atol=1e-6)  # pieces of 100 columns round as SIMD tails do
    expected = (
        [(slice(0, 96),), (slice(96, 192),), (slice(192, 288),), (slice(288, 384),)] if tiled else [(slice(None),)]
    )
    assert read == expected


def test_a_wide_slide_of_a_many_class_model_takes_smaller_tiles_said(capsys):
    """A band's blended sums grow with the classes and the image's width: out of core the tile
    (the band's height) shrinks until they fit SLIDE_BAND_BYTES, and says so; --tile is kept."""
    zoo = "unetkit/zoo/nuclei.safetensors"  # 4 classes, 1 channel: 5 x 4 bytes a pixel of a band
    torch_only = InferenceOptions(backend="torch")
    assert Predictor(zoo, amp="bf16", options=torch_only).slide_plan(20_000)[1:] == (768, 1)  # 293 MiB
    assert "out of core" not in capsys.readouterr().out
    assert Predictor(zoo, amp="bf16", options=torch_only).slide_plan(40_000)[1:] == (384, 4)  # 586 -> 293 MiB
    said = capsys.readouterr().out
    assert "tiles of 384 px, not 768" in said and "hold 293 MiB (586 MiB in 768 px tiles)" in said and "--tile" in said
    asked = InferenceOptions(backend="torch", tile=768)
    assert Predictor(zoo, amp="bf16", options=asked).slide_plan(40_000)[1:] == (768, 1)
    wide = InferenceOptions(backend="torch", overlap=200)  # tiles no larger than twice the overlap are not taken
    assert Predictor(zoo, amp="bf16", options=wide).slide_plan(80_000)[1] == 512
    assert "tiles of 512 px, not 768" in capsys.readouterr().out  # 781 MiB: over the budget, said
    wider = InferenceOptions(backend="torch", overlap=300)  # none smaller may be taken: 768 stays, said
    assert Predictor(zoo, amp="bf16", options=wider).slide_plan(80_000)[1] == 768
    said = capsys.readouterr().out
    assert "tiles of 768 px: " in said and "over the 320 MiB aimed at" in said and "smaller --overlap" in said
