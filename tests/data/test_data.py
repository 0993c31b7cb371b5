from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from synthetic import make_shapes

from unetkit.data import (
    AugmentConfig,
    MaskValues,
    Preprocess,
    SegmentationDataset,
    discover_mask_values,
    find_pairs,
    read_image,
    read_mask,
)
from unetkit.data.transforms import STRONG_PHOTOMETRIC, gaussian_blur, jitter_intensity, random_patch
from unetkit.errors import UnetkitError


def test_images_of_every_format_and_depth_read_into_0_1(tmp_path: Path):
    gray8 = np.array([[0, 255]], dtype=np.uint8)
    Image.fromarray(gray8).save(tmp_path / "g.png")
    Image.fromarray(gray8).save(tmp_path / "g.bmp")
    Image.fromarray(np.array([[0, 65535]], dtype=np.uint16)).save(tmp_path / "g16.png")
    tifffile.imwrite(tmp_path / "g16.tif", np.array([[0, 65535]], dtype=np.uint16))
    Image.fromarray(np.zeros((4, 4, 4), dtype=np.uint8) + 255).save(tmp_path / "rgba.png")
    Image.fromarray(np.full((8, 8, 3), 128, dtype=np.uint8)).save(tmp_path / "rgb.jpg", quality=95)
    for name in ("g.png", "g.bmp", "g16.png", "g16.tif"):
        image = read_image(tmp_path / name)
        assert image.shape == (1, 2, 1) and image.dtype == np.float32, name
        np.testing.assert_allclose(image[0, :, 0], [0, 1], atol=1e-6)
    assert read_image(tmp_path / "rgba.png").shape == (4, 4, 3)  # alpha dropped
    assert abs(read_image(tmp_path / "rgb.jpg").mean() - 128 / 255) < 0.02


def test_masks_keep_their_values_and_reject_colour(tmp_path: Path):
    Image.fromarray(np.array([[0, 7, 255]], dtype=np.uint8)).save(tmp_path / "m.png")
    palette = Image.fromarray(np.array([[0, 1, 2]], dtype=np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    palette.save(tmp_path / "voc.png")
    Image.fromarray(np.stack([np.array([[0, 255]], dtype=np.uint8)] * 3, -1)).save(tmp_path / "gray_as_rgb.png")
    Image.fromarray(np.array([[[255, 0, 0], [0, 255, 0]]], dtype=np.uint8)).save(tmp_path / "colour.png")
    assert read_mask(tmp_path / "m.png").tolist() == [[0, 7, 255]]
    assert read_mask(tmp_path / "voc.png").tolist() == [[0, 1, 2]]
    assert read_mask(tmp_path / "gray_as_rgb.png").tolist() == [[0, 255]]
    with pytest.raises(UnetkitError, match="colour.png.*colour-coded"):
        read_mask(tmp_path / "colour.png")


def test_corrupt_file_is_named(tmp_path: Path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UnetkitError, match="broken.png: cannot read"):
        read_image(tmp_path / "broken.png")


def test_pairs_match_by_stem_and_find_the_mask_suffix(tmp_path: Path):
    images, masks = make_shapes(tmp_path, count=3, mask_suffix="_mask")
    pairs = find_pairs(images, masks)
    assert [(p.image.name, p.mask.name) for p in pairs] == [(f"img0{i}.png", f"img0{i}_mask.png") for i in range(3)]


def test_unpaired_files_are_named(tmp_path: Path):
    images, masks = make_shapes(tmp_path, count=3)
    (masks / "img01.png").unlink()
    with pytest.raises(UnetkitError, match="img01.png"):
        find_pairs(images, masks)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(masks / "img01.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(masks / "stray.png")
    with pytest.raises(UnetkitError, match="stray.png"):
        find_pairs(images, masks)


def test_mask_values_round_trip_and_unknown_values_name_the_file():
    values = MaskValues([0, 128, 255])
    mask = np.array([[0, 255], [128, 0]])
    ids = values.encode(mask, "a.png")
    assert ids.tolist() == [[0, 2], [1, 0]]
    assert values.decode(ids).tolist() == mask.tolist()
    with pytest.raises(UnetkitError, match=r"b.png: mask value\(s\) \[7\].*or with --ignore-value 7 if it marks"):
        values.encode(np.array([[7]]), "b.png")  # CamVid's void, left out of --mask-values: the likely fix named


@pytest.mark.parametrize(
    "values",
    [[0, 255], [0, 1], [1, 2, 3, 4], [0, 5, 10], [0, 1000, 2000], [0, 300], [0, 1, 3], [0, 100, 255]]
    + [[255, 0], [2, 1, 0]],  # as an older run may have stored them
)
def test_mask_values_decode_evenly_spaced_values_by_arithmetic_as_a_lookup_would(values):
    """Evenly spaced values (most masks) decode as ids * step + first, the rest by a lookup: the
    same pixels and type either way, and the ids are left as they were. An older run's values
    may be stored in any order (red-team finding: [255, 0] overflowed the step)."""
    ids = np.random.default_rng(0).integers(0, len(values), (40, 50)).astype(np.uint8)
    before = ids.copy()
    decoded = MaskValues(values).decode(ids)
    np.testing.assert_array_equal(decoded, np.asarray(values)[ids])
    assert decoded.dtype == (np.uint8 if max(values) <= 255 else np.uint16)
    np.testing.assert_array_equal(ids, before)


def scanned(name: str, mask) -> tuple[Path, np.ndarray, np.ndarray]:
    """A mask as the fingerprint scans it: its path, distinct values and their pixel counts."""
    return (Path(name), *np.unique(np.asarray(mask), return_counts=True))


def test_discovered_values_are_sorted_and_jpeg_noise_is_refused():
    found = discover_mask_values([scanned("a", [[255, 0]]), scanned("b", [[0]])])
    assert found.values == [0, 255]
    noisy = np.arange(200).reshape(10, 20)
    with pytest.raises(UnetkitError, match="noisy.jpg.*distinct values"):
        discover_mask_values([scanned("noisy.jpg", noisy)])
    with pytest.raises(UnetkitError, match="two classes"):
        discover_mask_values([scanned("a", np.zeros((2, 2)))])


def test_augmentation_moves_image_and_mask_together():
    # An image that equals its mask: after any warp the two must still agree (up to edge pixels).
    mask = torch.zeros(64, 64, dtype=torch.uint8)
    mask[16:40, 20:50] = 1
    image = mask[None].float()
    aug = AugmentConfig(brightness=0, contrast=0, gamma=0)
    for seed in range(5):
        torch.manual_seed(seed)
        patch, patch_mask = random_patch(image, mask, (48, 48), aug)
        agree = ((patch[0] > 0.5) == (patch_mask == 1)).float().mean()
        assert agree > 0.97


def test_blur_matches_scipy_and_keeps_the_mean():
    from scipy.ndimage import gaussian_filter

    torch.manual_seed(0)
    image = torch.rand(3, 40, 50, dtype=torch.float64)
    blurred = gaussian_blur(image, 1.2)
    reference = np.stack([gaussian_filter(c, 1.2, mode="mirror", truncate=2.5) for c in image.numpy()])
    assert np.abs(blurred.numpy() - reference).max() < 1e-6
    assert float(blurred.mean()) == pytest.approx(float(image.mean()), abs=0.01)


def test_strong_photometric_tints_each_channel_on_its_own():
    """Another street's light: each channel gets its own gain, and some samples are blurred."""
    flat = torch.full((3, 32, 32), 0.5)
    strong = AugmentConfig(**STRONG_PHOTOMETRIC)
    light = AugmentConfig()
    torch.manual_seed(0)
    tints = [jitter_intensity(flat, strong).mean((1, 2)) for _ in range(50)]
    assert max(float(t.max() - t.min()) for t in tints) > 0.05  # channels moved apart
    assert all(float(t.max() - t.min()) < 1e-6 for t in (jitter_intensity(flat, light).mean((1, 2)) for _ in range(50)))
    edge = torch.zeros(1, 32, 32)
    edge[:, :, 16:] = 1
    blurred = [jitter_intensity(edge, AugmentConfig(brightness=0, contrast=0, gamma=0, blur=1.5)) for _ in range(40)]
    soft = [b for b in blurred if float(b[0, 0, 15]) > 0.01]
    assert 5 < len(soft) < 35  # about half of the samples


def test_whole_image_training_takes_as_many_views_an_epoch_as_its_patches_would(tmp_path: Path):
    """One corrected image trained on whole images was an epoch of one step of batch 1, under a
    recipe line that printed batch_size=4, patches_per_image=96 (a red-team round): each image is
    now that many augmented views an epoch; validation still sees each image once."""
    images, masks = make_shapes(tmp_path, count=1)
    pairs = find_pairs(images, masks)
    train = SegmentationDataset(
        pairs, MaskValues([0, 255]), Preprocess(1), augment=AugmentConfig(), patches_per_image=96
    )
    assert len(train) == 96
    first, second = train[0][0], train[1][0]
    assert first.shape == second.shape and not torch.equal(first, second)  # views, augmented apart
    assert len(SegmentationDataset(pairs, MaskValues([0, 255]), Preprocess(1))) == 1


def test_dataset_caches_decoded_pairs(tmp_path: Path, monkeypatch):
    images, masks = make_shapes(tmp_path, count=2)
    pairs = find_pairs(images, masks)
    dataset = SegmentationDataset(pairs, MaskValues([0, 255]), Preprocess(1), patch_size=32, patches_per_image=3)
    assert dataset.cache and len(dataset) == 6
    dataset.check_all()
    calls = []
    monkeypatch.setattr("unetkit.data.pairing.read_pair", lambda *p: calls.append(p))
    image, mask = dataset[4]
    assert image.shape == (1, 32, 32) and mask.shape == (32, 32) and not calls


def _masks_of(folder, masks):
    """A gray image beside each mask (PNG), as a user's folder."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for index, mask in enumerate(masks):
        Image.fromarray(np.full(mask.shape, 100, np.uint8)).save(folder / "images" / f"m{index}.png")
        Image.fromarray(mask).save(folder / "masks" / f"m{index}.png")
    return folder / "images", folder / "masks"


def test_masks_smoothed_by_a_resize_and_mixed_binary_conventions_are_refused_by_train_and_check(tmp_path):
    """Anti-aliased 0/128/255 masks trained as 15 classes and 0/1 beside 0/255 masks as three, each
    unsaid, and `check` said ok (a red-team round); class ids 0..K-1 with rare classes pass."""
    from unetkit.check import check_dataset
    from unetkit.data.fingerprint import fingerprint_pairs

    yy, xx = np.mgrid[:64, :64]
    classes = np.where(xx < 24, 0, np.where(yy < 32, 128, 255)).astype(np.uint8)
    smoothed = np.asarray(Image.fromarray(classes[::3, ::3]).resize((64, 64), Image.BILINEAR))
    binary = (xx > 20).astype(np.uint8)
    cases = {
        "smoothed": ([smoothed] * 4, "edges smoothed by resizing"),
        "mixed": ([binary, binary * 255, binary, binary * 255], "mask values are 0/255 but m0.png's are 0/1"),
    }
    for name, (masks, needle) in cases.items():
        images, folder = _masks_of(tmp_path / name, masks)
        with pytest.raises(UnetkitError, match=needle):
            fingerprint_pairs(find_pairs(images, folder))
        report = check_dataset(images, folder)
        assert not report["ok"] and any(needle in p["problem"] for p in report["problems"]), report["problems"]
    ids = (xx // 10).astype(np.uint8)  # ids 0..6, and 7..11 rare (CamVid's signs and poles): classes, not edges
    for rare in range(7, 12):
        ids[rare * 4 : rare * 4 + 2, :2] = rare
    images, folder = _masks_of(tmp_path / "ids", [ids] * 3)
    assert fingerprint_pairs(find_pairs(images, folder)).mask_values.num_classes == 12
    assert check_dataset(images, folder)["ok"]
    # The same ids quantised to 0, 20, ..., 220 (as 8-bit masks of a few classes are often saved) are
    # classes too: they were called smoothed edges (a red-team round)
    images, folder = _masks_of(tmp_path / "spaced", [ids * 20] * 3)
    assert fingerprint_pairs(find_pairs(images, folder)).mask_values.values == list(range(0, 240, 20))
    assert check_dataset(images, folder)["ok"]


def test_check_counts_the_ignore_value_apart_and_names_a_mask_of_nothing_else(tmp_path: Path, capsys):
    """check took no --ignore-value: CamVid's void (11) was counted as a class, and a frame all void
    passed unsaid (a red-team round)."""
    from synthetic import run_cli

    from unetkit.check import check_dataset, format_check

    streets = []
    for index in range(40):
        ids = np.random.default_rng(index).integers(0, 11, (24, 32)).astype(np.uint8)
        ids[:4] = 11  # the void band at the top
        streets.append(ids)
    streets.append(np.full((24, 32), 11, np.uint8))  # m40: all void
    images, masks = _masks_of(tmp_path / "streets", streets)
    report = check_dataset(images, masks, ignore_value=11)
    assert [row["value"] for row in report["mask_values"]] == list(range(11))
    assert report["ignored"]["pixels"] == 40 * 4 * 32 + 24 * 32 and report["ignored"]["all_ignored"] == ["m40.png"]
    (warning,) = [w for w in report["warnings"] if "ignore value" in w["problem"]]
    assert warning["file"].endswith("m40.png") and report["ok"]
    assert "ignored (value 11): 18.70% of the pixels, not a class" in format_check(report)
    assert 11 in [row["value"] for row in check_dataset(images, masks)["mask_values"]]  # without it: a class
    code, text, _ = run_cli(capsys, "check", "--images", images, "--masks", masks, "--ignore-value", "11")
    assert code == 0 and "ignored (value 11)" in text


def test_check_says_what_train_would_refuse_or_note_for_a_handful_of_images(tmp_path: Path):
    """A red-team round: `check` called one pair ok where train refuses it (nothing to validate
    on), and said nothing of instance masks trained as dozens of classes, which train notes."""
    from synthetic import nuclei_with_ids

    from unetkit.check import check_dataset

    images, masks = nuclei_with_ids(tmp_path / "few", count=3)  # 21 ids, numbered on across 3 images
    report = check_dataset(images, masks, instance_masks=None)
    assert report["ok"]
    assert any("so this trains 22 classes from 3 images" in w["problem"] for w in report["warnings"])
    assert any("--instance-masks" in w["fix"] for w in report["warnings"])
    one, _ = make_shapes(tmp_path / "one", count=1)
    report = check_dataset(one, tmp_path / "one" / "masks")  # fine data, for --val-fraction 0: a warning
    (warning,) = [w["problem"] for w in report["warnings"] if "validation split" in w["problem"]]
    assert report["ok"] and "train's default validation split refuses it" in warning and "--val-fraction 0" in warning
    from unetkit.check import format_check

    assert format_check(report).endswith(
        "ok: training would work with --val-fraction 0 or --val-images (the warning above)"
    )


def test_check_shows_three_of_a_kind_and_counts_the_rest():
    """A folder of 20 channels-first TIFFs printed 20 lines of one problem (a red-team round):
    problems alike but for file names and numbers are shown three times, then counted."""
    from unetkit.check import format_check

    alike = [
        {"file": f"m/{i}.tif", "problem": f"m/{i}.tif: the mask has 1 plane(s) but its image i{i}.tif has {i + 2}"}
        for i in range(7)
    ]
    other = {"file": "m/x.png", "problem": "m/x.png: mask is 3x4 but its image x.png is 4x3", "fix": "resize"}
    sizes = [{key: text.replace("x.png", f"x{i}.png") for key, text in other.items()} for i in range(5)]
    report = {"pairs": 12, "problems": [alike[0], *sizes, *alike[1:]], "warnings": [], "ok": False}
    lines = format_check(report).splitlines()[1:]
    assert sum("plane(s) but its image" in line for line in lines) == 3
    # each kind together, its count after it (two bare counts at the end could not be told apart)
    assert lines[3] == "problem: ... and 4 more like the ones above (all of them: --json)"
    assert lines[4] == "problem: m/x0.png: mask is 3x4 but its image x0.png is 4x3; fix: resize"
    assert lines[7] == "problem: ... and 2 more like the ones above (all of them: --json)"
    assert lines[-1] == "NOT ok: 12 problem(s) to fix before training"
