from unetkit.data.dataset import SegmentationDataset, load_pair
from unetkit.data.io import IMAGE_EXTENSIONS, read_image, read_mask
from unetkit.data.mask_values import IGNORE_ID, MaskValues, discover_mask_values
from unetkit.data.pairing import Pair, find_pairs, list_images
from unetkit.data.preprocess import Preprocess
from unetkit.data.transforms import AugmentConfig

__all__ = [
    "IGNORE_ID",
    "IMAGE_EXTENSIONS",
    "AugmentConfig",
    "MaskValues",
    "Pair",
    "Preprocess",
    "SegmentationDataset",
    "discover_mask_values",
    "find_pairs",
    "list_images",
    "load_pair",
    "read_image",
    "read_mask",
]
