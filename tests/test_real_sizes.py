"""Data sets of realistic counts (hundreds of images, mixed sizes, a dozen classes), small enough
to stay fast: every statistic is taken over all images, never the first N (issue 10)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import TINY_TRAIN, make_shapes, run_cli

from unetkit.data import Preprocess, SegmentationDataset, find_pairs, read_image
from unetkit.data.dataset import pad_collate
from unetkit.data.fingerprint import fingerprint_pairs
from unetkit.data.mask_values import IGNORE_ID, MaskValues
from unetkit.train import TrainConfig, Trainer, plan_run

BATCH_16 = ("--batch-size", "16")


@pytest.fixture(scope="module")
def mixed_sizes(tmp_path_factory) -> tuple[Path, Path]:
    """320 pairs in three sizes, one folder."""
    root = tmp_path_factory.mktemp("mixed")
    make_shapes(root, count=160, size=(32, 40), seed=1, prefix="a")
    make_shapes(root, count=100, size=(48, 32), seed=2, prefix="b")
    make_shapes(root, count=60, size=(40, 40), seed=3, prefix="c")
    return root / "images", root / "masks"


def test_320_images_of_mixed_sizes_check_train_evaluate_predict(mixed_sizes, tmp_path, capsys):
    images, masks = mixed_sizes
    code, out, _ = run_cli(capsys, "check", "--images", images, "--masks", masks)
    assert code == 0 and "pairs: 320" in out and "40x32 x160" in out
    run = tmp_path / "run"
    code, out, err = run_cli(
        capsys, "train", "--images", images, "--masks", masks, "--out", run, *TINY_TRAIN, *BATCH_16
    )
    assert code == 0, err
    resolved = json.loads((run / "config.json").read_text())["resolved"]
    assert (len(resolved["train_images"]), len(resolved["val_images"])) == (288, 32)  # a 10% split of 320
    report = tmp_path / "eval.json"
    args = ("--checkpoint", run / "best.pt", "--backend", "torch", "--no-progress")
    code, _, err = run_cli(capsys, "evaluate", *args, "--images", images, "--masks", masks, "--json", report)
    assert code == 0, err
    assert json.loads(report.read_text())["num_images"] == 320
    code, _, err = run_cli(capsys, "predict", *args, images, "--out", tmp_path / "pred")
    assert code == 0, err
    written = sorted((tmp_path / "pred").glob("*.png"))
    assert len(written) == 320
    for path in (written[0], written[200], written[-1]):  # a, b and c sizes come back as they went in
        with Image.open(path) as mask, Image.open(images / path.name) as image:
            assert mask.size == image.size


def test_150_images_of_12_ids_with_a_void_id(tmp_path, capsys):
    images, masks = make_shapes(tmp_path, count=150, size=(48, 48), values=tuple(range(12)), seed=4)
    run = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "train", "--images", images, "--masks", masks, "--out", run, "--ignore-value", "11", *TINY_TRAIN
    )
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert config["resolved"]["mask_values"] == list(range(11))  # void is not a class
    assert len(config["class_weights"]) == 11 and len(config["resolved"]["val_images"]) == 15
    report = tmp_path / "eval.json"
    code, _, err = run_cli(
        capsys, "evaluate", "--checkpoint", run / "best.pt", "--images", images, "--masks", masks, "--json", report
    )
    assert code == 0, err
    per_class = json.loads(report.read_text())["per_class"]
    assert [row["mask_value"] for row in per_class] == list(range(11))


def test_fingerprint_covers_every_image_and_mask(tmp_path):
    """Image 70 of 80 is RGB and mask 75 holds a third value: both are seen; the channel moments
    match numpy over all 80 images (gray ones repeated to RGB, as the model sees them)."""
    images, masks = make_shapes(tmp_path, count=80, size=(24, 32), seed=5)
    rgb = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(images / "img70.png")
    with Image.open(masks / "img75.png") as mask:
        extra = np.array(mask)
    extra[:2, :2] = 128
    Image.fromarray(extra).save(masks / "img75.png")
    pairs = find_pairs(images, masks)
    data = fingerprint_pairs(pairs)
    assert data.channels == 3 and data.num_images == 80
    assert data.mask_values.values == [0, 128, 255]
    everything = np.concatenate([np.broadcast_to(read_image(p.image), (24, 32, 3)).reshape(-1, 3) for p in pairs])
    everything = everything.astype(np.float64)
    np.testing.assert_allclose(data.mean, everything.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(data.std, everything.std(axis=0), rtol=1e-4)
    assert data.value_pixels[128] == 4


def test_a_set_beyond_the_memory_cap_trains_with_lazy_decoding(tmp_path):
    images, masks = make_shapes(tmp_path, count=40, size=(32, 32), seed=6)
    settings = dict(base_channels=4, depth=2, patch_size=16, patches_per_image=1, epochs=1, amp="off")
    cfg = TrainConfig(images=str(images), masks=str(masks), out=str(tmp_path / "run"), progress=False, **settings)
    trainer = Trainer(plan_run(TrainConfig(**{**cfg.to_dict(), "cache_gb": 0.0}), log=lambda _: None))
    assert not trainer.train_set.cache and not trainer.val_set.cache
    result = trainer.fit()
    assert len(result.history) == 1 and not trainer.train_set._decoded  # decoded every time, kept never
    cached = Trainer(plan_run(TrainConfig(**{**cfg.to_dict(), "out": str(tmp_path / "cached")}), log=lambda _: None))
    assert cached.train_set.cache and len(cached.train_set._decoded) == 36


def test_whole_image_training_pads_mixed_sizes_at_batch_above_one(tmp_path, capsys):
    root = tmp_path / "data"
    make_shapes(root, count=12, size=(32, 40), seed=7, prefix="a")
    make_shapes(root, count=12, size=(48, 32), seed=8, prefix="b")
    run = tmp_path / "run"
    args = ("--images", root / "images", "--masks", root / "masks", "--out", run, *TINY_TRAIN)
    code, _, err = run_cli(capsys, "train", *args, "--patch-size", "none", "--batch-size", "4")
    assert code == 0, err
    images, masks = pad_collate(
        [(torch.ones(1, 32, 40), torch.zeros(32, 40)), (torch.ones(1, 48, 32), torch.ones(48, 32))]
    )
    assert images.shape == (2, 1, 48, 40) and masks.shape == (2, 48, 40)
    assert (masks[0, 32:] == IGNORE_ID).all() and (masks[1, :, 32:] == IGNORE_ID).all()  # padding is ignored
    assert (images[0, :, 32:] == 0).all() and masks[1, :48, :32].eq(1).all()


def test_class_balanced_patches_find_a_small_object(tmp_path):
    """One 6x6 object in a 128x128 image: a random 32 px patch holds it ~1 time in 12; with
    class-balanced sampling at least a third of the patches do (here all: class_fraction 1)."""
    image = np.zeros((128, 128), dtype=np.uint8)
    mask = np.zeros((128, 128), dtype=np.uint8)
    image[100:106, 10:16] = mask[100:106, 10:16] = 255
    (tmp_path / "i").mkdir()
    (tmp_path / "m").mkdir()
    Image.fromarray(image).save(tmp_path / "i" / "x.png")
    Image.fromarray(mask).save(tmp_path / "m" / "x.png")
    pairs = find_pairs(tmp_path / "i", tmp_path / "m")
    values, preprocess = MaskValues([0, 255]), Preprocess(1)

    def hits(sampled: list[int], fraction: float) -> int:
        data = SegmentationDataset(
            pairs, values, preprocess, 32, None, 60, sampled_classes=sampled, class_fraction=fraction
        )
        torch.manual_seed(0)
        return sum(int(data[i][1].any()) for i in range(len(data)))

    assert hits([1], 1.0) == 60
    assert hits([], 0.0) < 20
    assert 20 <= hits([1], 1 / 3) < 60


def test_channel_moments_match_float64_numpy_across_row_blocks():
    from unetkit.data.fingerprint import channel_moments

    image = np.random.default_rng(0).random((301, 77, 3), dtype=np.float32)  # 3 blocks of 128 rows, the last short
    sums, squares = channel_moments(image)
    exact = image.astype(np.float64)
    np.testing.assert_allclose(sums, exact.sum(axis=(0, 1)), rtol=1e-12)
    np.testing.assert_allclose(squares, (exact**2).sum(axis=(0, 1)), rtol=1e-12)
