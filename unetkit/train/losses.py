"""Segmentation losses for binary (one logit, sigmoid) and multi-class (softmax) models.

The default adds cross-entropy, which gives every pixel a sharp gradient, to soft Dice, which
measures overlap directly and so is not swamped when one class covers most pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.data.mask_values import IGNORE_ID
from unetkit.models.heads import class_probabilities

LOSSES = ("ce+dice", "ce", "dice", "focal", "ce+lovasz")


def soft_dice_loss(probs: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - mean over classes of 2|P.T| / (|P| + |T|), with sums over the whole batch."""
    num_classes = probs.shape[1]
    onehot = F.one_hot(target.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2)
    valid = valid[:, None].to(probs.dtype)
    onehot = onehot.to(probs.dtype) * valid
    probs = probs * valid
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    total = probs.sum(dims) + onehot.sum(dims)
    return 1 - ((2 * intersection + eps) / (total + eps)).mean()


def lovasz_softmax_loss(probs: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The Lovasz-softmax loss (Berman, Rannen Triki and Blaschko, CVPR 2018): for each class present
    in the batch, the Lovasz extension of its Jaccard loss 1 - IoU, a convex surrogate that equals
    1 - IoU exactly where the probabilities are 0 or 1; the mean over those classes. IoU is what the
    scene benchmarks score, and a class of few pixels weighs as much as the road. All classes are
    sorted in one call and absent ones masked out, so a step has no per-class host sync."""
    num_classes = probs.shape[1]
    probs = probs.permute(0, 2, 3, 1).reshape(-1, num_classes)[valid.reshape(-1)]
    truth = F.one_hot(target.reshape(-1)[valid.reshape(-1)], num_classes).to(probs.dtype)
    errors, order = (truth - probs).abs().sort(dim=0, descending=True)  # each class's column on its own
    per_class = (errors * jaccard_steps(truth.gather(0, order))).sum(0)
    present = (truth.sum(0) > 0).to(probs.dtype)
    return (per_class * present).sum() / present.sum().clamp_min(1)


def jaccard_steps(truth_sorted: torch.Tensor) -> torch.Tensor:
    """How much 1 - IoU grows as each pixel, in order of decreasing error, is counted wrong (down
    each column, one per class): the gradient of the Lovasz extension (Berman et al., Algorithm 1)."""
    positives = truth_sorted.sum(0)
    intersection = positives - truth_sorted.cumsum(0)
    union = positives + (1 - truth_sorted).cumsum(0)  # >= 1: no division by zero, present or not
    jaccard = 1 - intersection / union
    return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])


class SegmentationLoss(nn.Module):
    """`kind` is one of LOSSES. `class_weights` has one weight per class (two for a binary
    model: background, foreground); pixels whose class id is IGNORE_ID count for nothing."""

    def __init__(
        self,
        kind: str = "ce+dice",
        class_weights: Sequence[float] | None = None,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, not {kind!r}")
        self.kind = kind
        self.focal_gamma = focal_gamma
        weights = torch.tensor(list(class_weights), dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(
        self, logits: torch.Tensor, target: torch.Tensor, pixel_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`pixel_weights` (N, H, W), e.g. the U-Net paper's border term, adds to each pixel's class
        weight in the pixel loss: w(x) = w_c(x) + border(x)."""
        logits = logits.float()
        valid = target != IGNORE_ID
        safe_target = torch.where(valid, target, torch.zeros_like(target))
        loss = logits.new_zeros(())
        if self.kind in ("ce+dice", "ce", "focal", "ce+lovasz"):
            loss = loss + self._pixel_loss(logits, safe_target, valid, pixel_weights)
        if self.kind in ("ce+dice", "dice"):
            loss = loss + soft_dice_loss(class_probabilities(logits), safe_target, valid)
        if self.kind == "ce+lovasz":
            loss = loss + lovasz_softmax_loss(class_probabilities(logits), safe_target, valid)
        return loss

    def _pixel_loss(
        self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, pixel_weights: torch.Tensor | None
    ) -> torch.Tensor:
        if logits.shape[1] == 1:
            per_pixel = F.binary_cross_entropy_with_logits(logits[:, 0], target.to(logits.dtype), reduction="none")
        else:
            per_pixel = F.cross_entropy(logits, target, reduction="none")
        if self.kind == "focal":
            p_true = torch.exp(-per_pixel)  # the probability given to the true class
            per_pixel = (1 - p_true) ** self.focal_gamma * per_pixel
        weight = self.class_weights[target] if self.class_weights is not None else torch.ones_like(per_pixel)
        if pixel_weights is not None:
            weight = weight + pixel_weights.to(per_pixel.dtype)
        weight = weight * valid.to(per_pixel.dtype)
        return (per_pixel * weight).sum() / weight.sum().clamp_min(1.0)
