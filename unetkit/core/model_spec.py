"""What it takes to rebuild a trained model and use it the way it was trained: the registered
model's name and arguments, the mask values its classes stand for, the preprocessing of its
input, and whether it has one sigmoid logit (binary) or softmax. Checkpoints, .safetensors and
.onnx exports all carry these five under the same keys (docs/checkpoint-format.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from unetkit.data import MaskValues, Preprocess
from unetkit.models import create_model


@dataclass(frozen=True)
class ModelSpec:
    name: str
    args: dict[str, Any]
    mask_values: MaskValues
    preprocess: Preprocess
    binary: bool

    KEYS = ("model_name", "model_args", "mask_values", "preprocess", "binary")

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ModelSpec:
        """From a checkpoint's (or export's) keys."""
        return cls(
            state["model_name"],
            dict(state["model_args"]),
            MaskValues.from_dict(state["mask_values"]),
            Preprocess(**state["preprocess"]),
            bool(state["binary"]),
        )

    def to_state(self) -> dict[str, Any]:
        """The keys a checkpoint stores, as plain data."""
        return {
            "model_name": self.name,
            "model_args": self.args,
            "mask_values": self.mask_values.to_dict(),
            "preprocess": self.preprocess.to_dict(),
            "binary": self.binary,
        }

    @property
    def in_channels(self) -> int:
        return self.args["in_channels"]

    @property
    def num_outputs(self) -> int:
        """Logits per pixel: 1 for a binary model, else one per class."""
        return self.args["num_classes"]

    def build(self) -> nn.Module:
        return create_model(self.name, **self.args)
