"""Reading a model's output, in one place for training, metrics and inference (as smp's heads and
nnU-Net's LabelManager): a binary model has one logit (sigmoid), any other one logit a class
(softmax)."""

from __future__ import annotations

import torch


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """(N, K, H, W) logits -> per-class probabilities, with a binary model's one logit made into
    two channels (background, foreground) so every loss and metric sees K >= 2 classes."""
    if logits.shape[1] == 1:
        foreground = torch.sigmoid(logits)
        return torch.cat([1 - foreground, foreground], dim=1)
    return torch.softmax(logits, dim=1)


def predicted_classes(logits: torch.Tensor, threshold: float = 0.5, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """(N, K, H, W) logits -> (N, H, W) class ids as `dtype`; a binary model's one logit is
    thresholded (straight to `dtype`: a slide band's ids as uint8 are 1/8 of int64's memory)."""
    if logits.shape[1] == 1:
        return (torch.sigmoid(logits[:, 0].float()) > threshold).to(dtype)
    # max's indices, not argmax: the same first-maximum ids (ties included), but argmax over the class
    # axis of (N, K, H, W) takes a slow strided path on CPU: a slide band of a 4-class model,
    # 1 x 4 x 704 x 6000, 758 ms against 42 (AMX Xeon, 2 threads; benchmarks/NOTES.md, issue 36).
    return logits.max(dim=1).indices.to(dtype)
