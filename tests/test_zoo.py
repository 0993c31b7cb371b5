"""The ready-made models shipped in unetkit/zoo (issue 24): listed with their cards, used by name
with no training and no network by predict, evaluate, export and train --init-from."""

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from synthetic import assert_one_line_error, run_cli

from unetkit.models.checkpoint import load_checkpoint, save_checkpoint
from unetkit.zoo import zoo_model, zoo_models

SHIPPED = ("nuclei", "em-membranes")
DEMO = Path(__file__).resolve().parents[1] / "unetkit" / "demo_data" / "isbi2012"


def fluorescent_nuclei(folder: Path, count: int = 3, size: int = 256, nuclei: int = 25) -> list[int]:
    """Dark 8-bit images with bright, slightly uneven round nuclei 12-20 px across, apart from
    each other; returns how many each image holds."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[:size, :size]
    for index in range(count):
        image = rng.normal(12, 3, (size, size))
        centres = [(28 + 50 * (k // 5) + rng.integers(-5, 6), 28 + 50 * (k % 5) + rng.integers(-5, 6))
                   for k in range(nuclei)]  # fmt: skip
        for cy, cx in centres:
            radius = rng.uniform(6, 10)
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
            image[inside] = rng.uniform(90, 200) + rng.normal(0, 8, inside.sum())
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"n{index}.png")
    return [nuclei] * count


def test_every_shipped_model_has_its_weights_and_a_full_card():
    models = zoo_models()
    assert set(SHIPPED) <= set(models)
    total = 0
    for name in SHIPPED:
        model, card = models[name], models[name].card.read_text()
        total += model.weights.stat().st_size
        assert model.summary and model.held_out, name
        for field in ("**Data**", "**Licence of the data**", "**Recipe**", "**Training**", "**Intended use**",
                      "**Limits**"):  # fmt: skip
            assert field in card, (name, field)
    assert total < 15 * 2**20  # the wheel stays small


def test_models_lists_them(capsys):
    code, text, err = run_cli(capsys, "models")
    assert code == 0, err
    for name in SHIPPED:
        assert f"{name}: " in text
    assert text.count("held out: ") >= len(SHIPPED)


def test_predict_with_the_nuclei_model_finds_nuclei_with_no_training(tmp_path, capsys):
    expected = fluorescent_nuclei(tmp_path / "images")
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "predict", "--model", "nuclei", tmp_path / "images", "--out", out, "--geojson",
                           "--no-progress")  # fmt: skip
    assert code == 0, err
    for index, count in enumerate(expected):
        rows = list(csv.DictReader((out / f"n{index}_objects.csv").open()))
        assert 0.8 * count <= len(rows) <= 1.2 * count, (index, len(rows))
        assert len(json.loads((out / f"n{index}_objects.geojson").read_text())["features"]) == len(rows)


def test_predict_says_what_an_instance_models_mask_holds(tmp_path, capsys, monkeypatch):
    """The nuclei model's <stem>.png holds its classes 0-3, near black: said, with where its objects
    are, unless --instances asks for them. Nuclei images are not said to hold no signal."""
    from unetkit.runtime import notes

    fluorescent_nuclei(tmp_path / "images", count=2)
    monkeypatch.setattr(notes, "_SAID", set())  # said once a process: whatever ran before in it
    code, text, err = run_cli(capsys, "predict", "--model", "nuclei", tmp_path / "images", "--out", tmp_path / "out",
                              "--no-progress")  # fmt: skip
    assert code == 0, err
    assert "masks hold its classes (0: background, 1: object, 2: boundary, 3: centre); --instances writes" in text
    assert "no signal" not in text
    monkeypatch.setattr(notes, "_SAID", set())
    code, text, err = run_cli(capsys, "predict", "--model", "nuclei", tmp_path / "images", "--out",
                              tmp_path / "objects", "--instances", "--no-progress")  # fmt: skip
    assert code == 0 and "masks hold its classes" not in text, err


def test_an_empty_field_is_said_to_hold_no_signal_in_memory_and_out_of_core(tmp_path, capsys, monkeypatch):
    """Camera noise scaled by its own percentiles fills the whole range: the nuclei model found 450
    nuclei in it (a red-team round). Both paths name the file; the out-of-core one measures the
    noise on each band's first row, whole."""
    from unetkit.runtime import notes

    (tmp_path / "images").mkdir()
    noise = np.random.default_rng(0).poisson(300, (300, 260)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "images" / "empty.tif", noise)
    for mode in ("off", "on"):
        monkeypatch.setattr(notes, "_SAID", set())
        code, text, err = run_cli(capsys, "predict", "--model", "nuclei", tmp_path / "images", "--out",
                                  tmp_path / mode, "--out-of-core", mode, "--no-progress")  # fmt: skip
        assert code == 0, err
        assert "empty.tif: no signal above its noise: its brightness range is 5." in text, (mode, text)


def test_a_nucleus_probability_in_the_table_is_its_foregrounds_in_memory_and_out_of_core(tmp_path, capsys):
    """The table's mean_probability of an instance model's object is 1 - P(background) over its
    pixels (it was the object class's alone: 0.39 for the median dsb2018 nucleus), by both paths."""
    fluorescent_nuclei(tmp_path / "images", count=1)
    image = np.asarray(Image.open(tmp_path / "images" / "n0.png"))
    tifffile.imwrite(tmp_path / "images" / "n0.tif", image)  # a TIFF, which --out-of-core on takes
    (tmp_path / "images" / "n0.png").unlink()
    for mode in ("off", "on"):
        out = tmp_path / mode
        code, _, err = run_cli(capsys, "predict", "--model", "nuclei", tmp_path / "images", "--out", out, "--instances",
                               "--probabilities", "--out-of-core", mode, "--no-progress")  # fmt: skip
        assert code == 0, err
        labels, probabilities = tifffile.imread(out / "n0_objects.tif"), tifffile.imread(out / "n0_probs.tif")
        rows = list(csv.DictReader((out / "n0_objects.csv").open()))
        assert len(rows) > 10, mode
        for row in rows:
            foreground = 1 - probabilities[0][labels == int(row["id"])]
            assert float(row["mean_probability"]) == pytest.approx(foreground.mean(), abs=2e-4), (mode, row["id"])


def test_evaluate_and_export_take_a_model_by_name(tmp_path, capsys):
    images, masks = tmp_path / "images", tmp_path / "masks"
    for kind, folder in (("images", images), ("masks", masks)):
        folder.mkdir()
        for index in range(25, 30):  # the slices em-membranes never saw
            shutil.copy(DEMO / kind / f"{index}.png", folder)
    report = tmp_path / "eval.json"
    code, _, err = run_cli(capsys, "evaluate", "--model", "em-membranes", "--images", images, "--masks", masks,
                           "--json", report, "--no-progress")  # fmt: skip
    assert code == 0, err
    cells = json.loads(report.read_text())["per_class"][1]
    assert cells["mask_value"] == 255 and cells["dice"] > 0.93
    pytest.importorskip("onnxruntime")
    code, text, err = run_cli(capsys, "export", "--model", "nuclei", "--onnx", tmp_path / "nuclei.onnx")
    assert code == 0 and (tmp_path / "nuclei.onnx").is_file(), err


def test_training_starts_from_a_model_by_name(tmp_path, capsys):
    fluorescent_nuclei(tmp_path / "images", count=4, size=64, nuclei=1)
    (tmp_path / "masks").mkdir()
    for path in (tmp_path / "images").iterdir():
        mask = (np.asarray(Image.open(path)) > 60).astype(np.uint8)  # one nucleus: id 1
        Image.fromarray(mask).save(tmp_path / "masks" / path.name)
    args = [
        "--epochs",
        "1",
        "--no-progress",
        "--no-report",
        "--amp",
        "off",
        "--instance-masks",
        "--val-fraction",
        "0.25",
    ]
    code, text, err = run_cli(capsys, "train", "--images", tmp_path / "images", "--masks", tmp_path / "masks",
                              "--out", tmp_path / "run", "--init-from", "nuclei", *args)  # fmt: skip
    assert code == 0, err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["init_from"] == "nuclei" and "init-from:" not in text  # the same classes: nothing adapted
    assert config["lr"] == 1e-3  # the fast recipe's fine-tuning rate (recipes.FINE_TUNE_LR)


def test_an_unknown_model_name_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "predict", "--model", "nucleii", tmp_path, "--out", tmp_path / "o")
    assert_one_line_error(code, err, "nucleii", "unetkit models", "nuclei")
    # --init-from takes a file or a name: a near name was "checkpoint not found" (a red-team round)
    code, _, err = run_cli(capsys, "train", "--images", tmp_path, "--masks", tmp_path, "--init-from", "nucleus")
    assert_one_line_error(code, err, "nucleus: no such file, nor a ready-made model", "did you mean nuclei?")


def test_a_ready_made_model_predicts_from_python_by_name(tmp_path):
    """Predictor.from_pretrained("nuclei") (stardist's and Hugging Face's convention) and a list of
    arrays in memory, cut at the options' threshold (its one source)."""
    from unetkit.inference import InferenceOptions, Predictor

    expected = fluorescent_nuclei(tmp_path / "images", count=2)
    images = [np.asarray(Image.open(path)) for path in sorted((tmp_path / "images").iterdir())]
    predictor = Predictor.from_pretrained("nuclei", options=InferenceOptions(backend="torch"))
    masks = predictor.predict_images(images)
    assert len(masks) == 2 and all(mask.shape == (256, 256) for mask in masks)
    objects = [predictor.objects(predictor.logits(image))[0].max() for image in images]
    assert objects == expected[:2]
    assert np.array_equal(predictor.predict_file(sorted((tmp_path / "images").iterdir())[0]), masks[0])


def test_a_zoo_models_state_saved_as_a_checkpoint_loads_again(tmp_path):
    """A state read from a .safetensors export carries that format's marker; a checkpoint saved from
    it carries the checkpoint's (before, load_checkpoint refused it as "not a unetkit checkpoint")."""
    state = load_checkpoint(zoo_model("nuclei").weights)
    save_checkpoint(tmp_path / "best.pt", {**state, "epoch": 0})
    again = load_checkpoint(tmp_path / "best.pt")
    assert again["format"] == "unetkit-checkpoint-v1" and again["mask_values"] == state["mask_values"]


def test_arrays_of_another_scale_are_said_and_arrays_of_nan_or_channels_first_refused(capsys, monkeypatch):
    """A notebook's `np.asarray(img, float)` of 8-bit data (0-255 read with 1.0 as white) and
    `.astype(int)` (read as 16-bit data) gave wrong masks unsaid; NaN arrays came back as
    background, and a (C, H, W) array was refused as '200 channels' (a red-team round)."""
    import unetkit.runtime.notes as notes
    from unetkit.errors import UnetkitError
    from unetkit.inference import InferenceOptions, Predictor

    predictor = Predictor.from_pretrained("nuclei", options=InferenceOptions(backend="torch"))
    gray = np.random.default_rng(0).integers(0, 30, (48, 64), np.uint8)
    gray[10:30, 20:40] += 200  # a nucleus: uniform noise alone is rightly said to hold no signal
    for array, needle in ((gray.astype(np.float64), "a float array reaching"), (gray.astype(np.int64), "16-bit")):
        monkeypatch.setattr(notes, "_SAID", set())
        predictor.predict_images([array])
        assert needle in capsys.readouterr().out
    monkeypatch.setattr(notes, "_SAID", set())
    predictor.predict_images([gray, gray / 255.0])  # the scales read_image's rule gives: nothing to say
    assert "note" not in capsys.readouterr().out
    with pytest.raises(UnetkitError, match="image 0: 3072 pixel.s. are NaN or infinite"):
        predictor.predict_images([np.full((48, 64, 1), np.nan, np.float32)])
    with pytest.raises(UnetkitError, match=r"looks like \(C, H, W\).*transpose\(1, 2, 0\)"):
        predictor.predict_images([np.stack([gray] * 3)])
    with pytest.raises(UnetkitError, match="a folder; predict_file takes one image file"):
        predictor.predict_file(Path(__file__).parent)
