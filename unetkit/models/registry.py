"""Models by name, each describing itself, so that training, export and prediction need no
knowledge of any one architecture (timm's `@register_model` is the example).

A registered model is an nn.Module class with a `name` and four class methods:

  arguments(options, in_channels, num_classes) -> dict
      its constructor's keyword arguments from the training options (any object with the
      fields of TrainConfig's model section: base_channels, depth, upsampling); options left
      at None take the constructor's defaults (a recipe sets base_channels and depth for
      U-Nets: give them, or ignore them in arguments(), if the model has a rule of its own).
  min_input_size(args) -> int
      the smallest image side it trains on.
  probe_channels(args) -> int
      the width of its first level, which the channels_last speed probe times and by which
      out-of-core prediction sizes its tile batches (Predictor.slide_plan).
  options(args) -> dict
      the training options that give these arguments (arguments' inverse), so that a run
      started from a trained model (--init-from) builds the same network.

and each instance a `size_multiple` attribute: the multiple of the input's sides it takes, its
input padded up to it (2**depth for a U-Net; exports and prediction pad to it). A model pads
its input itself in forward() the way blocks.pad_to_multiple does, so an ONNX export, which
pads outside the network, computes the same.

unetkit's own models are one file each in unetkit/models/ with `@register_model` on the class
and one import line in unetkit/models/__init__.py; tests/models/test_models.py then tests them.
A model of your own registers the same way in your own module: import that module before
unetkit builds or loads it (in a script: `import mymodel` then `unetkit.cli.main()` for the
command line, or run_training / Predictor directly). A name is registered once: another class
under a taken name is refused, so a shipped model cannot be replaced unnoticed.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol

from torch import nn

from unetkit.errors import UnetkitError


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
    taken = MODELS.get(cls.name)
    if taken is not None and (taken.__module__, taken.__qualname__) != (cls.__module__, cls.__qualname__):
        # It replaced unetkit's own unet unsaid, and the shipped models then loaded as "damaged" (a red-team round)
        raise UnetkitError(
            f"model name {cls.name!r} is taken by {taken.__module__}.{taken.__qualname__}; give "
            f"{cls.__module__}.{cls.__qualname__} another name"
        )
    MODELS[cls.name] = cls
    return cls


def model_class(name: str) -> RegisteredModel:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model, e.g. create_model("unet", in_channels=1, num_classes=2); a
    constructor that does not take what its arguments() gives, or a model without a
    size_multiple, is one line naming the class."""
    cls = model_class(name)
    try:
        model = cls(**kwargs)
    except TypeError as err:  # a raw traceback from deep in training (a red-team round)
        raise UnetkitError(
            f"model {name!r} ({cls.__qualname__}): {err}; its arguments() and its constructor must agree"
        ) from None
    if not isinstance(getattr(model, "size_multiple", None), int):
        raise UnetkitError(
            f"model {name!r} ({cls.__qualname__}) sets no whole size_multiple: the multiple of the input's "
            "sides it takes (e.g. 2**depth), which export and prediction pad to"
        )
    return model


def constructor_defaults(cls: type) -> dict[str, Any]:
    """A model class's constructor arguments with their defaults."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def given(**options: Any) -> dict[str, Any]:
    """The options that were set (not None): the rest fall back to the constructor's defaults."""
    return {key: value for key, value in options.items() if value is not None}
