"""The U-Net paper's border weight map: against a brute-force reference, its maxima in the gaps
between touching discs, moved with the patches, and added to the class weights in the loss."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from synthetic import make_shapes

from unetkit.data import MaskValues, Preprocess, SegmentationDataset, find_pairs
from unetkit.data.dataset import pad_collate
from unetkit.data.weight_map import border_weights
from unetkit.train.losses import SegmentationLoss


def discs_with_gaps(gap: int = 2) -> np.ndarray:
    """A row of four discs of radius 10 whose neighbours are `gap` pixels apart."""
    objects = np.zeros((40, 100), dtype=np.int64)
    yy, xx = np.mgrid[:40, :100]
    for index in range(4):
        cx = 12 + index * (20 + gap)
        objects[(yy - 20) ** 2 + (xx - cx) ** 2 <= 100] = index + 1
    return objects


def test_matches_the_formula_computed_over_all_objects():
    objects = discs_with_gaps()
    distances = np.sort(np.stack([ndimage.distance_transform_edt(objects != i) for i in range(1, 5)]), axis=0)
    reference = 10 * np.exp(-((distances[0] + distances[1]) ** 2) / (2 * 5**2))
    weights = border_weights(objects, w0=10, sigma=5)
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights, reference, atol=10 * np.exp(-8))  # the window's truncation


def test_maxima_lie_in_the_gaps_between_discs():
    objects = discs_with_gaps()
    weights = border_weights(objects)
    background = objects == 0
    gap_columns = [12 + 10 + 1 + i * 22 for i in range(3)]  # the middle of each 2-pixel gap (x = 23, 45, 67)
    in_gaps = weights[20, gap_columns]
    assert np.all(in_gaps > 0.9 * weights.max()) and weights.max() > 5
    far = background & (ndimage.distance_transform_edt(background) > 8)
    assert weights[far].max() < 0.5  # open background far from the objects: nearly nothing
    assert weights[20, 1] < 0.2 * in_gaps.min()  # beside the outer disc's free side


def test_patches_carry_their_weights(tmp_path):
    images, masks = make_shapes(tmp_path, count=3, size=(48, 48), values=(0, 255))
    pairs = find_pairs(images, masks)
    mask_values = MaskValues([0, 255])
    preprocess = Preprocess(1)
    whole = SegmentationDataset(pairs, mask_values, preprocess, border_weights=(10.0, 5.0))
    patches = SegmentationDataset(pairs, mask_values, preprocess, patch_size=32, border_weights=(10.0, 5.0))
    image, mask, weights = whole[0]
    assert weights.shape == mask.shape
    torch.manual_seed(0)
    patch, patch_mask, patch_weights = patches[0]
    assert patch_weights.shape == patch_mask.shape == (32, 32)
    # Unaugmented patches are exact crops: find this one in the whole mask and compare the weights.
    for y in range(17):
        for x in range(17):
            if torch.equal(mask[y : y + 32, x : x + 32], patch_mask) and torch.allclose(
                patch, image[:, y : y + 32, x : x + 32]
            ):
                torch.testing.assert_close(patch_weights, weights[y : y + 32, x : x + 32])
                break
        else:
            continue
        break
    else:
        pytest.fail("the patch is not a crop of the image")
    batch = pad_collate([whole[0], whole[1]])
    assert len(batch) == 3 and batch[2].shape == batch[1].shape


def test_pixel_weights_add_to_the_class_weights():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    pixel = torch.rand(2, 8, 8) * 10
    class_weights = torch.tensor([1.0, 2.0, 0.5])
    loss = SegmentationLoss("ce", class_weights.tolist())(logits, target, pixel)
    weight = class_weights[target] + pixel
    expected = (F.cross_entropy(logits, target, reduction="none") * weight).sum() / weight.sum()
    torch.testing.assert_close(loss, expected)
