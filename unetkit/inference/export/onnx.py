"""Exporting a trained model for deployment: ONNX with dynamic batch, height and width (each a
multiple of the network's size multiple, kept in the metadata as `pad_multiple`: the trace fixes
the model's own padding), checked against PyTorch with ONNX Runtime before the file is kept."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unetkit.errors import UnetkitError
from unetkit.inference.onnx_runtime import METADATA_KEY, OnnxModel
from unetkit.models.checkpoint import load_checkpoint, model_from_checkpoint
from unetkit.models.spec import ModelSpec, trained_orientation
from unetkit.runtime.atomic import atomic_write


def require_onnx() -> None:
    """ONNX export's packages, or the line that says how to install them."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UnetkitError("ONNX export needs onnx and onnxruntime: pip install 'unetkit[onnx]'") from None


# ONNX Runtime and PyTorch agree on unetkit's models to ~1e-5 of the logits' scale (fp32; 5.7e-6 on
# a 2-channel model, a red-team round): a thousandth of it is an export that computes otherwise.
ONNX_TOLERANCE = 1e-3


def export_onnx(checkpoint: str | Path | dict[str, Any], out: str | Path, opset: int = 17) -> float:
    """Write `out` (.onnx) and return the largest |ONNX - PyTorch| logit difference measured on
    random inputs of two sizes. `checkpoint` is a checkpoint file or its already loaded dict."""
    require_onnx()
    import onnx

    state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    model = model_from_checkpoint(state, "checkpoint" if isinstance(checkpoint, dict) else checkpoint)
    multiple = model.size_multiple
    channels = ModelSpec.from_state(state).in_channels
    example = torch.randn(1, channels, 4 * multiple, 4 * multiple)
    metadata = {**ModelSpec.from_state(state).to_state(), "pad_multiple": multiple}
    metadata["object_rule"] = state.get("object_rule")
    metadata["orientation"] = trained_orientation(state)  # for --tta
    differences: list[float] = []

    def export_and_check(temporary: Path) -> None:
        # The TorchScript-based exporter: one second instead of the dynamo exporter's ten or more,
        # and no onnxscript dependency. Tracing fixes the padding branch, so callers pad to `multiple`.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(temporary),
                input_names=["image"],
                output_names=["logits"],
                opset_version=opset,
                dynamic_axes={
                    "image": {0: "batch", 2: "height", 3: "width"},
                    "logits": {0: "batch", 2: "height", 3: "width"},
                },
                dynamo=False,
            )
        proto = onnx.load(str(temporary))
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
        onnx.save(proto, str(temporary))
        difference, largest = max_difference(model, OnnxModel(temporary), channels, multiple)
        if difference > ONNX_TOLERANCE * max(1.0, largest):  # 16.9 was written and printed as fine (a red-team round)
            raise UnetkitError(
                f"{out}: not written: its logits differ from PyTorch's by up to {difference:.2e} (the largest "
                f"{largest:.2e}) on inputs padded to a multiple of {multiple}; a model that pads its input in "
                "forward() otherwise than blocks.pad_to_multiple (reflect, as an export's caller pads) computes "
                "otherwise at the borders"
            )
        differences.append(difference)

    # Written under a temporary name and renamed only once it has been checked; removed on failure.
    atomic_write(out, export_and_check)
    return differences[0]


def max_difference(model: torch.nn.Module, onnx_model: OnnxModel, channels: int, multiple: int) -> tuple[float, float]:
    """Largest absolute logit difference on two random inputs of different, non-square sizes, and
    the largest absolute logit (the difference's scale)."""
    generator = torch.Generator().manual_seed(0)
    worst, largest = 0.0, 0.0
    for batch, height, width in ((1, 3 * multiple, 5 * multiple), (2, 7 * multiple + 3, 2 * multiple + 1)):
        x = torch.randn(batch, channels, height, width, generator=generator)
        with torch.inference_mode():
            expected = model(x).numpy()
        worst = max(worst, float(np.abs(onnx_model(x).numpy() - expected).max()))
        largest = max(largest, float(np.abs(expected).max()))
    return worst, largest
