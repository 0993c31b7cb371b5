"""Models by name, so a checkpoint can rebuild the network it was trained with."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from unetkit.models.dumbnet import DumbNet
from unetkit.models.unet import UNet

MODELS: dict[str, Callable[..., nn.Module]] = {"unet": UNet, "dumbnet": DumbNet}


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model, e.g. create_model("unet", in_channels=1, num_classes=2)."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    return factory(**kwargs)
