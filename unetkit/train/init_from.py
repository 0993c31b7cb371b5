"""Starting a run from a trained model (`train --init-from MODEL`), the loop of people who correct
a few masks and train again: the new run's weights start from MODEL's, while its optimizer,
schedule, split, normalisation statistics and mask values start fresh from the new data
(`--resume` continues the same run instead).

The network must be the one MODEL was trained as: its architecture options fill whatever the
user left unset, and one set to another value is refused. Its scale (how large objects are in
pixels) and its kind of normalisation (per-image percentiles, or a mean and std then measured on
the new data) are taken too, unless the user gives --scale or --normalize (--normalize model
keeps the model's own statistics: data_plan.preprocess_for). What may differ is said, not hidden:
- other classes: the output layer starts afresh (the rest of the network keeps what it learned);
  masks that hold some of the model's classes keep them all, and its output layer, and the
  model's --ignore-value is taken unless one is given (data_plan.kept_classes);
- another channel count: the first convolution's trained filters are summed over their
  channels and shared out over the new ones (sum / new count), so an image whose channels are
  all equal meets the filters it was trained with.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from unetkit.errors import UnetkitError
from unetkit.models import model_class
from unetkit.models.checkpoint import check_state, load_checkpoint
from unetkit.models.spec import ModelSpec
from unetkit.train.config import TrainConfig
from unetkit.train.option_layers import fill_unset
from unetkit.zoo import model_file


def load_init_state(name: str | None) -> dict[str, Any] | None:
    """MODEL's checkpoint (a best.pt, last.pt, .safetensors export or a ready-made model's name), checked."""
    if name is None:
        return None
    path = model_file(name)
    if path.suffix.lower() == ".onnx":
        raise UnetkitError(
            f"{path}: an ONNX export predicts but holds no weights training can start from; pass --init-from the "
            "run's best.pt or its .safetensors export"
        )
    return load_checkpoint(path)


def architecture_from(cfg: TrainConfig, state: dict[str, Any], source: str, model_given: bool = True) -> TrainConfig:
    """`cfg` with the architecture options (and scale) MODEL was trained with where unset; one the
    user set to another value is refused, as the weights would not fit. `model_given`: --model was
    given (else its default, unet, gives way to MODEL's architecture: a DumbNet's --init-from was
    refused for a --model never typed, a red-team round)."""
    spec = check_state(state, source)
    if cfg.model != spec.name:
        if model_given:
            raise UnetkitError(f"{source}: a {spec.name}, not a {cfg.model}; drop --model or start from another model")
        cfg = replace(cfg, model=spec.name)
    arch = model_class(spec.name).options(spec.args)
    for key, value in arch.items():
        if getattr(cfg, key) is not None and getattr(cfg, key) != value:
            flag = "--" + key.replace("_", "-")
            raise UnetkitError(
                f"{source}: was trained with {flag} {value}, and its weights fit only that; drop "
                f"{flag} {getattr(cfg, key)} (or start from scratch without --init-from)"
            )
    # Recorded as a full path (a ready-made model by its name), so the run says where it started.
    where = str(Path(source).resolve()) if Path(source).exists() else source
    # Unless the user gives them: the model's scale, so objects keep the size in pixels it learned,
    # and its kind of normalisation (the statistics of mean and std come from the new data).
    normalize = "image" if spec.preprocess.percentiles is not None else "dataset"
    unset = {**arch, "scale": spec.preprocess.scale, "normalize": normalize}
    ignored = spec.mask_values.ignore_value  # CamVid's void stays unlabelled, not a class (data_plan.kept_classes)
    if ignored is not None and ignored not in (cfg.mask_values or ()):
        unset["ignore_value"] = ignored
    return replace(fill_unset(cfg, unset)[0], init_from=where)


def start_from(model: nn.Module, spec: ModelSpec, state: dict[str, Any], source: str) -> list[str]:
    """Copy MODEL's weights into this run's `model` (built from `spec`); what was adapted, as lines
    for the log."""
    init = check_state(state, source)
    mine, theirs = model_class(spec.name).options(spec.args), model_class(init.name).options(init.args)
    if init.name != spec.name or mine != theirs:
        raise UnetkitError(f"{source}: a {init.name} with {theirs}, not the {spec.name} with {mine} this run builds; "
                           "start from a model of this architecture")  # fmt: skip
    weights = model.state_dict()
    notes = []
    for key, trained in state["model"].items():
        target = weights.get(key)
        if target is None:
            raise UnetkitError(f"{source}: its weight {key} has no place in this run's {spec.name}; it is damaged")
        if trained.shape == target.shape:
            weights[key] = trained.to(target.dtype)
        elif trained.shape[0] == init.num_outputs and trained.shape[1:] == target.shape[1:]:
            notes.append(key)  # the output layer: left as initialised
        elif trained.ndim == 4 and trained.shape[1] == init.in_channels and trained.shape[0] == target.shape[0]:
            weights[key] = shared_out(trained, target.shape[1]).to(target.dtype)
        else:
            raise UnetkitError(f"{source}: its weight {key} {tuple(trained.shape)} does not fit {tuple(target.shape)}")
    model.load_state_dict(weights)
    return describe_changes(init, spec, bool(notes))


def shared_out(filters: torch.Tensor, channels: int) -> torch.Tensor:
    """(out, C, k, k) filters for `channels` inputs: their sum over C, divided over the new channels."""
    return (filters.sum(dim=1, keepdim=True) / channels).repeat(1, channels, 1, 1)


def describe_changes(init: ModelSpec, spec: ModelSpec, new_head: bool) -> list[str]:
    lines = []
    if new_head:
        lines.append(
            f"init-from: the output layer starts afresh: the model's classes {init.mask_values.values} are "
            f"{spec.mask_values.values} here"
        )
    elif init.mask_values.values != spec.mask_values.values:
        lines.append(
            f"init-from: the model's classes {init.mask_values.values} are taken as {spec.mask_values.values}, "
            "in that order"
        )
    ignored = init.mask_values.ignore_value
    if ignored is not None and spec.mask_values.ignore_value == ignored:
        lines.append(f"init-from: value {ignored} marks unlabelled pixels, ignored as the model ignored them")
    if init.in_channels != spec.in_channels:
        lines.append(
            f"init-from: the first convolution adapted from {init.in_channels} to {spec.in_channels} channel(s): "
            "its filters summed over their channels and shared out over the new ones"
        )
    return lines
