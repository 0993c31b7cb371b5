"""A U-Net decoder on a pretrained-able backbone: timm's `features_only` encoders (ResNet,
EfficientNet, ConvNeXt, RegNet, MobileNetV3, ...) give the feature pyramid, and the decoder climbs
it as the U-Net's does (upsample x2, concatenate the encoder's map of that size, two 3x3 conv +
BN + ReLU), then up to the input's size and a 1x1 head. segmentation_models_pytorch's Unet is the
model of this (the same decoder widths, 256 -> 16); photographs are where it pays: an encoder
pretrained on ImageNet has seen streets and cars before the first step.

timm is an optional extra (`pip install "unetkit[encoders]"`): it is imported when an encoder
model is built, never when unetkit is; a missing or broken timm is one line saying what to do.
The encoder is always built without weights here (nothing is downloaded); the weights a run
starts from (--encoder-weights: imagenet through timm's own loading, a file, or none) are
loaded by train/encoder_weights.py."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.errors import UnetkitError
from unetkit.models.blocks import DoubleConv, OutConv, concatenate_channels, pad_to_multiple
from unetkit.models.registry import register_model

# The encoders known to give a feature pyramid that reduces by 32 (`unetkit encoders` lists them
# with their sizes); any other timm name with features_only works too, and is checked when built.
ENCODERS = (
    "resnet18", "resnet34", "resnet50", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2",
    "efficientnet_b3", "convnext_tiny", "regnety_008", "mobilenetv3_large_100",
)  # fmt: skip
DEFAULT_ENCODER = "resnet34"
DECODER_WIDTHS = (256, 128, 64, 32, 16)  # from the deepest level up, as smp's Unet
SIZE_MULTIPLE = 32  # every listed encoder halves the size five times


def import_timm() -> Any:
    """timm, or one line naming the extra (and the torchvision mismatch that breaks it)."""
    try:
        import timm
    except ImportError:
        raise UnetkitError('encoder models need timm: pip install "unetkit[encoders]"') from None
    except RuntimeError as err:  # a CUDA torchvision beside a CPU torch: "operator torchvision::nms does not exist"
        raise UnetkitError(
            f"timm could not be imported ({err}); its torchvision does not match this torch "
            f"({torch.__version__}): install torch and torchvision built for each other, from the same index"
        ) from None
    return timm


def create_encoder(name: str, in_channels: int) -> nn.Module:
    """timm's feature pyramid of `name`, without weights."""
    timm = import_timm()
    try:
        return timm.create_model(name, features_only=True, pretrained=False, in_chans=in_channels)
    except RuntimeError as err:  # timm's "Unknown model (...)"
        raise UnetkitError(f"--encoder {name}: {err}; `unetkit encoders` lists the ones tested") from None


@register_model
class EncoderUNet(nn.Module):
    name = "encoder-unet"

    def __init__(self, in_channels: int, num_classes: int, encoder: str = DEFAULT_ENCODER) -> None:
        super().__init__()
        self.encoder_name = encoder
        self.encoder = create_encoder(encoder, in_channels)
        self.size_multiple = self.encoder.feature_info.reduction()[-1]  # 32 for every tested encoder
        channels = self.encoder.feature_info.channels()
        reductions = self.encoder.feature_info.reduction()
        # Each decoder step halves the reduction; the last steps (below the finest encoder map,
        # reduction 2 or 4) have no encoder map to concatenate.
        steps = len(channels) - 1 + (reductions[0].bit_length() - 1)
        widths = [DECODER_WIDTHS[min(i, len(DECODER_WIDTHS) - 1)] for i in range(steps)]
        skips = list(reversed(channels[:-1])) + [0] * (steps - len(channels) + 1)
        below = channels[-1]
        blocks = []
        for width, skip in zip(widths, skips, strict=True):
            blocks.append(DoubleConv(below + skip, width))
            below = width
        self.decoder = nn.ModuleList(blocks)
        self.head = OutConv(below, num_classes)

    @classmethod
    def arguments(cls, options: Any, in_channels: int, num_classes: int) -> dict[str, Any]:
        encoder = getattr(options, "encoder", None) or DEFAULT_ENCODER
        return {"in_channels": in_channels, "num_classes": num_classes, "encoder": encoder}

    @classmethod
    def options(cls, args: dict[str, Any]) -> dict[str, Any]:
        return {"encoder": args.get("encoder", DEFAULT_ENCODER)}

    @classmethod
    def min_input_size(cls, args: dict[str, Any]) -> int:
        """The deepest map is 1/32 of the input: 64 pixels leave it 2x2 for BatchNorm."""
        return 2 * SIZE_MULTIPLE

    @classmethod
    def probe_channels(cls, args: dict[str, Any]) -> int:
        return 64

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (height, width) = pad_to_multiple(x, self.size_multiple)
        features = self.encoder(x)
        skips = [*reversed(features[:-1]), *[None] * (len(self.decoder) - len(features) + 1)]
        y = features[-1]
        for block, skip in zip(self.decoder, skips, strict=True):
            y = F.interpolate(y, scale_factor=2.0, mode="nearest")
            y = block(y if skip is None else concatenate_channels(y, skip))  # dense gradients back
        return self.head(y)[..., :height, :width]
