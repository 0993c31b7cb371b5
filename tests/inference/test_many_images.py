"""Issue 15, many images: predict over a folder keeps the model busy (decoding and writing in
threads, several images per batch, tiles of several images sharing a batch) and writes what the
one-image-at-a-time loop (--workers 0) writes."""

import re
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from synthetic import assert_one_line_error, run_cli

from unetkit.inference import InferenceOptions, Predictor
from unetkit.inference import batched as batched_module
from unetkit.inference import predictor as predictor_module
from unetkit.inference.outputs import PredictOutputs
from unetkit.inference.tiling import tile_boxes
from unetkit.predict import MANIFEST, predict_files

# 200 images, sizes interleaved by name: three shapes run whole, and 64 x 80 ones (above the
# lowered auto-tiling threshold) as 9 tiles of 32 x 32 each.
SHAPES = [(40, 56)] * 4 + [(24, 24), (33, 47)] + [(64, 80)] * 1 + [(40, 56)] * 3
COUNT = 200
TILED_ABOVE = 3000  # pixels; stands in for AUTO_TILING_PIXELS (1024^2), too slow for a test


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """COUNT small RGB images of mixed sizes."""
    root = tmp_path_factory.mktemp("many") / "images"
    root.mkdir()
    rng = np.random.default_rng(1)
    for index in range(COUNT):
        height, width = SHAPES[index % len(SHAPES)]
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        pixels[height // 4 : height // 2, width // 3 : width // 2] = 230  # something to find
        Image.fromarray(pixels).save(root / f"img{index:03d}.png")
    return root


@pytest.fixture
def predictor(rgb_run, monkeypatch):
    monkeypatch.setattr(predictor_module, "AUTO_TILING_PIXELS", TILED_ABOVE)
    options = InferenceOptions(tile=32, overlap=8, backend="torch", amp="off", device="cpu")
    return Predictor(rgb_run[3], options=options)


def predict(predictor: Predictor, folder: Path, out: Path, workers: int, **outputs) -> list[Path]:
    predictor.options.workers = workers
    return predict_files(predictor, [folder], PredictOutputs(out, **outputs))


def assert_same_outputs(expected: Path, got: Path) -> None:
    """Same file names; images equal but for a vanishing fraction of pixels (batched convolutions may
    round differently from batches of one), probabilities equal to 1e-4."""
    names = sorted(path.name for path in expected.iterdir())
    assert names == sorted(path.name for path in got.iterdir())
    differing = pixels = 0
    for name in names:
        if name.endswith("_probs.tif"):
            np.testing.assert_allclose(tifffile.imread(got / name), tifffile.imread(expected / name), atol=1e-4)
        elif name.endswith((".png", ".tif")):
            read = tifffile.imread if name.endswith(".tif") else lambda path: np.asarray(Image.open(path))
            a, b = read(expected / name), read(got / name)
            assert a.shape == b.shape, name
            differing, pixels = differing + int((a != b).sum()), pixels + a.size
    assert pixels and differing <= 1e-4 * pixels, (differing, pixels)


def spy_on_batches(monkeypatch) -> list[list[tuple[str, bool]]]:
    """Record each batch the model runs: (image name, is a tile) per piece."""
    batches: list[list[tuple[str, bool]]] = []
    run = batched_module.Batches.run

    def spy(self, shape=None):
        key = next(iter(self.waiting)) if shape is None else shape
        batches.append([(job.ref.path.name, box is not None) for job, box in self.waiting[key]])
        return run(self, shape)

    monkeypatch.setattr(batched_module.Batches, "run", spy)
    return batches


def test_batched_prediction_writes_what_one_at_a_time_writes(predictor, folder, tmp_path, monkeypatch):
    expected = predict(predictor, folder, tmp_path / "sequential", 0)
    batches = spy_on_batches(monkeypatch)
    written = predict(predictor, folder, tmp_path / "batched", 2)
    assert [path.name for path in written] == [path.name for path in expected]  # in input order
    assert written == [tmp_path / "batched" / f"img{i:03d}.png" for i in range(COUNT)]
    assert_same_outputs(tmp_path / "sequential", tmp_path / "batched")
    # The model ran full batches: whole images of one size together, tiles of several images together.
    assert max(len(batch) for batch in batches) == predictor.batch_size
    pieces = sum(len(batch) for batch in batches)
    tiled = sum(1 for i in range(COUNT) if SHAPES[i % len(SHAPES)] == (64, 80))
    assert pieces == COUNT - tiled + len(tile_boxes(64, 80, 32, 8)) * tiled
    assert len(batches) < pieces / 3  # one image at a time: a forward per piece
    whole = [batch for batch in batches if not any(tile for _, tile in batch)]
    assert any(len({name for name, _ in batch}) == 4 for batch in whole)
    tiles = [batch for batch in batches if all(tile for _, tile in batch)]
    assert any(len({name for name, _ in batch}) == 2 for batch in tiles)
    assert all(tile == batch[0][1] for batch in batches for _, tile in batch)


@pytest.mark.parametrize("tta", [False, True])
def test_every_output_is_the_same_batched_with_tta_too(predictor, folder, tmp_path, tta):
    predictor.options.tta = tta
    files = sorted(folder.iterdir())[:24]  # every shape, 64 x 80 tiled
    outputs = {"overlay": True, "probabilities": True, "instances": True}
    for workers, out in ((0, "sequential"), (2, "batched")):
        predictor.options.workers = workers
        predict_files(predictor, files, PredictOutputs(tmp_path / out, **outputs))
    assert len([p for p in (tmp_path / "batched").iterdir() if p.name != MANIFEST]) == 24 * 5
    assert_same_outputs(tmp_path / "sequential", tmp_path / "batched")


def test_an_unreadable_image_stops_prediction_with_one_line_and_keeps_what_was_written(
    rgb_run, folder, tmp_path, capsys
):
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted(folder.iterdir())[:120]:
        (images / path.name).write_bytes(path.read_bytes())
    (images / "img100.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    threads = threading.active_count()
    args = ["predict", "--checkpoint", rgb_run[3], images, "--out", tmp_path / "out", "--backend", "torch"]
    code, _, err = run_cli(capsys, *args, "--amp", "off", "--no-progress")
    assert_one_line_error(code, err, "img100.png", "cannot read this file as an image")
    assert threading.active_count() == threads  # no worker left behind
    written = sorted(path for path in (tmp_path / "out").iterdir() if path.name != MANIFEST)  # the list it wrote
    assert 20 <= len(written) <= 100 and all(path.stem < "img100" for path in written)  # images are taken in order
    assert all(path.suffix == ".png" and not path.name.startswith(".") for path in written)  # no temporary files
    for path in written:  # whole files: each decodes
        assert np.asarray(Image.open(path)).shape == np.asarray(Image.open(images / path.name)).shape[:2]


def test_predict_reports_images_per_second(rgb_run, folder, tmp_path, capsys):
    args = ["predict", "--checkpoint", rgb_run[3], folder, "--out", tmp_path / "out", "--backend", "torch"]
    code, out, _ = run_cli(capsys, *args, "--amp", "off", "--no-progress", "--workers", "3")
    assert code == 0
    said = re.search(r"wrote 200 mask\(s\) to \S+ in (\d+\.\d) s \(([\d.]+) images/s\)", out)
    assert said, out
    assert float(said.group(2)) > 0
    code, _, err = run_cli(capsys, *args, "--workers", "-1")
    assert_one_line_error(code, err, "--workers -1", "0 or more threads")
