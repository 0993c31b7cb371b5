"""The convolution ceiling of a model's tiled prediction: `python -m benchmarks.conv_ceiling
--checkpoint runs/demo/best.pt [--side 20000]`.

Runs one batch of predict's tiles out of core (Predictor.slide_plan: the tile and batch predict takes
there, e.g. one 768 px tile for a 16-channel model in bf16; 64 px overlap) through the
checkpoint's model as the Predictor prepares it (BatchNorm folded, ReLU fused, channels_last, bf16
where the CPU has it), records the input of every convolution, then times those convolutions alone, each on
a ready input of that shape, layout and dtype: what the tiles of a side x side image would cost if
nothing but the model's own convolutions ran. Mpx/s of that is the ceiling a slide's prediction is
measured against (benchmarks/large_tiff.py). Prints the CPU."""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from unetkit.inference import InferenceOptions, Predictor
from unetkit.inference.tiling import tile_starts
from unetkit.models.blocks import ConvReLU, SplitConvReLU, UpsampleSplitConvReLU
from unetkit.runtime.hardware import cpu_description

CONVOLUTIONS = (nn.Conv2d, nn.ConvTranspose2d, ConvReLU, SplitConvReLU)  # the fused ones never call their .conv


def recorded_convolutions(predictor: Predictor, x: torch.Tensor) -> list[tuple[nn.Module, torch.Tensor]]:
    """Every convolution of one forward of `x`, with an input like the one it got."""
    calls: list[tuple[nn.Module, torch.Tensor]] = []

    def keep(module: nn.Module, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> None:
        if isinstance(module, UpsampleSplitConvReLU):  # (skip, coarse map): the model's convolution reads it upsampled
            inputs = (inputs[0], F.interpolate(inputs[1], size=inputs[0].shape[-2:], mode="bilinear"))
        given = inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=1)  # SplitConvReLU: (skip, up)
        layout = torch.channels_last if given.is_contiguous(memory_format=torch.channels_last) else None
        ready = torch.randn(given.shape, dtype=given.dtype, device=given.device)
        # A fused convolution and ReLU (ConvReLU, SplitConvReLU) counts as its convolution alone.
        calls.append((getattr(module, "conv", module), ready.contiguous(memory_format=layout) if layout else ready))

    hooks = [m.register_forward_hook(keep) for m in predictor.model.modules() if isinstance(m, CONVOLUTIONS)]
    try:
        predictor.forward(x)
    finally:
        for hook in hooks:
            hook.remove()
    return calls


def batch_seconds(predictor: Predictor, calls: list[tuple[nn.Module, torch.Tensor]], repeats: int) -> float:
    """The fastest of `repeats` runs of the recorded convolutions alone (after one untimed run)."""
    best = math.inf
    with torch.inference_mode(), predictor.amp.autocast(predictor.device):
        for attempt in range(repeats + 1):
            started = time.perf_counter()
            for module, x in calls:
                module(x)
            if attempt:
                best = min(best, time.perf_counter() - started)
    return best


def conv_ceiling(checkpoint: str, side: int, tile: int | None = None, batch_size: int | None = None) -> dict:
    """Seconds and Mpx/s of the convolutions alone for the tiles of a side x side image, in the
    tiles and batches predict takes out of core (Predictor.slide_plan; `tile`, `batch_size`: its
    --tile and --batch-size)."""
    predictor = Predictor(checkpoint, options=InferenceOptions(tile=tile, batch_size=batch_size))
    _, tile, batch = predictor.slide_plan(side)
    x = torch.rand(batch, predictor.spec.in_channels, tile, tile)
    calls = recorded_convolutions(predictor, x)
    seconds = batch_seconds(predictor, calls, repeats=10)  # the fastest of 10: 3 varied by 1.4x
    tiles = len(tile_starts(side, tile, predictor.options.overlap)) ** 2
    total = seconds * math.ceil(tiles / batch)
    return {
        "tile": tile,
        "tiles_per_batch": batch,
        "convolutions_per_forward": len(calls),
        "seconds_per_batch_of_tiles": round(seconds, 4),
        "tiles": tiles,
        "ceiling_seconds": round(total, 1),
        "ceiling_mpx_per_second": round(side * side / 1e6 / total, 3),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.conv_ceiling", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="e.g. runs/demo/best.pt")
    parser.add_argument("--side", type=int, default=20000, help="the image's side in pixels (20000)")
    parser.add_argument("--tile", type=int, help="predict's --tile (default: predict's own out of core)")
    args = parser.parse_args(argv)
    results = {"cpu": cpu_description(), **conv_ceiling(args.checkpoint, args.side, args.tile)}
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
