"""Peak memory, each job in a fresh subprocess so one job's peak cannot hide another's.

The child runs one job and reports its own peak resident set size: VmHWM from /proc/self/status
at exit. Not getrusage's ru_maxrss: on Linux that survives fork + exec, so a child of a benchmark
process that has already grown to 2 GB reports at least 2 GB whatever it does (RUSAGE_CHILDREN in the
parent has the same floor, and keeps only the largest child). ru_maxrss is kept in the JSON as well.
Jobs:

  baseline  import torch and unetkit, nothing else: subtract it to see what the work itself costs.
  train     `steps` unetkit training steps (Trainer.train_one_epoch) at size x size, batch `batch`.
  tiled     Predictor.logits with tiling on, over one random side x side gray image.

Run one job by hand: python -m benchmarks.memory '{"job": "tiled", "model": "recipe", "side": 4096}'
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import PAPER, RECIPE, TINY, Settings

SPECS = {spec.name: spec for spec in (PAPER, RECIPE, TINY)}
REPO_ROOT = Path(__file__).resolve().parent.parent


def run_job(job: dict) -> dict:
    """In the child: do the job, return what it measured besides the peak."""
    import numpy as np

    if job["job"] == "baseline":
        import unetkit.inference  # noqa: F401
        import unetkit.train  # noqa: F401

        return {}
    spec = SPECS[job["model"]]
    if job["job"] == "train":
        from benchmarks.common import write_synthetic_pngs
        from benchmarks.training import make_trainer

        with tempfile.TemporaryDirectory(prefix="unetkit-bench-mem-") as tmp:
            data = write_synthetic_pngs(Path(tmp) / "data", job["batch"], job["size"] * 3 // 2)
            trainer = make_trainer(spec, data, job["size"], job["batch"], Path(tmp) / "run")
            for epoch in range(1, job["steps"] + 1):
                trainer.train_one_epoch(epoch)
        return {"amp": trainer.built.amp.compute_dtype, "channels_last": trainer.built.channels_last}
    if job["job"] == "tiled":
        from benchmarks.inference import checkpoint_state
        from unetkit.inference import InferenceOptions, Predictor

        overlap = job.get("overlap", min(64, job["tile"] // 4))  # Predictor's default 64 for 256+ tiles
        options = InferenceOptions(tiling="on", tile=job["tile"], overlap=overlap, backend="torch")
        predictor = Predictor(checkpoint_state(spec), device="cpu", options=options)
        image = np.random.default_rng(0).random((job["side"], job["side"], 1), dtype=np.float32)
        logits = predictor.logits(image)
        return {
            "amp": predictor.amp.compute_dtype,
            "backend": predictor.backend,
            "output_shape": list(logits.shape),
            "overlap": overlap,
            "tile_batch": predictor.batch_size,
        }
    raise ValueError(f"unknown job {job['job']!r}")


def measure_in_subprocess(job: dict, timeout: float = 1800) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", json.dumps(job)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        return {**job, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return {**job, **json.loads(done.stdout.strip().splitlines()[-1])}


def benchmark_memory(settings: Settings, log=print) -> list[dict]:
    jobs: list[dict] = [{"job": "baseline"}]
    size = max(settings.sizes)
    for spec in settings.models:
        batch = settings.batch_for(spec, size)
        jobs.append(
            {"job": "train", "model": spec.name, "size": size, "batch": batch, "steps": settings.memory_train_steps}
        )
    for name in settings.memory_models:
        jobs.append({"job": "tiled", "model": name, "side": settings.memory_image, "tile": settings.memory_tile})
    rows = []
    for job in jobs:
        result = measure_in_subprocess(job)
        row = {"section": "memory", **result}
        rows.append(row)
        what = " ".join(f"{k}={v}" for k, v in job.items() if k != "job")
        if "error" in result:
            log(f"  memory {job['job']:<8} {what}: FAILED ({result['error']})")
        else:
            log(f"  memory {job['job']:<8} {what}: peak RSS {result['peak_rss_mib']:.0f} MiB")
    return rows


def peak_rss_mib() -> float | None:
    """This process's peak resident set size (VmHWM), in MiB; None where /proc is missing."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return None


def main() -> None:
    job = json.loads(sys.argv[1])
    extra = run_job(job)
    maxrss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    peak = peak_rss_mib()
    print(json.dumps({"peak_rss_mib": maxrss_mib if peak is None else peak, "ru_maxrss_mib": maxrss_mib, **extra}))


if __name__ == "__main__":
    main()
