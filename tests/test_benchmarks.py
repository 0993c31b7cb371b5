"""Keeps benchmarks/ from rotting: the whole run, every section, on a tiny U-Net at tiny sizes."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from benchmarks import run as bench
from benchmarks.common import TINY, Settings, model_gflop


def tiny_settings() -> Settings:
    return Settings(
        models=[TINY],
        sizes=[32],
        train_batch={},
        infer_batches=[1, 2],
        iters=1,
        warmup=1,
        max_case_seconds=1.0,
        gemm_size=256,
        memory_image=96,
        memory_tile=64,
        memory_models=["tiny"],
        memory_train_steps=1,
    )


def test_tiny_run_covers_every_section():
    results = bench.run(tiny_settings(), log=lambda _: None)
    rows = results["results"]
    train = {r["variant"] for r in rows if r["section"] == "train"}
    infer = {r["variant"] for r in rows if r["section"] == "infer"}
    assert train == {"unetkit", "bare", "naive"}
    assert {"naive", "unetkit"} <= infer
    for row in rows:
        if row["section"] in ("train", "infer"):
            assert row["images_per_s"] > 0 and 0 < row["ceiling_fraction"]
            assert row["gflop_per_image"] > 0
    memory = {r["job"]: r for r in rows if r["section"] == "memory"}
    assert set(memory) == {"baseline", "train", "tiled"}
    assert all("error" not in r and r["peak_rss_mib"] > 50 for r in memory.values()), memory
    # VmHWM of the child, not ru_maxrss (which inherits the parent's peak across fork + exec)
    assert memory["baseline"]["peak_rss_mib"] < 1500
    assert memory["tiled"]["output_shape"] == [1, 1, 96, 96]
    assert "cpu" in results["machine"] and results["gemm_ceiling_gflops"]["fp32"] > 0
    json.dumps(results)  # JSON-ready
    assert "naive" in bench.format_table(rows)


def test_flops_grow_with_pixels_and_training_costs_more():
    forward = model_gflop(TINY, 32, training=False)
    assert model_gflop(TINY, 64, training=False) > 3.9 * forward
    assert model_gflop(TINY, 32, training=True) > 2 * forward


def test_demo_variant_options_parse_as_python_values():
    from benchmarks.demo_variants import parse_options

    assert parse_options(["time=90.0", "min_epochs=None", "amp=bf16", "class_weights=[2.0, 1.0]"]) == {
        "time": 90.0,
        "min_epochs": None,
        "amp": "bf16",
        "class_weights": [2.0, 1.0],
    }


def test_accuracy_benchmark_splits_by_links_and_formats_its_table(tmp_path):
    """The real data sets live outside the project; the splitting and the table are checked on a
    made-up one (the 5-minute runs themselves are `python -m benchmarks.accuracy`)."""
    import json

    import pytest
    from synthetic import make_shapes

    from benchmarks import accuracy

    root = tmp_path / "toy"
    make_shapes(root, count=6)
    (root / "split.json").write_text(json.dumps({"train": ["img00", "img01", "img02", "img03"], "val": ["img04"]}))
    folders = accuracy.split_folders(root, tmp_path / "work")
    train_images, train_masks = folders["train"]
    assert sorted(p.name for p in train_images.iterdir()) == ["img00.png", "img01.png", "img02.png", "img03.png"]
    assert all(p.is_symlink() for p in train_masks.iterdir())  # links, never copies
    assert [p.name for p in folders["val"][0].iterdir()] == ["img04.png"]
    assert accuracy.isbi_split(["00", "24", "25", "29"]) == {"train": ["00", "24"], "test": ["25", "29"]}
    row = {
        "name": "toy",
        "evaluated_on": "val",
        "images": 1,
        "per_class": [{"value": 0, "dice": 0.9, "iou": 0.8}, {"value": 255, "dice": None, "iou": None}],
        "mean_dice": 0.9,
        "mean_iou": 0.8,
        "objects": {"adapted_rand_error": 0.05, "ap": 0.4, "f1": 0.7, "ap50": 0.6, "ap50_90": 0.45},
        "epochs": 3,
        "seconds_to_first_epoch": 4.2,
        "train_seconds": 30.0,
        "peak_rss_mib": 500,
    }
    table = accuracy.format_table([row, {"name": "broken", "error": "train exited 2"}])
    toy = "| toy | val (1) | 0: 0.900 / 0.800, 255: n/a / n/a | 0.900 | 0.800 | 0.050 / 0.600 / 0.450 | 3 | 4.2 s |"
    assert toy in table
    assert "| broken | train exited 2 |" in table
    with pytest.raises(SystemExit) as stop:
        accuracy.main(["--data", str(tmp_path / "nowhere"), "--only", "hc18-dev"])
    assert stop.value.code == 2


def test_channels_benchmark_builds_two_channel_files_from_both_sets(tmp_path, monkeypatch):
    """benchmarks/channels.py: EM slice in channel 0, nuclei in channel 1 (or zeros), 16-bit."""
    import numpy as np
    import tifffile
    from PIL import Image

    from benchmarks import channels
    from unetkit.data import read_image

    for folder in ("isbi2012/images", "dsb2018-dev/images", "dsb2018-dev/masks"):
        (tmp_path / folder).mkdir(parents=True)
    Image.fromarray(np.full((16, 16), 200, np.uint8)).save(tmp_path / "isbi2012/images/00.png")
    Image.fromarray(np.full((20, 24), 100, np.uint8)).save(tmp_path / "dsb2018-dev/images/n1.png")
    tifffile.imwrite(tmp_path / "dsb2018-dev/masks/n1.tif", np.ones((20, 24), np.uint16))
    monkeypatch.setattr(channels, "DATA", tmp_path)
    images, masks = channels.two_channel_set(tmp_path / "out", ["n1"])
    image = read_image(images / "n1.tif")
    assert image.shape == (20, 24, 2)
    assert np.allclose(image[..., 0], 200 / 255) and np.allclose(image[..., 1], 100 / 255)
    assert (masks / "n1.tif").resolve() == (tmp_path / "dsb2018-dev/masks/n1.tif").resolve()
    zeroed, _ = channels.two_channel_set(tmp_path / "zeroed", ["n1"], zero_nuclei=True)
    assert not read_image(zeroed / "n1.tif")[..., 1].any()


def test_derived_and_subset_splits_for_the_normalisation_and_fine_tune_benchmarks(tmp_path):
    """dsb2018-dev-spread's images are dimmed copies written to the run's folder (never the
    shared ones), its masks links; a fine-tune run trains on links to the first N pairs."""
    import json

    import numpy as np
    import tifffile
    from PIL import Image
    from synthetic import make_shapes

    from benchmarks import accuracy, finetune

    root = tmp_path / "toy"
    make_shapes(root, count=6)
    (root / "split.json").write_text(json.dumps({"train": [f"img0{i}" for i in range(5)], "val": ["img05"]}))
    folders = accuracy.split_folders(root, tmp_path / "work", derived=True)
    images, masks = folders["train"]
    gains = []
    for path in sorted(images.iterdir()):
        assert not path.is_symlink() and tifffile.imread(path).dtype == np.uint16
        dimmed = tifffile.imread(path).astype(float)
        original = np.asarray(Image.open(root / "images" / f"{path.stem}.png"), float) * 257
        gains.append(dimmed.max() / original.max())
    assert all(0.0099 <= gain <= 1.0 for gain in gains) and max(gains) / min(gains) > 2
    assert all(p.is_symlink() for p in masks.iterdir())
    first_images, first_masks = accuracy.first_pairs(folders["train"], 2)
    assert [p.name for p in sorted(first_images.iterdir())] == ["img00.tif", "img01.tif"]
    assert [p.name for p in sorted(first_masks.iterdir())] == ["img00.png", "img01.png"]
    row = {"images": 40, "train_images": 8, "seconds": 60.0, "start": "init", "epochs": 4,
           "options": ["--init-from", "nuclei", "--lr", "1e-3"], "objects": {"ap50": 0.8, "ap50_90": 0.6},
           "per_class": [{"value": 1, "dice": 0.7}]}  # fmt: skip
    assert "| 8 | 60 s | init --lr 1e-3 | 4 | 0.800 | 0.600 | 0.700 |" in finetune.table([row])


def test_scene_probes_score_iou_per_class_with_void_left_out(tmp_path):
    import numpy as np
    from PIL import Image

    from benchmarks.scene_probes import scores

    (tmp_path / "masks").mkdir()
    truth = {"a": np.array([[0, 0, 1, 11]], np.uint8), "b": np.array([[2, 2, 1, 1]], np.uint8)}
    for name, mask in truth.items():
        Image.fromarray(mask).save(tmp_path / "masks" / f"{name}.png")
    (tmp_path / "split.json").write_text(json.dumps({"train": [], "val": ["a", "b"]}))
    guess = {"a": np.array([[0, 1, 1, 5]]), "b": np.array([[2, 2, 1, 0]])}  # the void pixel's guess counts for nothing
    iou = scores(lambda name: guess[name], tmp_path)
    assert iou[0] == 1 / 3 and iou[1] == 2 / 4 and iou[2] == 1.0  # class 0: 1 hit of 3 pixels in either
    assert np.isnan(iou[3])  # absent from both: no score


def test_peers_times_milesials_step_against_unetkits_on_one_batch(tmp_path, monkeypatch):
    from benchmarks import peers

    monkeypatch.setattr(peers, "RESULTS", tmp_path)
    results = peers.main(["--size", "64", "--batch", "1", "--reps", "1"])
    seconds = results["median_seconds"]
    assert set(seconds["train"]) == {"unetkit", "milesial --amp"} and set(seconds["predict (batch 1)"]) == {
        "unetkit",
        "milesial",
    }
    assert all(value > 0 for table in seconds.values() for value in table.values())
    assert len(list(tmp_path.glob("peers-*.json"))) == 1
    assert results["device"] == "cpu" and results["machine"]["gpu"] is None  # both tools on the one device
    model = peers.MilesialUNet(3, 2)  # its README's network: 31M parameters
    assert round(sum(p.numel() for p in model.parameters()) / 1e6) == 31
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 2, 64, 64)


def test_the_profile_sorts_every_operator_into_a_kind(tmp_path, monkeypatch):
    from benchmarks import profile_step

    monkeypatch.setattr(profile_step, "RESULTS", tmp_path)
    assert profile_step.kind_of("aten::mkldnn_convolution") == "convolution"
    assert profile_step.kind_of("aten::cat") == "concatenation and copies"
    results = profile_step.main(["--size", "64", "--batch", "2", "--repeats", "1", "--band", "128", "256"])
    for table in (results["training_step"], results["slide_band"]):
        assert sum(table.values()) == pytest.approx(1, abs=0.01) and table["convolution"] > 0.2
    assert 0 < results["loading_share_of_step"] < 1


def test_the_convolution_ceiling_times_every_convolution_of_the_models_forward():
    from pathlib import Path

    from torch import nn

    import unetkit
    from benchmarks import conv_ceiling
    from unetkit.inference import Predictor

    checkpoint = str(Path(unetkit.__file__).parent / "zoo" / "em-membranes.safetensors")
    results = conv_ceiling.conv_ceiling(checkpoint, side=600, tile=128)  # the slide's tiles: 64 px overlap
    convolutions = sum(isinstance(m, nn.Conv2d) for m in Predictor(checkpoint).model.modules())
    assert results["convolutions_per_forward"] == convolutions > 10
    assert (results["tile"], results["tiles_per_batch"], results["tiles"]) == (128, 4, 81)  # 9 x 9 tiles
    assert results["ceiling_seconds"] == pytest.approx(results["seconds_per_batch_of_tiles"] * 21, abs=0.1)
    assert results["ceiling_mpx_per_second"] > 0
    paired = conv_ceiling.conv_ceiling(checkpoint, side=600, tile=128, batch_size=2)  # predict's --batch-size
    assert (paired["tiles_per_batch"], paired["tiles"]) == (2, 81)
    assert paired["ceiling_seconds"] == pytest.approx(paired["seconds_per_batch_of_tiles"] * 41, abs=0.1)


def nuclei_set(root: Path, count: int, side: int = 64) -> Path:
    """`count` gray images of bright discs with instance masks (uint16 TIFF), and a split.json."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:side, :side]
    for kind in ("images", "masks"):
        (root / kind).mkdir(parents=True)
    for index in range(count):
        mask = np.zeros((side, side), np.uint16)
        for number in range(1, 4):
            y, x = rng.integers(8, side - 8, 2)
            mask[((yy - y) ** 2 + (xx - x) ** 2 < 25) & (mask == 0)] = number
        image = np.where(mask > 0, 200, 30) + rng.integers(0, 20, mask.shape)
        Image.fromarray(image.astype(np.uint8)).save(root / "images" / f"n{index:03d}.png")
        tifffile.imwrite(root / "masks" / f"n{index:03d}.tif", mask)
    names = [f"n{index:03d}" for index in range(count)]
    (root / "split.json").write_text(json.dumps({"train": names[4:], "val": names[:4]}))
    return root


@pytest.mark.slow  # 9 s of two tools' training: the default suite keeps to ~3 minutes (`pytest -m slow` runs it)
def test_time_to_quality_trains_both_tools_to_a_budget_and_scores_them_alike(tmp_path, monkeypatch):
    from benchmarks import time_to_quality

    data = nuclei_set(tmp_path / "nuclei", 24)
    results = time_to_quality.main(["--minutes", "0.03", "--data", str(data), "--json", str(tmp_path / "t.json")])
    rows = {row["tool"]: row for row in results["rows"]}
    assert set(rows) == {"unetkit", "milesial"} and json.loads((tmp_path / "t.json").read_text())["rows"]
    for row in rows.values():
        assert row["epochs"] >= 1 and 0 <= row["foreground_dice"] <= 1 and row["ap50"] is not None
    assert rows["milesial"]["train_seconds"] < 10  # it stops at the budget, mid-epoch if need be
    assert "| 0.03 | milesial |" in results["table"]


def test_time_to_quality_scores_objects_as_stardist_and_pixels_as_pooled_dice(tmp_path):
    from benchmarks.time_to_quality import scores

    true = np.zeros((20, 20), np.uint16)
    true[2:6, 2:6], true[10:14, 10:14] = 1, 2
    tifffile.imwrite(tmp_path / "a.tif", true)
    predicted = np.zeros_like(true, dtype=np.int64)
    predicted[2:6, 2:6] = 7  # one nucleus found exactly, the other missed
    result = scores([(tmp_path / "a.png", tmp_path / "a.tif")], [predicted])
    assert result["foreground_dice"] == pytest.approx(2 * 16 / (32 + 16))
    assert result["ap50"] == pytest.approx(1 / 2)  # TP / (TP + FP + FN) = 1 / (1 + 0 + 1)


def test_time_to_quality_asks_for_stardists_own_python_in_one_line(tmp_path, capsys):
    from benchmarks import time_to_quality

    data = nuclei_set(tmp_path / "nuclei", 6)
    with pytest.raises(SystemExit) as stop:
        time_to_quality.main(["--tools", "stardist", "--data", str(data)])
    assert stop.value.code == 2 and "--stardist-python PATH" in capsys.readouterr().err
