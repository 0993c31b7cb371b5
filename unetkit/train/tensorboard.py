"""`--tensorboard`: the run's curves, per-class scores and a few validation predictions in
TensorBoard (`tensorboard --logdir RUN/tensorboard`). tensorboard is an optional extra:
`pip install unetkit[tensorboard]`; it is imported only when asked for."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from unetkit.data import SegmentationDataset
from unetkit.data.mask_values import IGNORE_ID
from unetkit.errors import UnetkitError
from unetkit.models.heads import predicted_classes
from unetkit.scoring.metrics import SegmentationMetrics, dice_from_confusion, iou_from_confusion
from unetkit.train.setup import ModelSetup

IMAGES_PER_EPOCH = 3  # a few validation images; more only slows TensorBoard down


class TensorBoardLog:
    def __init__(self, folder: Path, mask_values: list[int]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UnetkitError(
                "--tensorboard needs the tensorboard package: pip install unetkit[tensorboard]"
            ) from None
        self.writer = SummaryWriter(log_dir=str(folder))
        self.mask_values = mask_values

    def log_epoch(self, row: dict[str, float], metrics: SegmentationMetrics | None) -> None:
        epoch = row.epoch
        self.writer.add_scalar("loss/train", row.train_loss, epoch)
        self.writer.add_scalar("lr", row.lr, epoch)
        if metrics is None:
            return
        self.writer.add_scalar("loss/val", row.val_loss, epoch)
        self.writer.add_scalar("val/dice", row.val_dice, epoch)
        self.writer.add_scalar("val/iou", row.val_iou, epoch)
        dice, iou = dice_from_confusion(metrics.matrix), iou_from_confusion(metrics.matrix)
        for k, value in enumerate(self.mask_values):
            if not torch.isnan(dice[k]):  # a class absent from truth and prediction has no score
                self.writer.add_scalar(f"dice_per_class/{value}", float(dice[k]), epoch)
                self.writer.add_scalar(f"iou_per_class/{value}", float(iou[k]), epoch)

    @torch.no_grad()
    def log_images(
        self, epoch: int, model: nn.Module, built: ModelSetup, val_set: SegmentationDataset, device: torch.device
    ) -> None:
        """Image | predicted mask | true mask, side by side, for the first few validation images
        (`model`: the one validated, the weights' average under --ema)."""
        model = model.eval()
        num_classes = max(2, len(self.mask_values))
        for index in range(min(IMAGES_PER_EPOCH, len(val_set))):
            image, mask = val_set[index]
            batch = image[None].to(device, memory_format=built.memory_format)
            with built.amp.autocast(device):
                predicted = predicted_classes(model(batch))[0].cpu()
            grey = image.float().mean(0)
            grey = (grey - grey.min()) / (grey.max() - grey.min()).clamp_min(1e-6)
            # Class ids as grey levels; ignored pixels show as class 0.
            truth = torch.where(mask == IGNORE_ID, 0, mask).float() / (num_classes - 1)
            panel = torch.cat([grey, predicted.float() / (num_classes - 1), truth], dim=1)
            self.writer.add_image(f"val/{index}: image | predicted | true", panel[None], epoch)

    def close(self) -> None:
        self.writer.close()
