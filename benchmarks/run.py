"""unetkit benchmarks, one process, one run: `python -m benchmarks.run [--quick] [--only ...]`.

Prints the CPU first, then each measurement as it finishes, then one table, and writes all of it as
JSON (default benchmarks/results/<date>-<cpu>.json). See benchmarks/NOTES.md for what each number means.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime
from pathlib import Path

import torch

from benchmarks.common import Settings, cpu_info, cpu_slug, gemm_ceiling, save_results
from benchmarks.inference import benchmark_inference
from benchmarks.memory import benchmark_memory
from benchmarks.training import benchmark_training

SECTIONS = ("train", "infer", "memory")
RESULTS = Path(__file__).parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and iterations: a smoke test, < 1 minute")
    parser.add_argument("--only", choices=SECTIONS, action="append", help="run only this section (repeatable)")
    parser.add_argument("--iters", type=int, help="timed repetitions per case (default 3; 2 with --quick)")
    parser.add_argument(
        "--json", type=Path, help="where to write the results (default benchmarks/results/<date>-<cpu>.json)"
    )
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX export and ONNX Runtime timings")
    parser.add_argument(
        "--memory-models",
        help="comma-separated models for the tiled-inference memory job (default recipe; the paper "
        "U-Net on a 4096^2 image is ~40 TFLOP, minutes on a small CPU)",
    )
    return parser.parse_args(argv)


def measure_ceilings(n: int, bf16_in_use: bool) -> dict[str, float]:
    ceilings = {"fp32": gemm_ceiling(n)}
    if bf16_in_use:  # only when AMP auto computes in bf16 does a case need the bf16 ceiling
        ceilings["bf16"] = gemm_ceiling(n, torch.bfloat16)
    return ceilings


def describe(ceilings: dict[str, float]) -> str:
    return ", ".join(f"{dtype} {value:.0f} GFLOP/s" for dtype, value in ceilings.items())


def add_ceiling_fractions(rows: list[dict], ceilings: dict[str, float]) -> None:
    """Achieved GFLOP/s as a fraction of the GEMM ceiling of the precision the case computed in."""
    for row in rows:
        if "gflops" in row:
            ceiling = ceilings.get(row["dtype"], ceilings["fp32"])
            row["ceiling_gflops"] = ceiling
            row["ceiling_fraction"] = row["gflops"] / ceiling


def format_table(rows: list[dict]) -> str:
    lines = []
    speed = [r for r in rows if r["section"] in ("train", "infer")]
    if speed:
        header = (
            f"{'section':<7} {'model':<6} {'size':>5} {'batch':>5} {'variant':<11} {'dtype':<5} "
            f"{'img/s':>9} {'s/call':>8} {'vs naive':>8} {'GFLOP/img':>9} {'GFLOP/s':>8} {'of GEMM':>7}"
        )
        lines += [header, "-" * len(header)]
        for r in speed:
            lines.append(
                f"{r['section']:<7} {r['model']:<6} {r['size']:>5} {r['batch']:>5} {r['variant']:<11} "
                f"{r['dtype']:<5} {r['images_per_s']:>9.3f} {r['median_s']:>8.3f} {r['speedup_vs_naive']:>7.2f}x "
                f"{r['gflop_per_image']:>9.1f} {r['gflops']:>8.1f} {r['ceiling_fraction']:>6.1%}"
            )
    memory = [r for r in rows if r["section"] == "memory"]
    if memory:
        lines += ["", f"{'memory job':<10} {'model':<6} {'what':<34} {'peak RSS':>10}", "-" * 63]
        for r in memory:
            if r["job"] == "baseline":
                what = "import torch + unetkit only"
            elif r["job"] == "train":
                what = f"{r['steps']} train steps {r['size']}px batch {r['batch']}"
            else:
                what = f"tiled {r['side']}^2 image, tile {r['tile']}"
            peak = f"{r['peak_rss_mib']:>6.0f} MiB" if "peak_rss_mib" in r else "FAILED"
            lines.append(f"{r['job']:<10} {r.get('model', ''):<6} {what:<34} {peak:>10}")
    return "\n".join(lines)


def run(settings: Settings, sections: tuple[str, ...] = SECTIONS, log=print) -> dict:
    """Measure `sections` with `settings`; returns the JSON-ready results."""
    started = time.perf_counter()
    info = cpu_info()
    log(f"CPU: {info['cpu']}")
    log(f"native bf16: {'yes' if info['native_bf16'] else 'no'}; AMP auto -> {info['amp_reason']}")
    log(f"torch {info['torch']}, {info['threads']} threads")
    ceilings = measure_ceilings(settings.gemm_size, info["amp_auto"] == "bf16")
    log(f"GEMM ceiling (torch.mm, n={settings.gemm_size}), at the start: {describe(ceilings)}")
    rows: list[dict] = []
    if "train" in sections:
        log("training throughput:")
        rows += benchmark_training(settings, log)
    if "infer" in sections:
        log("inference throughput:")
        rows += benchmark_inference(settings, log)
    if "memory" in sections:
        log("peak memory (subprocesses):")
        rows += benchmark_memory(settings, log)
    # Measured again at the end and the better kept: on a busy machine one measurement can land in
    # a slow moment and make every fraction look too good.
    again = measure_ceilings(settings.gemm_size, info["amp_auto"] == "bf16")
    log(f"GEMM ceiling at the end: {describe(again)}")
    first, ceilings = ceilings, {dtype: max(value, again[dtype]) for dtype, value in ceilings.items()}
    add_ceiling_fractions(rows, ceilings)
    return {
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": info,
        "gemm_ceiling_gflops": ceilings,
        "gemm_ceiling_runs": {"start": first, "end": again},
        "settings": {
            "models": [spec.__dict__ for spec in settings.models],
            "sizes": settings.sizes,
            "train_batch": {f"{name}@{size}": b for (name, size), b in settings.train_batch.items()},
            "infer_batches": settings.infer_batches,
            "iters": settings.iters,
            "warmup": settings.warmup,
            "max_case_seconds": settings.max_case_seconds,
            "gemm_size": settings.gemm_size,
            "memory_image": settings.memory_image,
            "memory_tile": settings.memory_tile,
            "memory_models": settings.memory_models,
            "sections": list(sections),
        },
        "results": rows,
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    settings = Settings.quick() if args.quick else Settings.full()
    if args.iters is not None:
        settings.iters = args.iters
    if args.no_onnx:
        settings.onnx = False
    if args.memory_models:
        settings.memory_models = [name.strip() for name in args.memory_models.split(",") if name.strip()]
    sections = tuple(args.only) if args.only else SECTIONS
    results = run(settings, sections)
    results["quick"] = args.quick
    print()
    print(format_table(results["results"]))
    path = args.json or RESULTS / f"{datetime.now():%Y-%m-%d}-{cpu_slug()}{'-quick' if args.quick else ''}.json"
    save_results(path, results)
    print(f"\n{results['seconds']:.0f}s; results written to {path}")
    return results


if __name__ == "__main__":
    main()
