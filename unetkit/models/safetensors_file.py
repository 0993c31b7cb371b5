"""Sharing a trained model as weights only: a .safetensors file.

A safetensors file is raw tensors plus a JSON header; loading it parses no pickle at all, so it
is the format to hand to other people. unetkit stores the model's weights as the tensors and, in
the header's `__metadata__` under the key "unetkit", a JSON object with what prediction needs:

    {"format": "unetkit-weights-v1", "model_name": "unet", "model_args": {...},
     "mask_values": {"values": [0, 255], "ignore_value": null},
     "preprocess": {"in_channels": 1, "mean": [...], "std": [...], "scale": 1.0},
     "binary": true, "epoch": 12, "best_dice": 0.93}

Optimizer, scheduler and RNG state are left out: an export predicts, it does not resume training.
`Predictor("model.safetensors")` and `--checkpoint model.safetensors` load it directly.
This module reads and writes the format; `unetkit.models.checkpoint.export_safetensors` turns a
checkpoint into one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unetkit.errors import UnetkitError
from unetkit.models.spec import ModelSpec, trained_orientation
from unetkit.runtime.atomic import atomic_write
from unetkit.runtime.ownership import METADATA_KEY

WEIGHTS_FORMAT = "unetkit-weights-v1"
MAX_HEADER_BYTES = 100 * 2**20  # the safetensors library's own limit on the JSON header
_INSTALL_HINT = "install it with: pip install 'unetkit[export]' (or pip install safetensors)"


def _safetensors_torch() -> Any:
    try:
        import safetensors.torch
    except ImportError:
        raise UnetkitError(f"the safetensors package is needed for .safetensors files; {_INSTALL_HINT}") from None
    return safetensors.torch


def save_safetensors(state: dict[str, Any], out_path: str | Path) -> Path:
    """Write a checkpoint's weights and prediction keys (ModelSpec.KEYS, epoch, best_dice, object_rule,
    orientation) to a .safetensors file, atomically."""
    st = _safetensors_torch()
    kept = (*ModelSpec.KEYS, "epoch", "best_dice", "object_rule")
    meta = {"format": WEIGHTS_FORMAT, **{key: state.get(key) for key in kept}}
    meta["orientation"] = trained_orientation(state)  # for --tta
    tensors = {name: tensor.contiguous() for name, tensor in state["model"].items()}
    out_path = Path(out_path)

    def write(temporary: Path) -> None:
        try:
            st.save_file(tensors, str(temporary), metadata={METADATA_KEY: json.dumps(meta)})
        except (OSError, RuntimeError):
            raise
        except Exception as err:  # safetensors' own error type for a failed write (e.g. a full disk)
            raise OSError(str(err).strip().splitlines()[0][:100] if str(err).strip() else "write failed") from None

    atomic_write(out_path, write, durable=True)
    return out_path


def is_safetensors(path: str | Path) -> bool:
    """Whether the file is laid out as safetensors (an 8-byte little-endian header size, then the JSON
    header's "{"), whatever its name: a torch.save zip starts "PK", a legacy pickle with 0x80. A file
    cut short after its first 9 bytes still counts, so its damage is reported as a safetensors file's."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:] == b"{" and 0 < int.from_bytes(head[:8], "little") <= MAX_HEADER_BYTES


def load_safetensors(path: str | Path) -> dict[str, Any]:
    """A .safetensors export as the state dict Predictor takes (the prediction keys of a checkpoint)."""
    st = _safetensors_torch()
    path = Path(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = st.load_file(str(path), device="cpu")
        meta = json.loads(metadata[METADATA_KEY])
    except (KeyError, json.JSONDecodeError):
        meta = None
    except Exception as err:  # safetensors raises its own error type for a damaged file
        raise UnetkitError(
            f"{path}: not a readable safetensors file ({err.__class__.__name__}); "
            "export it again with unetkit export --safetensors"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != WEIGHTS_FORMAT:
        raise UnetkitError(
            f"{path}: no unetkit metadata in this safetensors file; export it with unetkit export --safetensors"
        )
    return {**meta, "model": tensors}
