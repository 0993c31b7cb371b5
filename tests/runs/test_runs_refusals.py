"""Refusals of the run layer's Python API (run_training's arguments): broken input gets exit code 2
and one line naming the file or option and the fix, no traceback, and no user file changes (the
harness: tests/refusals.py)."""

from __future__ import annotations

import numpy as np
import pytest
from refusals import (
    _config,
    _predictor,
    _run_training,
    api,
    cases_of,
    refused,
)


def _options(**kwargs):
    from unetkit.inference import InferenceOptions

    return InferenceOptions(**kwargs)


CASES = cases_of(
    globals(),
    {
        "api_class_ids_of_a_path": api(
            lambda t, r: _predictor(r[3]).class_ids(str(r[1] / "img00.png")), "logits(image)", "numpy array"
        ),
        "api_run_training_of_a_dict": api(
            lambda t, r: _run_training({"images": "x"}), "run_training(cfg)", "TrainConfig"
        ),
        "api_run_training_of_a_path": api(lambda t, r: _run_training("config.toml"), "run_training(cfg)", "str"),
        "api_run_training_pairs_as_a_folder": api(
            lambda t, r: _run_training(_config(t, epochs=1), train_pairs="data/images"), "train_pairs", "Pair"
        ),
        "api_run_training_pairs_as_paths": api(
            lambda t, r: _run_training(_config(t, epochs=1), train_pairs=["a.png"]), "train_pairs[0]", "find_pairs"
        ),
        "api_string_base_channels": api(
            lambda t, r: _run_training(_config(t, base_channels="16", epochs=1)),
            "base_channels='16'",
            "base_channels=16",
        ),
        "api_misspelled_option": api(lambda t, r: _config(t, epoch=3), "TrainConfig(epoch=...)", "epochs="),
        "api_misspelled_predictor_argument": api(
            lambda t, r: _predictor(r[3], devise="cpu"), "Predictor(devise=...)", "device="
        ),
        "api_misspelled_run_training_argument": api(
            lambda t, r: _run_training(_config(t, epochs=1), on_epoch=print),
            "run_training(on_epoch=...)",
            "on_epoch_end=",
        ),
        "api_misspelled_inference_option": api(
            lambda t, r: _predictor(r[3], options=_options(tiles=256)), "InferenceOptions(tiles=...)", "tile="
        ),
        "api_string_epochs": api(lambda t, r: _run_training(_config(t, epochs="3")), "epochs='3'", "whole number"),
        "api_negative_time": api(lambda t, r: _run_training(_config(t, time=-5.0)), "time"),
        "api_an_array_of_70000_squared": api(
            lambda t, r: _predictor(r[3]).predict_images([np.broadcast_to(np.uint8(0), (70_000, 70_000))]),
            "4,900,000,000 pixels",
            "UNETKIT_MAX_PIXELS",
        ),
    },
)


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused(name, tmp_path, rgb_run, monkeypatch, capsys):
    refused(CASES[name], tmp_path, rgb_run, monkeypatch, capsys)
