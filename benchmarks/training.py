"""Training throughput (images/s) of three ways to run one training step of the same U-Net:

unetkit  the real `Trainer.train_one_epoch`: DataLoader over the cached SegmentationDataset with
         random-patch augmentation, AMP policy, channels_last if faster, GradScaler, grad clipping,
         ce+dice loss, AdamW and the scheduler; each timed repetition is one epoch of one batch.
bare     the same `Trainer.train_one_epoch`, with the DataLoader swapped for one ready-made batch:
         the model step alone, without data loading and augmentation.
naive    the plain way: NCHW, eager, fp32, PNGs decoded from disk every step (no cache), a
         random crop, BCE loss, AdamW, `loss.item()` after every step.
"""

from __future__ import annotations

import dataclasses
import random
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from benchmarks.common import ModelSpec, Settings, measure, model_gflop, write_synthetic_pngs
from unetkit.data import find_pairs
from unetkit.demo import demo_config
from unetkit.train import Trainer, plan_run


def make_trainer(
    spec: ModelSpec, data: tuple[Path, Path], size: int, batch: int, out: Path, device: str = "auto", amp: str = "auto"
) -> Trainer:
    """A Trainer with the demo recipe's settings, at this model shape, patch size and batch, on
    `device` with `amp` (unetkit train's --device and --amp); the data set holds `batch` images, so
    one epoch is exactly one training step."""
    cfg = dataclasses.replace(
        demo_config(out, progress=False, amp=amp),
        device=device,
        base_channels=spec.base_channels,
        depth=spec.depth,
        upsampling=spec.upsampling,
        elastic=spec.elastic,
        scale=1.0,  # the model sees size x size patches, whatever the recipe's scale
        patch_size=size,
        patches_per_image=1,
        batch_size=batch,
        epochs=10_000,  # keep the cosine schedule away from its end
        time=None,  # the demo trains against a clock; a benchmark counts steps
        min_epochs=None,
    )
    pairs = find_pairs(*data)
    return Trainer(plan_run(cfg, train_pairs=pairs, val_pairs=[], log=lambda _: None))


class OneBatch:
    """Stands in for the DataLoader: yields the same ready-made batch, once per epoch."""

    def __init__(self, batch: tuple[torch.Tensor, ...]) -> None:
        self.batch = batch  # images, masks and, with border weights, the pixel weights
        # what the training pass reads of a DataLoader to count its images
        self.dataset = self.sampler = range(batch[0].shape[0])
        self.batch_size, self.drop_last = batch[0].shape[0], False

    def __len__(self) -> int:
        return 1

    def __iter__(self):
        yield self.batch


class NaiveTrainer:
    """Training the plain way, on purpose: what the speed-ups are measured against."""

    def __init__(self, spec: ModelSpec, data: tuple[Path, Path], size: int, batch: int) -> None:
        torch.manual_seed(0)
        self.model = spec.build()
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.images = sorted(data[0].glob("*.png"))
        self.masks = sorted(data[1].glob("*.png"))
        self.size, self.batch, self.next = size, batch, 0
        self.rng = random.Random(0)

    def load(self) -> tuple[torch.Tensor, torch.Tensor]:
        index = self.next % len(self.images)
        self.next += 1
        image = np.asarray(Image.open(self.images[index]), dtype=np.float32) / 255
        mask = np.asarray(Image.open(self.masks[index])) > 127
        top = self.rng.randint(0, image.shape[0] - self.size)
        left = self.rng.randint(0, image.shape[1] - self.size)
        crop = (slice(top, top + self.size), slice(left, left + self.size))
        x = (torch.from_numpy(image[crop].copy()) - 0.5) / 0.25
        return x[None], torch.from_numpy(mask[crop].copy()).float()[None]

    def step(self) -> float:
        pairs = [self.load() for _ in range(self.batch)]
        x = torch.stack([p[0] for p in pairs])
        y = torch.stack([p[1] for p in pairs])
        loss = F.binary_cross_entropy_with_logits(self.model(x), y)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item()


def epoch_runner(trainer: Trainer):
    """A no-argument callable that runs the trainer's next epoch (one step here)."""
    epochs = iter(range(1, 1_000_000))
    return lambda: trainer.train_one_epoch(next(epochs))


def benchmark_training(settings: Settings, log=print) -> list[dict]:
    rows: list[dict] = []
    for spec in settings.models:
        for size in settings.sizes:
            batch = settings.batch_for(spec, size)
            gflop = model_gflop(spec, size, training=True)
            with tempfile.TemporaryDirectory(prefix="unetkit-bench-") as tmp:
                # Images 1.5x the patch, so crops land at random places, as in real training.
                data = write_synthetic_pngs(Path(tmp) / "data", count=batch, side=size * 3 // 2)
                trainer = make_trainer(spec, data, size, batch, Path(tmp) / "run")
                policy = {"amp": trainer.built.amp.compute_dtype, "channels_last": trainer.built.channels_last}
                full_step = epoch_runner(trainer)

                timings = {"unetkit": measure(full_step, settings.warmup, settings.iters, settings.max_case_seconds)}

                trainer.opt.loader = OneBatch(tuple(next(iter(trainer.opt.loader))))
                timings["bare"] = measure(full_step, settings.warmup, settings.iters, settings.max_case_seconds)

                naive = NaiveTrainer(spec, data, size, batch)
                timings["naive"] = measure(naive.step, settings.warmup, settings.iters, settings.max_case_seconds)

            naive_rate = batch / timings["naive"]["median_s"]
            for variant, timing in timings.items():
                rate = batch / timing["median_s"]
                row = {
                    "section": "train",
                    "model": spec.name,
                    "size": size,
                    "batch": batch,
                    "variant": variant,
                    "images_per_s": rate,
                    "speedup_vs_naive": rate / naive_rate,
                    "gflop_per_image": gflop,
                    "gflops": gflop * rate,
                    "dtype": "fp32" if variant == "naive" else policy["amp"],
                    "channels_last": False if variant == "naive" else policy["channels_last"],
                    **timing,
                }
                rows.append(row)
                log(
                    f"  train {spec.name:<6} {size:>4}px batch {batch}  {variant:<7} "
                    f"{rate:8.3f} img/s  ({timing['median_s']:.3f}s/step, x{row['speedup_vs_naive']:.2f} vs naive)"
                )
    return rows
