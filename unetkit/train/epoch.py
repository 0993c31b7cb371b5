"""One epoch of each kind, as the paper's loop reads: the training steps over the loader (forward
under autocast, loss, backward through the scaler, clip, step, average, schedule), and a
validation pass that scores every validation image whole. The Trainer (loop.py) calls them with
the pieces setup.py built."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from unetkit.models.heads import predicted_classes
from unetkit.runtime.progress import Progress, tell
from unetkit.scoring.metrics import SegmentationMetrics
from unetkit.train.config import TrainConfig
from unetkit.train.distributed import Distributed, unwrap
from unetkit.train.interrupt import InterruptFlag
from unetkit.train.setup import ModelSetup, Optimisation


def training_pass(
    cfg: TrainConfig,
    built: ModelSetup,
    opt: Optimisation,
    dist: Distributed,
    interrupt: InterruptFlag,
    label: str,
    progress: Progress | None = None,
    out_of_time: Callable[[int], bool] | None = None,
) -> tuple[float, int]:
    """The mean training loss of one pass over the loader and its batches, fewer than the
    loader's where `out_of_time(batches done)` said so after one; `progress` hears the images done (`label`:
    the epoch's, with the running loss)."""
    built.model.train()
    total_loss, batches, done = torch.zeros((), device=dist.device), 0, 0
    loader = opt.loader  # the images this rank sees in a pass: its sampler's, less a dropped last batch
    total = len(loader) * loader.batch_size if loader.drop_last else len(loader.sampler)
    what = f"epoch {label}"
    for images, masks, *pixel_weights in opt.loader:  # border weights when the run uses them
        images = images.to(dist.device, non_blocking=True, memory_format=built.memory_format)
        masks = masks.to(dist.device, non_blocking=True)
        weights = pixel_weights[0].to(dist.device, non_blocking=True) if pixel_weights else None
        with built.amp.autocast(dist.device):
            logits = built.model(images)
        loss = opt.criterion(logits, masks, weights)
        opt.optimizer.zero_grad(set_to_none=True)
        opt.scaler.scale(loss).backward()
        if cfg.grad_clip:
            opt.scaler.unscale_(opt.optimizer)
            clip_gradients(list(built.model.parameters()), cfg.grad_clip)
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
        if opt.average is not None:
            opt.average.update(unwrap(built.model))
        opt.schedule.step_batch()
        total_loss += loss.detach()
        batches += 1
        interrupt.check()
        done += images.shape[0]
        if progress is not None and (batches == 1 or batches % 5 == 0):  # .item() syncs: not every step
            what = f"epoch {label} loss {float(total_loss) / batches:.4f}"
        tell(progress, min(done, total), total, what)
        if out_of_time is not None and out_of_time(batches):
            break
    return float(total_loss) / max(1, batches), batches


def clip_gradients(parameters: list[nn.Parameter], max_norm: float) -> None:
    """nn.utils.clip_grad_norm_, without its multiply by 1.0 where the norm is within `max_norm`
    (on a CPU, where asking costs no wait for a device): a pass over every gradient saved in the
    steps that need no clipping, 87-98% of them in isbi2012 runs (benchmarks/NOTES.md). The same
    gradients, bit for bit: clip_grad_norm_ scales by max_norm / (norm + 1e-6), clamped to 1."""
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = nn.utils.get_total_norm(grads)
    if norm.device.type != "cpu" or not float(norm) + 1e-6 <= max_norm:  # a NaN norm scales too, as there
        nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)


@torch.no_grad()
def validation_pass(
    model: nn.Module,
    val_set: Sequence,
    built: ModelSetup,
    opt: Optimisation,
    dist: Distributed,
    metrics: SegmentationMetrics,
    interrupt: InterruptFlag,
) -> tuple[float, SegmentationMetrics]:
    """The mean loss and the scores (into `metrics`, empty) of `model` on the validation images,
    each whole; under torchrun each rank its share, then every rank gets the whole set's."""
    model.eval()
    dist.sync_buffers(model)
    total_loss = 0.0
    for index in dist.shard(len(val_set)):
        image, mask = val_set[index]
        image = image[None].to(dist.device, memory_format=built.memory_format)
        mask = mask[None].to(dist.device)
        with built.amp.autocast(dist.device):
            logits = model(image)
        total_loss += float(opt.criterion(logits, mask))
        metrics.update(predicted_classes(logits), mask)
        interrupt.check()
    if dist.enabled:
        dist.all_reduce_sum(metrics.matrix)
        total_loss = float(dist.all_reduce_sum(torch.tensor(total_loss, dtype=torch.float64)))
    return total_loss / max(1, len(val_set)), metrics
