"""Running an exported model with ONNX Runtime, behind the same call as the PyTorch model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from unetkit.errors import UnetkitError
from unetkit.models.blocks import pad_to_multiple
from unetkit.runtime.ownership import METADATA_KEY


class OnnxModel:
    """(N, C, h, w) normalised images -> (N, K, h, w) logits via onnxruntime.

    The exported graph takes sizes that are multiples of 2**depth (tracing fixes the U-Net's own
    padding branch), so the padding to that multiple happens here, and the crop back too."""

    def __init__(self, path: str | Path) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise UnetkitError("ONNX support needs onnxruntime: pip install 'unetkit[onnx]'") from None
        path = Path(path)
        if not path.is_file():
            raise UnetkitError(f"{path}: ONNX model not found; create it with 'unetkit export --onnx'")
        try:
            self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:
            raise UnetkitError(
                f"{path}: onnxruntime cannot load this file ({err.__class__.__name__}); re-export it"
            ) from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in metadata:
            raise UnetkitError(f"{path}: not exported by unetkit (no '{METADATA_KEY}' metadata); use 'unetkit export'")
        self.metadata: dict[str, Any] = read_metadata(path, metadata[METADATA_KEY])
        self.multiple = self.metadata["pad_multiple"]
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x, (height, width) = pad_to_multiple(x, self.multiple)
        (logits,) = self.session.run(None, {self.input_name: x.float().contiguous().numpy()})
        return torch.from_numpy(logits)[..., :height, :width]


def read_metadata(path: Path, text: str) -> dict[str, Any]:
    """The export's unetkit metadata, a JSON object with a whole `pad_multiple` (the rest is checked
    by the model spec, as a checkpoint's keys are); anything else is one line naming the file."""
    try:
        metadata = json.loads(text)
    except ValueError:
        metadata = None
    multiple = metadata.get("pad_multiple") if isinstance(metadata, dict) else None
    if not (isinstance(multiple, int) and not isinstance(multiple, bool) and 1 <= multiple <= 2**16):
        raise UnetkitError(
            f"{path}: its '{METADATA_KEY}' metadata is damaged (not JSON with a whole pad_multiple); re-export it "
            "with 'unetkit export --onnx'"
        )
    return metadata
