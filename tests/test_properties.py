"""Property tests: metrics, padding/cropping and mask-value mapping hold for any input hypothesis finds."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import f1_score, jaccard_score

from unetkit.data import MaskValues
from unetkit.data.transforms import random_patch
from unetkit.models.blocks import pad_to_multiple
from unetkit.scoring.metrics import SegmentationMetrics, confusion_matrix, dice_from_confusion, iou_from_confusion

FAST = settings(max_examples=40, deadline=None)


@st.composite
def mask_pairs(draw, max_classes: int = 5):
    """Two label maps (truth, prediction) of the same random size and class count."""
    classes = draw(st.integers(2, max_classes))
    shape = draw(st.tuples(st.integers(1, 12), st.integers(1, 12)))
    labels = arrays(np.int64, shape, elements=st.integers(0, classes - 1))
    return classes, draw(labels), draw(labels)


def scores(classes: int, truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    matrix = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(truth), classes)
    return dice_from_confusion(matrix).numpy(), iou_from_confusion(matrix).numpy()


@FAST
@given(mask_pairs())
def test_dice_and_iou_are_in_0_1_and_symmetric(pair):
    classes, truth, pred = pair
    dice, iou = scores(classes, truth, pred)
    dice_swapped, iou_swapped = scores(classes, pred, truth)
    for values in (dice, iou):
        present = values[~np.isnan(values)]
        assert ((present >= 0) & (present <= 1)).all()
    np.testing.assert_array_equal(dice, dice_swapped)
    np.testing.assert_array_equal(iou, iou_swapped)
    assert (np.nan_to_num(iou, nan=0) <= np.nan_to_num(dice, nan=0) + 1e-12).all()  # IoU = D / (2 - D) <= D


@FAST
@given(mask_pairs())
def test_identical_masks_score_one(pair):
    classes, truth, _ = pair
    dice, iou = scores(classes, truth, truth)
    present = np.isin(np.arange(classes), truth)
    np.testing.assert_array_equal(dice[present], 1.0)
    np.testing.assert_array_equal(iou[present], 1.0)
    assert np.isnan(dice[~present]).all()  # absent from both: undefined, left out of means
    metrics = SegmentationMetrics(classes, binary=classes == 2)
    metrics.update(torch.from_numpy(truth), torch.from_numpy(truth))
    assert metrics.mean_dice == 1.0 and metrics.mean_iou == 1.0


@FAST
@given(mask_pairs())
def test_scores_agree_with_scikit_learn(pair):
    classes, truth, pred = pair
    dice, iou = scores(classes, truth, pred)
    labels = list(range(classes))
    expected_dice = f1_score(truth.ravel(), pred.ravel(), labels=labels, average=None, zero_division=0)
    expected_iou = jaccard_score(truth.ravel(), pred.ravel(), labels=labels, average=None, zero_division=0)
    # A class in neither mask is 0 for scikit-learn (zero_division) and NaN here (left out of means).
    absent = ~np.isin(labels, truth) & ~np.isin(labels, pred)
    assert np.isnan(dice[absent]).all() and np.isnan(iou[absent]).all()
    np.testing.assert_allclose(dice[~absent], expected_dice[~absent], rtol=1e-12)
    np.testing.assert_allclose(iou[~absent], expected_iou[~absent], rtol=1e-12)


@FAST
@given(st.integers(1, 40), st.integers(1, 40), st.sampled_from([1, 2, 4, 8, 16]))
def test_pad_to_multiple_then_crop_is_the_identity(height, width, multiple):
    x = torch.rand(1, 2, height, width)
    padded, (h, w) = pad_to_multiple(x, multiple)
    assert padded.shape[-2] % multiple == 0 and padded.shape[-1] % multiple == 0
    assert padded.shape[-2] - height < multiple and padded.shape[-1] - width < multiple
    assert (h, w) == (height, width)
    torch.testing.assert_close(padded[..., :h, :w], x, rtol=0, atol=0)


@FAST
@given(st.integers(1, 50), st.integers(1, 50), st.integers(1, 40), st.integers(1, 40))
def test_random_patch_has_the_patch_size_and_mask_values_from_any_image(height, width, ph, pw):
    torch.manual_seed(height * 131 + width)
    image = torch.rand(1, height, width)
    mask = torch.randint(0, 3, (height, width), dtype=torch.uint8)
    patch, patch_mask = random_patch(image, mask, (ph, pw), None)
    assert patch.shape == (1, ph, pw) and patch_mask.shape == (ph, pw)
    assert set(patch_mask.unique().tolist()) <= set(mask.unique().tolist())


@FAST
@given(
    st.lists(st.integers(0, 65535), min_size=2, max_size=12, unique=True),
    st.data(),
)
def test_mask_values_round_trip(values, data):
    mapping = MaskValues(sorted(values))
    shape = data.draw(st.tuples(st.integers(1, 8), st.integers(1, 8)))
    picks = data.draw(arrays(np.int64, shape, elements=st.integers(0, len(values) - 1)))
    mask = np.asarray(sorted(values))[picks]
    class_ids = mapping.encode(mask)
    np.testing.assert_array_equal(class_ids, picks)  # sorted values -> class ids 0, 1, 2, ...
    np.testing.assert_array_equal(mapping.decode(class_ids), mask)
    assert MaskValues.from_dict(mapping.to_dict()).values == mapping.values
