"""The same network, two tools, one process: `python -m benchmarks.peers [--size 256 --batch 2]`.

milesial/Pytorch-UNet's training step and prediction as its own train.py and predict.py do them,
against unetkit's real Trainer step (`Trainer.train_one_epoch` over one ready batch, the pass the
CLI runs) and Predictor, on the paper's U-Net (64 base channels, 4 levels, transposed-conv
upsampling: 31M parameters, milesial's default `bilinear=False`). Read from milesial's code, not
copied: its UNet (DoubleConv = conv3x3 without bias, BN, ReLU, twice; MaxPool down; ConvTranspose
up, pad, concatenate), `model.to(channels_last)`, RMSprop (lr 1e-5, weight decay 1e-8, momentum
0.999, foreach), cross-entropy + multiclass Dice on the softmax, `torch.autocast` with `--amp`
(bf16 on a CPU), its GradScaler (CUDA's: disabled on a CPU), clipping at 1.0, and `loss.item()`
every step; predict.py: fp32, no autocast, softmax argmax, one image at a time.

Both sides see the same ready batch (no data loading: the step itself) on the same device
(`--device`: the CPU, or a CUDA GPU where milesial's `--amp` is fp16 autocast with its GradScaler
enabled, and each timed call ends with a synchronize); the repetitions alternate between the tools,
so a busy machine slows both alike. `--amp` is unetkit's (auto: bf16 where the device has it).
Prints the CPU, the GPU if any, and the ratios."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import PAPER, cpu_info, cpu_slug, save_results, write_synthetic_pngs
from benchmarks.training import OneBatch, epoch_runner, make_trainer
from unetkit.runtime.hardware import resolve_device

RESULTS = Path(__file__).parent / "results"
CPU = torch.device("cpu")


# --- milesial/Pytorch-UNet, as its unet_parts.py, unet_model.py, train.py and predict.py do it ---
def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )  # fmt: skip


class MilesialUp(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin // 2, kernel_size=2, stride=2)
        self.conv = double_conv(cin, cout)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        x1 = self.up(x1)
        dy, dx = x2.size(2) - x1.size(2), x2.size(3) - x1.size(3)
        x1 = F.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.conv(torch.cat([x2, x1], dim=1))


class MilesialUNet(nn.Module):
    def __init__(self, n_channels: int, n_classes: int) -> None:
        super().__init__()
        widths = [64, 128, 256, 512, 1024]
        self.inc = double_conv(n_channels, 64)
        levels = list(zip(widths, widths[1:], strict=False))  # (64, 128) ... (512, 1024)
        self.downs = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2), double_conv(a, b)) for a, b in levels)
        self.ups = nn.ModuleList(MilesialUp(b, a) for a, b in reversed(levels))
        self.outc = nn.Conv2d(64, n_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in self.ups:
            x = up(x, skips.pop())
        return self.outc(x)


def milesial_dice_loss(probs: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """utils/dice_score.py's multiclass dice_loss (reduce_batch_first over the flattened classes)."""
    probs, target = probs.flatten(0, 1), target.flatten(0, 1)
    inter = 2 * (probs * target).sum(dim=(-1, -2, -3))
    sets = probs.sum(dim=(-1, -2, -3)) + target.sum(dim=(-1, -2, -3))
    sets = torch.where(sets == 0, inter, sets)
    return 1 - ((inter + eps) / (sets + eps)).mean()


class MilesialStep:
    """train.py's inner loop for one batch, with `--amp`."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, n_classes: int = 2, device: torch.device = CPU):
        torch.manual_seed(0)
        self.model = MilesialUNet(images.shape[1], n_classes).to(device=device, memory_format=torch.channels_last)
        self.model.train()
        self.optimizer = torch.optim.RMSprop(self.model.parameters(), lr=1e-5, weight_decay=1e-8, momentum=0.999,
                                             foreach=True)  # fmt: skip
        # torch.cuda.amp.GradScaler(enabled=amp): on with --amp on a GPU, off on a CPU
        self.scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
        self.images = images.to(device=device, dtype=torch.float32, memory_format=torch.channels_last)
        self.masks, self.n_classes, self.loss_sum = masks.to(device).long(), n_classes, 0.0
        self.device = device

    def __call__(self) -> None:
        with torch.autocast(self.device.type, enabled=True):  # --amp: bf16 on a CPU, fp16 on a GPU
            pred = self.model(self.images)
            loss = F.cross_entropy(pred, self.masks)
            one_hot = F.one_hot(self.masks, self.n_classes).permute(0, 3, 1, 2).float()
            loss = loss + milesial_dice_loss(F.softmax(pred, dim=1).float(), one_hot)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.loss_sum += loss.item()  # epoch_loss += loss.item(), every step


def milesial_predict(model: nn.Module, image: torch.Tensor) -> Callable[[], None]:
    """predict.py's predict_img: fp32, no autocast, one image, argmax of the logits."""
    model.eval()

    def run() -> None:
        with torch.no_grad():
            output = model(image).cpu()
            output = F.interpolate(output, image.shape[-2:], mode="bilinear")
            output.argmax(dim=1)

    return run


def alternate(
    cases: dict[str, Callable[[], None]], warmup: int, reps: int, device: torch.device = CPU
) -> dict[str, float]:
    """Median seconds of each case, the repetitions taken in turn (a, b, a, b, ...); on a GPU each
    ends when the GPU has finished (a step that never reads its loss returns before that)."""
    finish = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(reps):
        for name, fn in cases.items():
            finish()
            start = time.perf_counter()
            fn()
            finish()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def unetkit_predict(checkpoint: Path, image: torch.Tensor, device: torch.device) -> Callable[[], None]:
    from unetkit.inference import InferenceOptions, Predictor

    predictor = Predictor(checkpoint, options=InferenceOptions(progress=False, tiling="off", device=str(device)))
    array = image[0].permute(1, 2, 0).numpy()
    return lambda: predictor.class_ids(array)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto: both tools run there (cpu)")
    parser.add_argument("--amp", default="auto", help="unetkit's --amp: auto, bf16, fp16 or off (auto)")
    args = parser.parse_args(argv)
    device, machine = resolve_device(args.device), cpu_info()
    machine["gpu"] = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print(f"CPU: {machine['cpu']}; GPU: {machine['gpu']}; torch {machine['torch']}")
    with tempfile.TemporaryDirectory(prefix="unetkit-peers-") as tmp:
        data = write_synthetic_pngs(Path(tmp) / "data", count=args.batch, side=args.size * 3 // 2)
        trainer = make_trainer(PAPER, data, args.size, args.batch, Path(tmp) / "run", str(device), args.amp)
        print(f"unetkit AMP: {trainer.built.amp.name}; milesial --amp: autocast on {device.type}")
        batch = tuple(next(iter(trainer.opt.loader)))
        trainer.opt.loader = OneBatch(batch)
        images, masks = batch[0].float().contiguous(), batch[1]
        milesial = MilesialStep(images, masks.clamp(0, 1), device=device)
        steps = {"unetkit": epoch_runner(trainer), "milesial --amp": milesial}
        train = alternate(steps, 2, args.reps, device)
        trainer.train_one_epoch(1)
        trainer._save_epoch(1, improved=True)
        image = images[:1]
        predicts = {"unetkit": unetkit_predict(Path(tmp) / "run" / "best.pt", image, device),
                    "milesial": milesial_predict(milesial.model, image.to(device))}  # fmt: skip
        infer = alternate(predicts, 2, args.reps, device)
    rows = {"train": train, "predict (batch 1)": infer}
    for what, seconds in rows.items():
        (ours, theirs) = seconds.values()
        per = args.batch if what == "train" else 1
        print(f"{what}: unetkit {per / ours:.2f} img/s, milesial {per / theirs:.2f} img/s: x{theirs / ours:.2f}")
    results = {"machine": machine, "device": str(device), "size": args.size, "batch": args.batch,
               "median_seconds": rows, "unetkit_amp": trainer.built.amp.name,
               "unetkit_channels_last": trainer.built.channels_last}  # fmt: skip
    gpu = "" if device.type == "cpu" else f"-{device.type}"
    name = f"peers-{time.strftime('%Y-%m-%d-%H%M')}-{cpu_slug()}{gpu}.json"
    print(f"wrote {save_results(RESULTS / name, results)}")
    return results


if __name__ == "__main__":
    main()
