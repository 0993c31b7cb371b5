"""Models by name, each describing itself, so that training, export and prediction need no
knowledge of any one architecture (timm's `@register_model` is the example).

A registered model is an nn.Module class with three class methods:

  arguments(options, in_channels, num_classes) -> dict
      its constructor's keyword arguments from the training options (any object with the
      fields of TrainConfig's model section: base_channels, depth, upsampling); options left
      at None take the constructor's defaults.
  min_input_size(args) -> int
      the smallest image side it trains on.
  probe_channels(args) -> int
      the width of its first level, which the channels_last speed probe times and by which
      out-of-core prediction sizes its tile batches (Predictor.slide_plan).
  options(args) -> dict
      the training options that give these arguments (arguments' inverse), so that a run
      started from a trained model (--init-from) builds the same network.

Adding a model is one file in unetkit/models/ with `@register_model` on its class, and one
import line in unetkit/models/__init__.py; tests/models/test_models.py then tests it.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol

from torch import nn


class RegisteredModel(Protocol):
    name: str

    def __call__(self, **kwargs: Any) -> nn.Module: ...
    def arguments(self, options: Any, in_channels: int, num_classes: int) -> dict[str, Any]: ...
    def min_input_size(self, args: dict[str, Any]) -> int: ...
    def probe_channels(self, args: dict[str, Any]) -> int: ...
    def options(self, args: dict[str, Any]) -> dict[str, Any]: ...


MODELS: dict[str, RegisteredModel] = {}


def register_model(cls: type) -> type:
    """Class decorator: make the model buildable by its `name` (and from checkpoints)."""
    for method in ("arguments", "min_input_size", "probe_channels", "options"):
        if not callable(getattr(cls, method, None)):
            raise TypeError(f"{cls.__name__} needs a {method}() class method to be registered")
    MODELS[cls.name] = cls
    return cls


def model_class(name: str) -> RegisteredModel:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model, e.g. create_model("unet", in_channels=1, num_classes=2)."""
    return model_class(name)(**kwargs)


def constructor_defaults(cls: type) -> dict[str, Any]:
    """A model class's constructor arguments with their defaults."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def given(**options: Any) -> dict[str, Any]:
    """The options that were set (not None): the rest fall back to the constructor's defaults."""
    return {key: value for key, value in options.items() if value is not None}
