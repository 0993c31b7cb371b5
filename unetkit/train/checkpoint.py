"""Checkpoints: everything needed to rebuild the model for prediction, or to resume training
exactly where it stopped. Written atomically (temporary file, then rename), so a crash mid-save
never leaves a half-written file in place of a good one; read with weights_only=True, so loading
a checkpoint can never run code hidden in it."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unetkit.errors import UnetkitError
from unetkit.models import create_model

FORMAT = "unetkit-checkpoint-v1"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        torch.save({"format": FORMAT, **state}, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UnetkitError(f"{path}: checkpoint not found; pass the path of a best.pt or last.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "unsafe content"
        raise UnetkitError(
            f"{path}: refused to load, the file holds objects other than tensors and plain data "
            f"({first[:120]}); use a checkpoint written by unetkit"
        ) from None
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        raise UnetkitError(
            f"{path}: not a readable PyTorch checkpoint ({err.__class__.__name__}); "
            "the file may be truncated or not a checkpoint, use a best.pt or last.pt from a run"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UnetkitError(
            f"{path}: not a unetkit checkpoint (no '{FORMAT}' marker); "
            "use a best.pt or last.pt written by 'unetkit train'"
        )
    return state


def model_from_checkpoint(state: dict[str, Any]) -> nn.Module:
    model = create_model(state["model_name"], **state["model_args"])
    model.load_state_dict(state["model"])
    return model.eval()
