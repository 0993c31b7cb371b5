import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from unetkit.errors import UnetkitError
from unetkit.inference import InferenceOptions, Predictor
from unetkit.models.checkpoint import export_safetensors
from unetkit.models.safetensors_file import load_safetensors
from unetkit.train import load_checkpoint


def test_safetensors_export_predicts_like_the_checkpoint(rgb_run, tmp_path):
    _root, images, _masks, checkpoint = rgb_run
    exported = export_safetensors(checkpoint, tmp_path / "model.safetensors")
    with safe_open(str(exported), framework="pt") as handle:
        meta = json.loads(handle.metadata()["unetkit"])
    state = load_checkpoint(checkpoint)
    assert meta["model_name"] == state["model_name"] and meta["model_args"] == state["model_args"]
    assert meta["mask_values"]["values"] == [0, 255] and meta["preprocess"] == state["preprocess"]
    loaded = load_safetensors(exported)
    for name, tensor in state["model"].items():
        torch.testing.assert_close(loaded["model"][name], tensor, rtol=0, atol=0)
    image = images / "img00.png"
    torch_only = InferenceOptions(backend="torch")  # both sides on PyTorch, not whichever timed faster
    original = Predictor(checkpoint, device="cpu", amp="off", options=torch_only).predict_file(image)
    copy = Predictor(exported, device="cpu", amp="off", options=torch_only).predict_file(image)
    np.testing.assert_array_equal(copy, original)


def test_safetensors_without_unetkit_metadata_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(UnetkitError, match="no unetkit metadata"):
        load_safetensors(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(UnetkitError, match="junk.safetensors"):
        load_checkpoint(tmp_path / "junk.safetensors")


def test_exports_keep_whether_the_model_was_trained_upright(rgb_run, tmp_path):
    """--tta of an upright model averages only the mirror; its exports must say it is upright."""
    from unetkit.inference.export.onnx import export_onnx
    from unetkit.models.checkpoint import save_checkpoint

    state = load_checkpoint(rgb_run[3])
    upright = {**state, "config": {**state["config"], "orientation": "upright"}}
    save_checkpoint(tmp_path / "upright.pt", upright)
    export_safetensors(tmp_path / "upright.pt", tmp_path / "upright.safetensors")
    export_onnx(upright, tmp_path / "upright.onnx")
    for source in ("upright.pt", "upright.safetensors", "upright.onnx"):
        assert Predictor(tmp_path / source).upright, source
    assert not Predictor(rgb_run[3]).upright  # trained with every turn
