from unetkit.models.blocks import DoubleConv, Down, OutConv, Up, fuse_conv_bn

# Each import registers its model (see registry.py).
from unetkit.models.dumbnet import DumbNet  # noqa: E402, I001
from unetkit.models.encoder_unet import EncoderUNet  # noqa: E402
from unetkit.models.registry import MODELS, create_model, model_class, register_model
from unetkit.models.unet import UNet  # noqa: E402

__all__ = [
    "MODELS",
    "DoubleConv",
    "Down",
    "DumbNet",
    "EncoderUNet",
    "OutConv",
    "UNet",
    "Up",
    "create_model",
    "fuse_conv_bn",
    "model_class",
    "register_model",
]
