"""A trained model, ready to turn images into masks: the checkpoint's model, preprocessing and
mask values together, so a prediction is made exactly the way training saw its data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from unetkit.data import MaskValues, Preprocess, read_image
from unetkit.hardware import resolve_device
from unetkit.metrics import predicted_classes
from unetkit.train.amp import resolve_amp
from unetkit.train.checkpoint import load_checkpoint, model_from_checkpoint


class Predictor:
    def __init__(self, checkpoint: str | Path | dict[str, Any], device: str = "auto", amp: str = "auto") -> None:
        """`checkpoint`: a best.pt/last.pt, a .safetensors export, or an already loaded state."""
        state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
        self.device = resolve_device(device)
        source = "checkpoint" if isinstance(checkpoint, dict) else checkpoint
        self.model = model_from_checkpoint(state, source).to(self.device)
        self.mask_values = MaskValues.from_dict(state["mask_values"])
        self.preprocess = Preprocess(**state["preprocess"])
        self.binary: bool = state["binary"]
        self.amp = resolve_amp(amp, self.device)

    @property
    def num_classes(self) -> int:
        return self.mask_values.num_classes

    @torch.no_grad()
    def logits(self, image: np.ndarray, path: str | Path = "image") -> torch.Tensor:
        """(H, W, C) image in [0, 1] -> (1, K, H, W) float32 logits at the image's own size."""
        height, width = image.shape[:2]
        x = self.preprocess.image_tensor(image, Path(path))[None].to(self.device)
        with self.amp.autocast(self.device):
            logits = self.model(x)
        logits = logits.float()
        if logits.shape[-2:] != (height, width):  # the model ran at a scaled size
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        return logits

    def class_ids(self, image: np.ndarray, path: str | Path = "image", threshold: float = 0.5) -> np.ndarray:
        """(H, W) class ids for an (H, W, C) image."""
        return predicted_classes(self.logits(image, path), threshold)[0].cpu().numpy().astype(np.uint8)

    def predict_file(self, path: str | Path, threshold: float = 0.5) -> np.ndarray:
        """The mask, in the original mask values, for one image file."""
        return self.mask_values.decode(self.class_ids(read_image(path), path, threshold))
