"""Out-of-core prediction of large TIFFs: the tiled mask it writes band by band equals the
in-memory tiled path's, and it never holds the image whole."""

import numpy as np
import tifffile
from PIL import Image
from synthetic import run_cli

import unetkit.inference.large_tiff as large_tiff
from unetkit.inference import InferenceOptions, Predictor

TILES = ("--tiling", "on", "--tile", "64", "--overlap", "16", "--batch-size", "8")


def slide(path, height: int = 700, width: int = 900) -> np.ndarray:
    """An RGB tiled TIFF of bright discs on a noisy background, like the rgb_run images."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:height, :width]
    image = rng.normal(40, 12, (height, width))
    for _ in range(60):
        cy, cx, radius = rng.integers(0, height), rng.integers(0, width), rng.integers(5, 20)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 230
    gray = np.clip(image, 0, 255).astype(np.uint8)
    rgb = np.stack([gray, gray // 2 + 60, 255 - gray], axis=-1)
    tifffile.imwrite(path, rgb, tile=(128, 128), compression="zlib")
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
    band_image = large_tiff.band_image
    monkeypatch.setattr(large_tiff, "band_image", lambda *a: reads.append(a[2] - a[1]) or band_image(*a))
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
    assert max(reads) == 64 and len(reads) > 10  # read a band of one tile height at a time


def test_auto_picks_large_tiffs_only(tmp_path, monkeypatch):
    slide(tmp_path / "s.tif", 64, 64)
    assert not large_tiff.out_of_core(tmp_path / "s.tif", "auto")
    monkeypatch.setattr(large_tiff, "LARGE_PIXELS", 1000)
    assert large_tiff.out_of_core(tmp_path / "s.tif", "auto")
    assert not large_tiff.out_of_core(tmp_path / "s.tif", "off")


def test_out_of_core_writes_the_mask_only(rgb_run, tmp_path, capsys):
    _, _, _, checkpoint = rgb_run
    slide(tmp_path / "slide.tif", 64, 64)
    code, _, err = run_cli(
        capsys, "predict", "--checkpoint", checkpoint, tmp_path / "slide.tif", "--out", tmp_path / "o",
        "--out-of-core", "on", "--overlay",
    )  # fmt: skip
    assert code == 2 and "writes the mask only" in err and not (tmp_path / "o").exists()
