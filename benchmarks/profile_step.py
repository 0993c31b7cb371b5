"""Where the time goes: `python -m benchmarks.profile_step [--model recipe|paper]`.

Profiles (torch.profiler, self CPU time of each operator, so nothing counts twice) one training
step of the real Trainer over a ready batch, and tiled prediction of one slide band (a 1024 x
4096 strip, the default 512 px tiles: what out-of-core prediction runs per band), and sorts the
operators into kinds: convolutions (forward and backward), normalisation and activations,
concatenation and copies (cat, pad, layout changes), pooling and resampling, the loss, the
optimizer, blending (the Gaussian-weighted sums of the tiles) and the rest. Data loading is
timed apart (the loader's next batch: decode cache, crop, augmentation), as the share of a full
step. Prints the CPU."""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

from torch.profiler import ProfilerActivity, profile

from benchmarks.common import PAPER, RECIPE, cpu_info, cpu_slug, save_results, write_synthetic_pngs
from benchmarks.training import OneBatch, epoch_runner, make_trainer

RESULTS = Path(__file__).parent / "results"
KINDS = {  # an operator's kind: the first whose words its name holds
    "convolution": ("conv",),
    "normalisation and activation": ("batch_norm", "relu", "threshold", "sigmoid", "gelu"),
    "concatenation and copies": ("cat", "copy", "pad", "clone", "contiguous", "_to_copy", "empty", "as_strided"),
    "pooling and resampling": ("pool", "upsample", "interpolate"),
    "loss": ("softmax", "nll", "cross_entropy", "one_hot", "binary", "log_sigmoid", "dice"),
    "optimizer": ("_foreach", "adam", "addcdiv", "lerp", "sqrt", "clip", "norm"),
    "blending": ("mul", "add", "div"),
}


def kind_of(name: str) -> str:
    return next((kind for kind, words in KINDS.items() if any(w in name for w in words)), "other")


def shares(fn, repeats: int) -> dict[str, float]:
    """Each kind's share of `fn`'s operator time over `repeats` calls (after one untimed call)."""
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            fn()
    seconds: Counter[str] = Counter()
    for event in prof.key_averages():
        seconds[kind_of(event.key)] += event.self_cpu_time_total / 1e6
    total = sum(seconds.values())
    return {kind: round(value / total, 4) for kind, value in seconds.most_common()}


def loading_share(trainer, repeats: int) -> float:
    """The loader's share of a full training step (the step's own time measured bare)."""
    loader = trainer.opt.loader
    batches = iter(loader)
    started = time.perf_counter()
    for _ in range(repeats):
        try:
            next(batches)
        except StopIteration:
            batches = iter(loader)
            next(batches)
    loading = (time.perf_counter() - started) / repeats
    trainer.opt.loader = OneBatch(tuple(next(iter(loader))))
    step = epoch_runner(trainer)
    step()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    bare = (time.perf_counter() - started) / repeats
    return round(loading / (loading + bare), 4)


def band_profile(checkpoint: Path, repeats: int, shape: tuple[int, int]) -> dict[str, float]:
    import numpy as np

    from unetkit.inference import InferenceOptions, Predictor

    predictor = Predictor(checkpoint, options=InferenceOptions(progress=False, tiling="on"))
    band = np.random.default_rng(0).random((*shape, 1), dtype=np.float32)
    return shares(lambda: predictor.logits(band), repeats)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("recipe", "paper"), default="recipe")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--band", type=int, nargs=2, default=(1024, 4096), metavar=("ROWS", "COLUMNS"))
    args = parser.parse_args(argv)
    machine = cpu_info()
    print(f"CPU: {machine['cpu']}; torch {machine['torch']}; AMP {machine['amp_auto']}")
    spec = PAPER if args.model == "paper" else RECIPE
    with tempfile.TemporaryDirectory(prefix="unetkit-profile-") as tmp:
        data = write_synthetic_pngs(Path(tmp) / "data", count=args.batch * 4, side=args.size * 3 // 2)
        trainer = make_trainer(spec, data, args.size, args.batch, Path(tmp) / "run")
        loading = loading_share(trainer, args.repeats)
        step = shares(epoch_runner(trainer), args.repeats)
        trainer._save_epoch(1, improved=True)
        band = band_profile(Path(tmp) / "run" / "best.pt", max(1, args.repeats // 2), tuple(args.band))
    band_name = f"slide band {args.band[0]} x {args.band[1]}"
    for what, table in (("training step (model, loss, optimizer)", step), (band_name, band)):
        print(f"{what}:")
        for kind, share in table.items():
            print(f"  {kind:<32} {share:6.1%}")
    print(f"data loading: {loading:.1%} of a full step (batch {args.batch}, {args.size} px, workers 0)")
    results = {"machine": machine, "model": args.model, "size": args.size, "batch": args.batch, "band": args.band,
               "training_step": step, "slide_band": band, "loading_share_of_step": loading}  # fmt: skip
    name = f"profile-{time.strftime('%Y-%m-%d-%H%M')}-{cpu_slug()}-{args.model}.json"
    print(f"wrote {save_results(RESULTS / name, results)}")
    return results


if __name__ == "__main__":
    main()
