"""Inference throughput (images/s) of one forward pass over a batch of size x size images:

naive        eager PyTorch the plain way: fp32, NCHW, torch.no_grad().
unetkit      the Predictor's forward (`Predictor._forward`, what predict_tiled calls for every
             batch of tiles): inference_mode, the AMP policy (bf16 where the CPU has it), output
             back to float32. Predictor does not switch to channels_last today.
unetkit+cl   the same, plus channels_last for model and input; measured only where
             unetkit.runtime.hardware.channels_last_is_faster() says NHWC wins, to show what Predictor
             would gain from it (Trainer already uses it).
onnxruntime  the model exported with unetkit.inference.export.onnx.export_onnx, run by unetkit's OnnxModel
             (CPUExecutionProvider, fp32); skipped when onnx/onnxruntime are missing.
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import ModelSpec, Settings, measure, model_gflop
from unetkit.data import MaskValues, Preprocess
from unetkit.inference import InferenceOptions, Predictor
from unetkit.runtime.hardware import channels_last_is_faster
from unetkit.train import save_checkpoint


def checkpoint_state(spec: ModelSpec) -> dict[str, Any]:
    """A checkpoint dict as training writes it (untrained weights: speed does not depend on them)."""
    torch.manual_seed(0)
    model = spec.build().eval()
    return {
        "model_name": "unet",
        "model_args": spec.model_args(),
        "model": model.state_dict(),
        "mask_values": MaskValues([0, 255]).to_dict(),
        "preprocess": Preprocess(in_channels=1).to_dict(),
        "binary": True,
    }


def onnx_forward(state: dict[str, Any], folder: Path, log=print):
    """Export through unetkit's own path; None (with a note) when ONNX support is missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        log("  onnxruntime: skipped (onnx/onnxruntime not installed)")
        return None
    from unetkit.inference.export.onnx import export_onnx
    from unetkit.inference.onnx_runtime import OnnxModel

    checkpoint = folder / "model.pt"
    save_checkpoint(checkpoint, state)
    difference = export_onnx(checkpoint, folder / "model.onnx")
    log(f"  onnx export: max |ONNX - PyTorch| logit difference {difference:.2e}")
    return OnnxModel(folder / "model.onnx")


def eager_no_grad(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def benchmark_inference(settings: Settings, log=print) -> list[dict]:
    rows: list[dict] = []
    cpu = torch.device("cpu")
    for spec in settings.models:
        state = checkpoint_state(spec)
        naive_model = spec.build()
        naive_model.load_state_dict(state["model"])
        naive_model.eval()
        # The PyTorch path: ONNX Runtime gets its own rows below (Predictor's auto could pick it in fp32).
        torch_only = InferenceOptions(backend="torch")
        predictor = Predictor(state, device="cpu", options=torch_only)
        cl_faster = channels_last_is_faster(cpu, predictor.amp.dtype)
        cl_predictor = None
        if cl_faster:
            cl_predictor = Predictor(state, device="cpu", options=torch_only)
            cl_predictor.model = cl_predictor.model.to(memory_format=torch.channels_last)
        else:
            log("  unetkit+cl: skipped (channels_last_is_faster() says NCHW is faster on this CPU)")
        cases = [(size, batch) for size in settings.sizes for batch in settings.infer_batches]
        inputs = {
            case: torch.randn(case[1], 1, case[0], case[0], generator=torch.Generator().manual_seed(0))
            for case in cases
        }
        naive_rates: dict[tuple[int, int], float] = {}

        def record(variant, dtype, size, batch, timing, spec=spec, naive_rates=naive_rates) -> None:
            rate = batch / timing["median_s"]
            naive_rates.setdefault((size, batch), rate)  # naive runs first
            gflop = model_gflop(spec, size, training=False)
            rows.append(
                {
                    "section": "infer",
                    "model": spec.name,
                    "size": size,
                    "batch": batch,
                    "variant": variant,
                    "images_per_s": rate,
                    "speedup_vs_naive": rate / naive_rates[(size, batch)],
                    "gflop_per_image": gflop,
                    "gflops": gflop * rate,
                    "dtype": dtype,
                    "channels_last": variant == "unetkit+cl",
                    **timing,
                }
            )
            log(
                f"  infer {spec.name:<6} {size:>4}px batch {batch}  {variant:<11} "
                f"{rate:8.3f} img/s  (x{rate / naive_rates[(size, batch)]:.2f} vs naive)"
            )

        # PyTorch first, ONNX Runtime after: ORT's worker threads spin for a while after each run
        # and would steal cores from a PyTorch case timed right after it.
        for size, batch in cases:
            x = inputs[(size, batch)]
            backends = {
                "naive": (partial(eager_no_grad, naive_model, x), "fp32"),
                "unetkit": (partial(predictor._forward, x), predictor.amp.compute_dtype),
            }
            if cl_predictor is not None:
                x_cl = x.contiguous(memory_format=torch.channels_last)
                backends["unetkit+cl"] = (partial(cl_predictor._forward, x_cl), cl_predictor.amp.compute_dtype)
            for variant, (fn, dtype) in backends.items():
                timing = measure(fn, settings.warmup, settings.iters, settings.max_case_seconds)
                record(variant, dtype, size, batch, timing)
        if settings.onnx:
            with tempfile.TemporaryDirectory(prefix="unetkit-bench-onnx-") as tmp:
                onnx_model = onnx_forward(state, Path(tmp), log)
                for size, batch in cases if onnx_model is not None else []:
                    timing = measure(
                        partial(onnx_model, inputs[(size, batch)]),
                        settings.warmup,
                        settings.iters,
                        settings.max_case_seconds,
                    )
                    record("onnxruntime", "fp32", size, batch, timing)
    return rows
