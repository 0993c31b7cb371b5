from unetkit.models.blocks import DoubleConv, Down, OutConv, Up, fuse_conv_bn
from unetkit.models.dumbnet import DumbNet
from unetkit.models.registry import MODELS, create_model
from unetkit.models.unet import UNet

__all__ = ["MODELS", "DoubleConv", "Down", "DumbNet", "OutConv", "UNet", "Up", "create_model", "fuse_conv_bn"]
