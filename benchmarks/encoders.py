"""Speed of each tested encoder under the U-Net decoder on this CPU: `python -m benchmarks.encoders`
(needs the encoders extra: timm). For each name `unetkit encoders` lists, and the default U-Net
for comparison: a training step (forward, cross-entropy, backward, AdamW) and a forward pass in
eval mode, RGB, 2 classes, at `--size` px and `--batch` images, under the AMP policy unetkit
picks on this CPU and channels_last; images/s, median of `--reps` after a warm-up. Prints the CPU."""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import cpu_info, cpu_slug, save_results
from unetkit.models import create_model
from unetkit.models.encoder_unet import ENCODERS
from unetkit.runtime.amp import resolve_amp

RESULTS = Path(__file__).parent / "results"


def median_seconds(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rates(model: torch.nn.Module, size: int, batch: int, reps: int) -> dict[str, float]:
    device = torch.device("cpu")
    amp = resolve_amp("auto", device)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size).to(memory_format=torch.channels_last)
    target = torch.randint(0, 2, (batch, size, size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        with amp.autocast(device):
            logits = model.train()(x)
        loss = F.cross_entropy(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def forward() -> None:
        with torch.inference_mode(), amp.autocast(device):
            model.eval()(x)

    return {"train_images_per_s": batch / median_seconds(step, reps),
            "predict_images_per_s": batch / median_seconds(forward, reps)}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.encoders", description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="these encoders only (default: every tested one)")
    args = parser.parse_args(argv)
    machine = cpu_info()
    print(f"CPU: {machine['cpu']}; torch {machine['torch']}; AMP {machine['amp_auto']}")
    print(f"{args.size} px, batch {args.batch}, RGB, 2 classes, channels_last")
    rows = {}
    models = {"unet (the recipe's: 16 base, bilinear)": ("unet", {"base_channels": 16, "upsampling": "bilinear"})}
    models |= {name: ("encoder-unet", {"encoder": name}) for name in (args.only or ENCODERS)}
    for label, (name, options) in models.items():
        torch.manual_seed(0)
        model = create_model(name, in_channels=3, num_classes=2, **options)
        row = {"parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}
        row |= rates(model, args.size, args.batch, args.reps)
        rows[label] = row
        print(f"{label:<40} {row['parameters_m']:6.1f}M  train {row['train_images_per_s']:6.2f} img/s  "
              f"predict {row['predict_images_per_s']:6.2f} img/s")  # fmt: skip
    results = {"machine": machine, "size": args.size, "batch": args.batch, "models": rows}
    name = f"encoders-{time.strftime('%Y-%m-%d-%H%M')}-{cpu_slug()}.json"
    print(f"wrote {save_results(RESULTS / name, results)}")
    return results


if __name__ == "__main__":
    main()
