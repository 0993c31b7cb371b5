"""unetkit: U-Net segmentation from folders of images and masks."""

__version__ = "0.1.0"

from unetkit.models import DumbNet, UNet, create_model  # noqa: E402

__all__ = ["DumbNet", "UNet", "__version__", "create_model"]
