"""Per-image percentile normalisation (issues 21 and 22, `--normalize image`): how it scales, when
the recipe chooses it (a channel whose brightness spreads threefold over the images, as
dsb2018-dev's does 7-fold, where it won; not ISBI's, HC18's or CamVid's 1.2-1.4-fold:
benchmarks/NOTES.md), and that the checkpoint and the bioimage.io package repeat it."""

import zipfile

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from synthetic import TINY_TRAIN, run_cli

from unetkit.data import find_pairs
from unetkit.data.fingerprint import DataFingerprint, fingerprint_pairs
from unetkit.data.io import to_unit_float
from unetkit.data.objects import value_counts
from unetkit.data.preprocess import percentile_scaled
from unetkit.models.checkpoint import load_checkpoint
from unetkit.train import TrainConfig
from unetkit.train.recipes import apply_recipe, data_normalisation


def test_percentile_scaling_matches_numpy_per_channel():
    rng = np.random.default_rng(0)
    image = np.stack([rng.random((50, 60)) * 0.1, rng.random((50, 60)) * 0.9 + 0.05], axis=-1).astype(np.float32)
    scaled = percentile_scaled(image, 1.0, 99.8)
    for channel in range(2):
        low, high = np.percentile(image[..., channel], [1.0, 99.8])
        expected = np.clip((image[..., channel] - low) / (high - low), 0, 1)
        np.testing.assert_allclose(scaled[..., channel], expected, atol=1e-6)
    assert not percentile_scaled(np.full((8, 8, 1), 0.3, np.float32), 1.0, 99.8).any()  # flat: 0, not NaN


def fingerprint_of_gains(root, gains: list[list[float]]) -> DataFingerprint:
    """The fingerprint of one 16-bit image a row of `gains` (a channel each), noise under a bright
    disc, with its 0/255 mask."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:40, :40]
    disc = (yy - 20) ** 2 + (xx - 20) ** 2 <= 64
    for index, row in enumerate(gains):
        image = np.stack([(rng.random((40, 40)) * 0.2 + disc * 0.7) * gain for gain in row], axis=-1)
        pixels = np.round(image * 65535).astype(np.uint16).transpose(2, 0, 1)  # ImageJ's CYX
        tifffile.imwrite(root / f"i{index:03d}.tif", pixels, imagej=True, metadata={"axes": "CYX"})
        Image.fromarray(disc.astype(np.uint8) * 255).save(root / f"i{index:03d}_mask.png")
    return fingerprint_pairs(find_pairs(root, root, mask_suffix="_mask"))


@pytest.mark.parametrize(
    "mask",
    [
        np.array([[0, 255, 255], [7, 0, 255]], np.uint8),
        np.random.default_rng(0).integers(0, 70_000, (40, 50)).astype(np.uint16),  # every id an instance's
        np.array([[0, 5_000_000], [9, 9]], np.int32),  # ids far apart: np.unique's path
        np.array([[-1, 0], [2, 2]], np.int16),
        np.array([[True, False], [True, True]]),
        np.array([[0.5, 0.0], [0.5, 1.0]]),
    ],
)
def test_value_counts_equal_numpys_unique(mask):
    weights = np.random.default_rng(1).random(mask.shape)
    values, counts, sums = value_counts(mask, weights)
    expected, inverse, expected_counts = np.unique(mask, return_inverse=True, return_counts=True)
    assert values.dtype == mask.dtype and np.array_equal(values, expected)
    assert np.array_equal(counts, expected_counts)
    np.testing.assert_allclose(sums, np.bincount(inverse.ravel(), weights=weights.ravel()), rtol=1e-12)
    assert len(value_counts(mask)) == 2


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float64, np.bool_])
def test_unit_float_pixels_equal_a_cast_then_a_division(dtype, tmp_path):
    """to_unit_float's one-pass division gives the float32 values of the two-pass reference."""
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 4096, (64, 48, 3)) if dtype != np.float64 else rng.normal(0, 1e3, (64, 48, 3))
    array = (raw > 2000 if dtype == np.bool_ else raw).astype(dtype)
    maximum = {np.uint8: 255.0, np.uint16: 4095.0, np.int32: 4095.0, np.float64: 1.0, np.bool_: 1.0}[dtype]
    reference = array.astype(np.float32)
    reference /= maximum
    got = to_unit_float(array, maximum, tmp_path / "image.tif")
    assert got.dtype == np.float32 and np.array_equal(got, reference)


def test_the_recipe_normalises_each_image_where_a_channel_spreads_threefold(tmp_path):
    rng = np.random.default_rng(0)
    spread = 10 ** -rng.uniform(0, 2, 60)  # 1x to 100x dimmer
    alike = 1 - rng.uniform(0, 0.3, 60)
    some = 10 ** -rng.uniform(0, 0.8, 60)  # up to 6x dimmer
    cases = {
        "alike": ([[a] for a in alike], [1.0, 1.5], "dataset"),
        "spread": ([[g] for g in spread], [10.0, 100.0], "image"),
        "some": ([[g] for g in some], [3.0, 6.5], "image"),
        "one channel of two": ([[a, g] for a, g in zip(alike, spread, strict=True)], None, "image"),
    }
    for name, (gains, bounds, choice) in cases.items():
        (tmp_path / name).mkdir()
        data = fingerprint_of_gains(tmp_path / name, gains)
        if bounds:
            assert bounds[0] <= data.brightness_spread[0] <= bounds[1], (name, data.brightness_spread)
        assert data_normalisation(data) == choice, (name, data.brightness_spread)
        user, _ = apply_recipe(TrainConfig(normalize="dataset"), data, torch.device("cpu"))
        assert user.normalize == "dataset"  # the user's choice stands
    # Blank images tell nothing about brightness: they are left out, not counted as dim.
    (tmp_path / "blank").mkdir()
    blank = fingerprint_of_gains(tmp_path / "blank", [[0.0]] * 10 + [[a] for a in alike])
    assert blank.brightness_spread[0] < 2


def test_the_recipe_normalises_each_image_where_the_images_do_not_fill_their_unit_range(tmp_path):
    """16-bit data spanning 100-140 (a brightness shift of 0.1 was ~770 of its standard deviations)
    and float counts of 0-4000 (the gamma's clamp to [0, 1] left two values) train badly on the
    augmentation's [0, 1] unless each image is scaled by its percentiles first (a red-team round)."""
    rng = np.random.default_rng(0)
    (tmp_path / "dim").mkdir()
    dim = fingerprint_of_gains(tmp_path / "dim", [[g] for g in rng.uniform(0.0007, 0.0009, 8)])
    assert dim.brightness_range[0] < 0.05 and dim.brightness_spread[0] < 1.5
    assert data_normalisation(dim) == "image"
    counts = tmp_path / "counts"
    counts.mkdir()
    disc = np.zeros((40, 40), bool)
    disc[10:30, 10:30] = True
    for index in range(8):
        tifffile.imwrite(counts / f"c{index}.tif", (rng.random((40, 40)) * 800 + disc * 3200).astype(np.float32))
        Image.fromarray(disc.astype(np.uint8) * 255).save(counts / f"c{index}_mask.png")
    floats = fingerprint_pairs(find_pairs(counts, counts, mask_suffix="_mask"))
    assert floats.brightness_range[0] > 1000 and data_normalisation(floats) == "image"
    (tmp_path / "usual").mkdir()  # images that fill their range, alike: one mean and std, as before
    assert data_normalisation(fingerprint_of_gains(tmp_path / "usual", [[1.0]] * 8)) == "dataset"


def dark_nuclei(root, count: int = 40, size: int = 32):
    """Dark images whose brightness varies tenfold and more (gains 0.02 to 0.29), bright discs on
    them, 0/255 masks."""
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:size, :size]
    for kind in ("images", "masks"):
        (root / kind).mkdir(parents=True)
    for index in range(count):
        gain = 0.02 + 0.3 * (index % 10) / 10
        mask = np.zeros((size, size), bool)
        for _ in range(3):
            cy, cx = rng.integers(5, size - 5, 2)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= 16
        image = rng.normal(0.1, 0.02, (size, size)) * gain + mask * gain
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(root / "images" / f"n{index:02d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"n{index:02d}.png")
    return root / "images", root / "masks"


@pytest.fixture(scope="module")
def percentile_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("dark")
    images, masks = dark_nuclei(root)
    from unetkit.cli import main

    args = ["train", "--images", str(images), "--masks", str(masks), "--out", str(root / "run"), *TINY_TRAIN]
    assert main(args) == 0  # nothing typed: the recipe chooses per-image percentiles
    return images, masks, root / "run" / "best.pt"


def test_a_per_image_normalised_model_keeps_its_percentiles(percentile_run):
    _images, _masks, checkpoint = percentile_run
    state = load_checkpoint(checkpoint)
    assert state["preprocess"]["percentiles"] == [1.0, 99.8]
    assert state["config"]["normalize"] == "image"


def test_out_of_core_takes_the_same_percentiles_as_in_memory(percentile_run, tmp_path, capsys):
    """The whole image's percentiles, from the same strided sample read a band at a time; then the
    model's outputs are those of the image in memory."""
    from unetkit.data.io import PixelRule
    from unetkit.inference.slide.large_tiff import image_percentiles

    rng = np.random.default_rng(3)
    big = (rng.gamma(2.0, 0.1, (2300, 2100, 2)) * np.linspace(0.2, 1, 2100)[:, None]).astype(np.float32)
    expected = np.percentile(big[::2, ::2].reshape(-1, 2), [1.0, 99.8], axis=0)  # 4.8 Mpx: every 2nd row and column
    found = image_percentiles(big, PixelRule(1.0, alpha=False), tmp_path / "big.tif", [1.0, 99.8], 2)
    np.testing.assert_allclose(found, expected, rtol=1e-6)
    images, _masks, checkpoint = percentile_run
    gray = np.asarray(Image.open(images / "n03.png"))
    tifffile.imwrite(tmp_path / "dim.tif", np.tile(gray, (6, 8)), tile=(64, 64))  # 192 x 256, one tile
    for mode in ("off", "on"):
        args = ["predict", "--checkpoint", checkpoint, tmp_path / "dim.tif", "--out", tmp_path / mode]
        code, _, err = run_cli(capsys, *args, "--out-of-core", mode, "--no-progress", "--probabilities")
        assert code == 0, err
    on, off = (tifffile.imread(tmp_path / mode / "dim_probs.tif") for mode in ("on", "off"))
    np.testing.assert_allclose(on, off, atol=1e-5)


def test_the_bioimageio_package_scales_each_image_by_its_percentiles(percentile_run, tmp_path, capsys):
    bioimageio_core = pytest.importorskip("bioimageio.core", reason="needs pip install 'unetkit[bioimageio]'")
    images, _masks, checkpoint = percentile_run
    package = tmp_path / "model.zip"
    code, _, err = run_cli(
        capsys, "export", "--checkpoint", checkpoint, "--bioimageio", package, "--sample", images / "n03.png"
    )
    assert code == 0, err
    summary = bioimageio_core.test_model(str(package))
    assert summary.status == "passed", [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.errors]
    rdf = zipfile.ZipFile(package).read("rdf.yaml").decode()
    assert "scale_range" in rdf and "99.8" in rdf and "scale_linear" not in rdf
