"""Checkpoints: everything needed to rebuild the model for prediction, or to resume training
exactly where it stopped. Written atomically (temporary file, fsync, rename), so a crash mid-save
never leaves a half-written file in place of a good one; read with weights_only=True, so loading
a checkpoint can never run code hidden in it. The keys are listed in docs/checkpoint-format.md."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unetkit.errors import UnetkitError
from unetkit.models.safetensors_file import is_safetensors, load_safetensors, save_safetensors
from unetkit.models.spec import DAMAGED, ModelSpec, ObjectRule
from unetkit.runtime.atomic import atomic_write

FORMAT = "unetkit-checkpoint-v1"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    # The marker last: a state read from a .safetensors export carries that format's own, which would
    # otherwise be saved into a checkpoint that load_checkpoint then refuses.
    atomic_write(path, lambda temporary: torch.save({**state, "format": FORMAT}, temporary), durable=True)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint (torch.save) or its .safetensors export, whatever the file is named: the content
    decides the format. Either way its prediction keys are checked the same way (check_state)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.iterdir() if p.suffix.lower() in (".pt", ".safetensors"))[:3]
        shown = f"(it holds {', '.join(found)})" if found else "(it holds none: a best.pt, last.pt or .safetensors)"
        raise UnetkitError(f"{path}: is a folder; pass a checkpoint file {shown}")
    if not path.is_file():
        raise UnetkitError(f"{path}: checkpoint not found; pass the path of a best.pt or last.pt")
    state = load_safetensors(path) if is_safetensors(path) else _load_torch(path)
    check_state(state, path)
    return state


def check_state(state: dict[str, Any], source: str | Path = "checkpoint") -> ModelSpec:
    """The one check of what prediction reads from a checkpoint, for every format and for a dict given
    in Python: the model spec (required keys, preprocessing, mask values against the model's outputs),
    the object rule and the weights' presence (whether they fit is model_from_checkpoint's to say)."""
    spec = ModelSpec.from_state(state, source)
    ObjectRule.from_state(state.get("object_rule"), source)
    if not isinstance(state.get("model"), dict):
        raise UnetkitError(f"{source}: checkpoint lacks model (the weights); {DAMAGED}")
    return spec


def _load_torch(path: Path) -> dict[str, Any]:
    _refuse_zip_bomb(path)
    try:
        # A file object, not the path: torch.load reads a path named *.safetensors as safetensors, and
        # the content (a torch zip here, is_safetensors said so) decides the format, not the name.
        with path.open("rb") as handle:
            state = torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's own text explains weights_only at length
        raise UnetkitError(
            f"{path}: refused to load, the file holds objects other than tensors and plain data, or is no "
            "torch checkpoint at all (an ONNX model loads by its .onnx name); use a checkpoint written by unetkit"
        ) from None
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        raise UnetkitError(
            f"{path}: not a readable PyTorch checkpoint or safetensors export ({err.__class__.__name__}); "
            "the file may be truncated or not a checkpoint, use a best.pt or last.pt from a run"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UnetkitError(
            f"{path}: not a unetkit checkpoint (no '{FORMAT}' marker); "
            "use a best.pt or last.pt written by 'unetkit train'"
        )
    return state


def _refuse_zip_bomb(path: Path) -> None:
    """torch.save stores its zip entries uncompressed, so a checkpoint whose entries unpack to much
    more than the file's size was made to exhaust memory (3 MB unpacking to 3.3 GB), not by unetkit."""
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a zip (e.g. a legacy or broken file): torch.load reports it
    if unpacked > 2 * path.stat().st_size + 2**20:
        raise UnetkitError(
            f"{path}: refused to load, it unpacks to {unpacked / 2**30:.1f} GiB from a "
            f"{path.stat().st_size / 2**20:.1f} MiB file, which unetkit never writes; "
            "use a checkpoint written by unetkit"
        )


def model_from_checkpoint(state: dict[str, Any], source: str | Path = "checkpoint") -> nn.Module:
    """The checkpoint's network with its weights; a one-line error if the two do not fit. The
    network is first laid out on the meta device (shapes, no memory) and held against the weights:
    a 624-byte file whose metadata asks for 6000 channels built 1.5 GB before anything was checked."""
    spec = check_state(state, source)  # a dict given in Python is checked like a file
    described = f"a {str(state['model_name'])[:40]} with {str(state['model_args'])[:160]}"
    try:
        with torch.device("meta"):
            skeleton = spec.build()
        misfit = _first_misfit(skeleton.state_dict(), state["model"])
        if misfit:
            raise ValueError(misfit)
        model = spec.build()
        model.load_state_dict(state["model"])
    except (TypeError, ValueError, RuntimeError, OverflowError) as err:
        # load_state_dict lists every mismatched tensor; the first line is enough to see the cause.
        detail = str(err).strip().splitlines()
        first = next((line.strip() for line in detail[1:] if line.strip()), detail[0] if detail else "")
        raise UnetkitError(f"{source}: the weights do not fit {described} ({first[:160]}); {DAMAGED}") from None
    return model.eval()


def _first_misfit(expected: dict[str, torch.Tensor], weights: dict[str, Any]) -> str | None:
    """The first tensor the architecture expects that the weights lack or shape otherwise."""
    for name, tensor in expected.items():
        given = weights.get(name)
        if not isinstance(given, torch.Tensor):
            return f"no tensor {name[:80]}"
        if tuple(given.shape) != tuple(tensor.shape):
            return f"{name[:80]} is {tuple(given.shape)} in the weights, {tuple(tensor.shape)} in the architecture"
    return None


def export_safetensors(checkpoint_path: str | Path, out_path: str | Path) -> Path:
    """Write the weights and prediction settings of a checkpoint to a .safetensors file
    (unetkit/models/safetensors_file.py), checked on the way like any checkpoint that is loaded."""
    return save_safetensors(load_checkpoint(checkpoint_path), out_path)


def cpu_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """A model's state on the CPU, as a checkpoint holds it."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
