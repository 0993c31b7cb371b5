"""runs/from_model.py: a run from an instance model ends with the fine-tuned weights averaged with
the start's, or with the start itself where the average does not beat it on the run's objects."""

from __future__ import annotations

import pytest
import torch
from synthetic import nuclei_with_ids

import unetkit.runs.from_model as from_model
from unetkit.data import Pair
from unetkit.models.checkpoint import load_checkpoint, save_checkpoint
from unetkit.models.spec import ObjectRule
from unetkit.zoo import zoo_model


@pytest.fixture
def nuclei(tmp_path):
    images, masks = nuclei_with_ids(tmp_path / "data", count=2)
    pairs = [Pair(image, masks / f"{image.stem}.tif") for image in sorted(images.iterdir())]
    # as a run's epoch-0 state holds it (the shipped file says its own format)
    start = {k: v for k, v in load_checkpoint(zoo_model("nuclei").weights).items() if k != "format"}
    tuned = {
        **start,
        "epoch": 5,
        "model": {k: v * 0.5 if v.is_floating_point() else v for k, v in start["model"].items()},
    }
    save_checkpoint(tmp_path / "best.pt", tuned)
    return tmp_path / "best.pt", start, tuned, pairs


def test_the_average_is_half_of_each_tensor_and_counters_are_the_tuned_models():
    start = {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(3)}
    tuned = {"w": torch.tensor([4.0, 4.0]), "n": torch.tensor(7)}
    averaged = from_model.average(start, tuned, 0.5)
    assert averaged["w"].tolist() == [2.0, 3.0] and averaged["n"].item() == 7


def test_an_average_that_does_not_beat_the_start_gives_way_to_it(nuclei):
    best, start, _tuned, pairs = nuclei
    lines: list[str] = []
    held = from_model.settle_from_start(best, start, ObjectRule.from_state(start["object_rule"]), pairs, lines.append)
    restored = load_checkpoint(best)
    assert "is the --init-from model as it started" in lines[-1]
    assert held.startswith("the --init-from model as it started")  # the summary's line, not the tuned Dice
    assert all(restored["model"][k].equal(v) for k, v in start["model"].items())
    assert ObjectRule.from_state(restored["object_rule"]) == ObjectRule.from_state(start["object_rule"])


def test_an_average_that_beats_the_start_by_more_than_the_noise_is_kept(nuclei, monkeypatch):
    best, start, tuned, pairs = nuclei
    real = from_model.object_score
    scores = iter([0.50, 0.80])  # the start's, then the average's

    def scored(state, rule, val_pairs):
        return next(scores), real(state, rule, val_pairs)[1]

    monkeypatch.setattr(from_model, "object_score", scored)
    lines: list[str] = []
    held = from_model.settle_from_start(best, start, None, pairs, lines.append)
    kept = load_checkpoint(best)
    assert "is the average of the fine-tuned weights" in lines[-1] and kept["epoch"] == 5
    assert held == "the average of the fine-tuned weights and the start's, pooled AP@0.5:0.9 0.8000"
    expected = from_model.average(start["model"], tuned["model"], from_model.BLEND)
    assert all(kept["model"][k].equal(v) for k, v in expected.items())


def test_a_best_checkpoint_that_is_the_start_is_left_alone(nuclei):
    best, start, _tuned, pairs = nuclei
    save_checkpoint(best, {**start, "epoch": 0, "best_dice": 0.8112})
    before = best.read_bytes()
    lines: list[str] = []
    held = from_model.settle_from_start(best, start, None, pairs, lines.append)
    assert best.read_bytes() == before
    # ... and said: napari's Retrain called it "trained" with the shipped model unchanged (red-team round)
    assert held == "the --init-from model as it started, val Dice 0.8112: no epoch beat it"
    assert lines == [
        "from the model: no epoch beat the --init-from model's val Dice 0.8112: best.pt is that model as it started "
        "(train longer or on more images to move it)"
    ]


def test_where_the_average_is_no_better_the_fine_tuned_weights_beating_the_start_are_kept(nuclei, monkeypatch):
    """Images unlike any the model saw (dark nuclei on a bright ground): the average is neither
    model, and only the fine-tuned weights beat the start."""
    best, start, tuned, pairs = nuclei
    real = from_model.object_score
    scores = iter([0.0, 0.07, 0.60])  # the start's, the average's, the fine-tuned weights'
    monkeypatch.setattr(from_model, "object_score", lambda s, r, v: (next(scores), real(s, r, v)[1]))
    lines: list[str] = []
    held = from_model.settle_from_start(best, start, None, pairs, lines.append)
    kept = load_checkpoint(best)
    assert lines[-1].endswith("is fine-tuned") and held is None  # best.pt is the run's best epoch
    assert all(kept["model"][k].equal(v) for k, v in tuned["model"].items())
