"""Probes of a trained scene model on camvid-dev's unseen street that need no training run:
`python -m benchmarks.scene_probes CHECKPOINT [--scales 0.75,1,1.5] [--tta] [--adapt-bn]`.

  --scales: average the softmax over the model run at these multiples of its own scale
  --tta:    and over the left-right mirror (what `--tta` does for an upright model)
  --adapt-bn: first recompute every BatchNorm's statistics on the 50 validation images
            (AdaBN, Li et al. 2016): does the street's gap live in the feature statistics?
  --ceiling SCALE: no model: the masks resized to SCALE and back (nearest), the resolution's
            own limit on mIoU

Prints mIoU over the 11 classes (void, id 11, ignored) and each class's IoU, and the CPU.
Results are in benchmarks/NOTES.md (issue 23, eleventh session).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unetkit.data.dataset import SegmentationDataset
from unetkit.data.io import read_image
from unetkit.data.pairing import Pair
from unetkit.inference import InferenceOptions, Predictor
from unetkit.models.checkpoint import load_checkpoint
from unetkit.models.spec import ModelSpec
from unetkit.runtime.hardware import cpu_description

CLASSES, VOID = 11, 11


def val_names(root: Path) -> list[str]:
    return json.loads((root / "split.json").read_text())["val"]


def adapted_state(checkpoint: str, root: Path) -> dict:
    """The checkpoint with BatchNorm's running statistics recomputed on the validation images."""
    state = load_checkpoint(checkpoint)
    spec = ModelSpec.from_state(state)
    model = spec.build()
    model.load_state_dict(state["model"])
    pairs = [Pair(root / "images" / f"{n}.png", root / "masks" / f"{n}.png") for n in val_names(root)]
    images = SegmentationDataset(pairs, spec.mask_values, spec.preprocess)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a plain mean over the images
    model.train()
    with torch.no_grad():
        for index in range(len(images)):
            model(images[index][0][None])
    return {**state, "model": model.state_dict()}


def scores(predict, root: Path) -> np.ndarray:
    """Per-class IoU over the validation frames of `predict(name) -> (H, W) class ids`."""
    inter, union = np.zeros(CLASSES), np.zeros(CLASSES)
    for name in val_names(root):
        truth = np.array(Image.open(root / "masks" / f"{name}.png"))
        predicted, valid = predict(name), truth != VOID
        for c in range(CLASSES):
            inter[c] += ((truth == c) & (predicted == c) & valid).sum()
            union[c] += (((truth == c) | (predicted == c)) & valid).sum()
    return inter / union


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?")
    parser.add_argument("--data", default="../shared/data/camvid-dev")
    parser.add_argument("--scales", default="1")
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--adapt-bn", action="store_true")
    parser.add_argument("--ceiling", type=float)
    args = parser.parse_args()
    root = Path(args.data)
    print(cpu_description())
    if args.ceiling:

        def predict(name: str) -> np.ndarray:
            mask = Image.open(root / "masks" / f"{name}.png")
            small = (round(mask.width * args.ceiling), round(mask.height * args.ceiling))
            return np.array(mask.resize(small, Image.NEAREST).resize(mask.size, Image.NEAREST))

    else:
        state = adapted_state(args.checkpoint, root) if args.adapt_bn else load_checkpoint(args.checkpoint)
        options = InferenceOptions(tta=args.tta, backend="torch")
        predictors = []
        for factor in (float(s) for s in args.scales.split(",")):
            predictor = Predictor(state, options=options)
            scale = predictor.preprocess.scale * factor
            predictor.preprocess = dataclasses.replace(predictor.preprocess, scale=scale)
            predictors.append(predictor)

        def predict(name: str) -> np.ndarray:
            image = read_image(root / "images" / f"{name}.png")
            probabilities = sum(torch.softmax(p.logits(image), 1) for p in predictors)
            return probabilities[0].argmax(0).numpy()

    iou = scores(predict, root)
    print(f"mIoU {iou.mean():.3f}  per class " + " ".join(f"{x:.2f}" for x in iou))


if __name__ == "__main__":
    main()
