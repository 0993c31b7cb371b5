"""Generate the figures of the docs/ concept pages: `python docs/make_figures.py [--out docs/figures]`.

Each figure is computed from unetkit's own code on this machine, so the pages show what the
code does, not what it is said to do. All but `dumbnet_vs_unet` take seconds; that one trains
two small models on the bundled demo data (1.5 minutes each, then their scoring: ~5 minutes on 2
cores) and can be skipped with
--skip-training.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unetkit.data import find_pairs, read_image, read_mask
from unetkit.demo import DEMO_DATA, HELDOUT_SLICES, TRAIN_SLICES, VAL_SLICES, demo_config
from unetkit.models import create_model
from unetkit.runtime.amp import cpu_has_native_bf16
from unetkit.runtime.hardware import cpu_description
from unetkit.scoring.metrics import confusion_matrix, dice_from_confusion, iou_from_confusion
from unetkit.train.schedulers import SCHEDULERS, Schedule

DPI = 80  # small PNGs: they are committed to the repository


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    _pyplot().close(figure)
    return path


def _demo_slice(index: int) -> tuple[np.ndarray, np.ndarray]:
    """(image in [0, 1] as (H, W), mask as class ids: 0 membrane, 1 cell) of one demo slice."""
    name = f"{index:02d}.png"
    image = read_image(DEMO_DATA / "images" / name)[..., 0]
    mask = (read_mask(DEMO_DATA / "masks" / name) == 255).astype(np.int64)
    return image, mask


# --- Dice vs F1 vs IoU (unetkit/scoring/metrics.py) ---
def figure_dice_iou(out: Path) -> Path:
    """Dice, F1 and IoU of real predictions: each demo slice's membranes predicted by an intensity
    threshold (membranes are dark), at several thresholds to spread the scores out."""
    plt = _pyplot()
    dice_points, iou_points, f1_gaps = [], [], []
    for index in range(0, 30, 6):
        image, truth = _demo_slice(index)
        for threshold in np.linspace(0.15, 0.75, 9):
            pred = torch.from_numpy((image > threshold).astype(np.int64))
            matrix = confusion_matrix(pred, torch.from_numpy(truth), 2)
            dice, iou = dice_from_confusion(matrix), iou_from_confusion(matrix)
            for k in (0, 1):  # membrane and cell, each scored as "the" class
                tp, fp, fn = (
                    float(matrix[k, k]),
                    float(matrix[:, k].sum() - matrix[k, k]),
                    float(matrix[k].sum() - matrix[k, k]),
                )
                precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
                f1 = 2 * precision * recall / max(precision + recall, 1e-12)
                f1_gaps.append(abs(f1 - float(dice[k])))
                dice_points.append(float(dice[k]))
                iou_points.append(float(iou[k]))
    figure, axis = plt.subplots(figsize=(5.2, 4.2))
    axis.scatter(dice_points, iou_points, s=10, alpha=0.6, label="predictions on demo slices")
    d = np.linspace(0, 1, 200)
    axis.plot(d, d / (2 - d), "k", lw=1, label="IoU = D / (2 - D)")
    axis.plot(d, d, ":", color="grey", lw=1, label="IoU = D")
    axis.set_xlabel("Dice (= F1)")
    axis.set_ylabel("IoU (Jaccard)")
    axis.set_title(f"{len(dice_points)} scores; max |F1 - Dice| = {max(f1_gaps):.1e}", fontsize=9)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return _save(figure, out / "dice_iou.png")


# --- transposed convolution vs bilinear upsampling (unetkit/models/blocks.py) ---
def figure_upsampling(out: Path) -> Path:
    plt = _pyplot()
    torch.manual_seed(0)
    image, _ = _demo_slice(0)
    small = torch.from_numpy(image[::8, ::8].copy())[None, None]  # 64x64, upsampled to 128x128
    flat = torch.ones(1, 1, 16, 16)  # a constant input: any pattern in the output is the layer's own
    bilinear = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
    transposed_2 = nn.ConvTranspose2d(1, 1, 2, stride=2, bias=False)  # unetkit's choice: kernel = stride
    transposed_3 = nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1, output_padding=1, bias=False)  # uneven overlap
    layers = {"bilinear": bilinear, "transposed k=2 s=2": transposed_2, "transposed k=3 s=2": transposed_3}
    figure, axes = plt.subplots(2, 4, figsize=(9, 4.8))
    axes[0, 0].imshow(small[0, 0], cmap="gray")
    axes[0, 0].set_title("input 64x64")
    axes[1, 0].imshow(flat[0, 0], cmap="gray", vmin=0, vmax=2)
    axes[1, 0].set_title("constant input 16x16")
    with torch.no_grad():
        for column, (name, layer) in enumerate(layers.items(), start=1):
            axes[0, column].imshow(layer(small)[0, 0], cmap="gray")
            axes[0, column].set_title(name)
            response = layer(flat)[0, 0]
            axes[1, column].imshow(response, cmap="magma")
            axes[1, column].set_title(f"constant in: std {float(response[2:-2, 2:-2].std()):.3f}", fontsize=9)
    for axis in axes.flat:
        axis.set_axis_off()
    unet = {
        kind: sum(p.numel() for p in create_model("unet", in_channels=1, num_classes=2, upsampling=kind).parameters())
        for kind in ("transposed", "bilinear")
    }
    figure.suptitle(
        "U-Net (base 64, depth 4) parameters: transposed {:.2f}M, bilinear {:.2f}M".format(
            unet["transposed"] / 1e6, unet["bilinear"] / 1e6
        ),
        fontsize=10,
    )
    return _save(figure, out / "upsampling.png")


# --- AMP (unetkit/runtime/amp.py) ---
def _time(function: Callable[[], object], repeats: int = 5) -> float:
    function()  # warm-up: first calls pick kernels
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats


def figure_amp(out: Path, size: int = 128) -> Path:
    """`size`: the timed input's side; the docs' figure uses 128, the render test less (bf16 on an
    AVX2-only CPU made the 128 px timing 9.6 s of the test suite)."""
    plt = _pyplot()
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 32, 3, padding=1)
    x = torch.randn(4, 32, size, size)

    def forward_backward(dtype: torch.dtype | None) -> Callable[[], object]:
        def run() -> object:
            conv.zero_grad()
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                y = conv(x.requires_grad_(False))
            y.float().square().mean().backward()
            return y

        return run

    seconds = {
        name: _time(forward_backward(dtype)) for name, dtype in (("fp32", None), ("bf16 autocast", torch.bfloat16))
    }
    with torch.autocast("cpu", dtype=torch.bfloat16):
        dtypes = {
            "conv2d": conv(x[:1]).dtype,
            "matmul": (x[0, 0] @ x[0, 0]).dtype,
            "softmax": torch.softmax(x[:1], 1).dtype,
            "sum": x[:1].sum().dtype,
        }
    figure, axis = plt.subplots(figsize=(6.4, 3.4))
    bars = axis.bar(list(seconds), [1000 * s for s in seconds.values()], color=["tab:blue", "tab:orange"])
    axis.bar_label(bars, fmt="%.0f ms")
    axis.set_ylabel("3x3 conv 32->32, 4x128x128, fwd+bwd")
    native = "native bf16" if cpu_has_native_bf16() else "no native bf16"
    axis.set_title(
        f"{cpu_description()[:70]}\n({native}); under bf16 autocast: "
        + ", ".join(f"{k} {str(v).replace('torch.', '')}" for k, v in dtypes.items()),
        fontsize=7,
    )
    (out / "amp.json").write_text(
        json.dumps(
            {
                "cpu": cpu_description(),
                "native_bf16": cpu_has_native_bf16(),
                "seconds": seconds,
                "autocast_dtypes": {k: str(v) for k, v in dtypes.items()},
            },
            indent=2,
        )
        + "\n"
    )
    return _save(figure, out / "amp.png")


# --- The 3x3 convolution's weight gradient (unetkit/models/conv3x3.py) ---
def figure_weight_gradient(out: Path, size: int = 128) -> Path:
    """oneDNN's weight gradient against one im2col GEMM for the second 3x3 convolution of each
    level of the paper's U-Net (64 ... 1024 channels), batch 2 at `size` px, channels_last, in bf16
    where the CPU has it natively, else fp32: which way wins depends on the level and the CPU."""
    from unetkit.models.conv3x3 import onednn_backward, weight_gradient_gemm

    plt = _pyplot()
    torch.manual_seed(0)
    dtype = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    rows = []
    for level, channels in enumerate([64, 128, 256, 512, 1024]):
        side = max(2, size >> level)
        x, grad = (torch.randn(2, channels, side, side, dtype=dtype).contiguous(memory_format=torch.channels_last)
                   for _ in range(2))  # fmt: skip
        weight = torch.randn(channels, channels, 3, 3, dtype=dtype).contiguous(memory_format=torch.channels_last)
        onednn = _time(lambda x=x, weight=weight, grad=grad: onednn_backward(x, weight, grad, False, True))
        gemm = _time(lambda x=x, grad=grad: weight_gradient_gemm(x, grad))
        rows.append({"channels": channels, "side": side, "onednn_s": onednn, "gemm_s": gemm})
    figure, axis = plt.subplots(figsize=(6.4, 3.4))
    positions = np.arange(len(rows))
    for offset, key, label in ((-0.2, "onednn_s", "oneDNN (PyTorch's)"), (0.2, "gemm_s", "one GEMM (im2col)")):
        axis.bar(positions + offset, [1000 * r[key] for r in rows], width=0.4, label=label)
    axis.set_xticks(positions, [f"{r['channels']}ch\n{r['side']}px" for r in rows])
    axis.set_ylabel(f"weight gradient, batch 2, {str(dtype).replace('torch.', '')} (ms)")
    axis.set_yscale("log")
    for axis_ticks in (axis.yaxis.set_major_formatter, axis.yaxis.set_minor_formatter):
        axis_ticks(lambda value, _position: f"{value:g}")
    axis.legend(fontsize=8)
    axis.set_title(f"{cpu_description()[:70]}\nthe 3x3 convolution's weight gradient, two ways", fontsize=8)
    (out / "weight_gradient.json").write_text(
        json.dumps({"cpu": cpu_description(), "dtype": str(dtype), "layers": rows}, indent=2) + "\n"
    )
    return _save(figure, out / "weight_gradient.png")


# --- Winograd's F(2x2, 3x3) (unetkit/models/winograd.py) ---
def figure_winograd(out: Path, size: int = 256) -> Path:
    """PyTorch's 3x3 convolution against Winograd's F(2x2, 3x3), forward and backward, for the
    second convolution of each level of the paper's U-Net (64 ... 1024 channels), batch 2 at
    `size` px, channels_last, bf16 where the CPU has it natively, else fp32; and each one's
    relative error against the same convolution in fp64."""
    from unetkit.models.winograd import WinogradConv3x3Function

    plt = _pyplot()
    torch.manual_seed(0)
    dtype = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    ways = {
        "PyTorch (oneDNN)": lambda x, w: F.conv2d(x, w, padding=1),
        "Winograd F(2x2, 3x3)": lambda x, w: WinogradConv3x3Function.apply(x, w, None),
    }
    rows = []
    for level, channels in enumerate([64, 128, 256, 512, 1024]):
        side = max(2, size >> level)
        x = torch.randn(2, channels, side, side).contiguous(memory_format=torch.channels_last)
        weight = torch.randn(channels, channels, 3, 3) / (3 * channels**0.5)
        exact = F.conv2d(x.to(dtype).double(), weight.to(dtype).double(), padding=1)
        row = {"channels": channels, "side": side}
        for name, conv in ways.items():
            xs, ws = x.to(dtype).requires_grad_(), weight.to(dtype).requires_grad_()
            row[name] = _time(lambda conv=conv, xs=xs, ws=ws: conv(xs, ws).sum().backward(), repeats=3)
            with torch.no_grad():
                row[f"{name} error"] = ((conv(xs, ws).double() - exact).norm() / exact.norm()).item()
        rows.append(row)
    figure, axis = plt.subplots(figsize=(6.4, 3.4))
    positions = np.arange(len(rows))
    for offset, name in zip((-0.2, 0.2), ways, strict=True):
        axis.bar(positions + offset, [1000 * r[name] for r in rows], width=0.4, label=name)
    axis.set_xticks(positions, [f"{r['channels']}ch\n{r['side']}px" for r in rows])
    axis.set_ylabel(f"forward + backward, batch 2, {str(dtype).replace('torch.', '')} (ms)")
    axis.legend(fontsize=8)
    errors = ", ".join(f"{name.split()[0]} {rows[-1][f'{name} error']:.4f}" for name in ways)
    title = f"{cpu_description()[:70]}\nthe 3x3 convolution two ways; error vs fp64 at 1024ch: {errors}"
    axis.set_title(title, fontsize=8)
    (out / "winograd.json").write_text(
        json.dumps({"cpu": cpu_description(), "dtype": str(dtype), "layers": rows}, indent=2) + "\n"
    )
    return _save(figure, out / "winograd.png")


# --- LR schedulers (unetkit/train/schedulers.py) ---
def figure_schedulers(out: Path, epochs: int = 30, steps_per_epoch: int = 10) -> Path:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 3.8))
    for name in SCHEDULERS:
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-3)
        schedule = Schedule(name, optimizer, steps_per_epoch, epochs, warmup_epochs=2, step_size=10, gamma=0.3)
        rates = []
        for epoch in range(epochs):
            for _ in range(steps_per_epoch):
                rates.append(optimizer.param_groups[0]["lr"])
                optimizer.step()
                schedule.step_batch()
            # plateau needs a validation Dice: one that rises, then stalls from epoch 12
            schedule.step_epoch(min(0.9, 0.5 + 0.035 * epoch))
        axis.plot(np.arange(len(rates)) / steps_per_epoch, rates, label=name)
    axis.set_xlabel("epoch")
    axis.set_ylabel("learning rate")
    axis.set_title(
        f"{epochs} epochs x {steps_per_epoch} batches, base LR 1e-3 (plateau: Dice stalls at epoch 12)", fontsize=9
    )
    axis.legend(fontsize=8, ncol=3)
    axis.grid(alpha=0.3)
    return _save(figure, out / "schedulers.png")


def _train_and_score(model: str, work: Path, epochs: int, minutes: float, pairs: tuple, examples: dict) -> dict:
    """One model trained with the demo recipe, shortened, and its Dice on the held-out slices
    (`pairs`: train, validation, held-out); the first held-out slice's classes into `examples`."""
    from unetkit.evaluate import evaluate_pairs
    from unetkit.inference import Predictor
    from unetkit.train.run_claim import claimed_run

    train_pairs, val_pairs, heldout = pairs
    cfg = demo_config(work / model, progress=False)
    cfg.model, cfg.epochs, cfg.time = model, epochs, minutes * 60
    if model == "dumbnet":
        cfg.base_channels = 32  # DumbNet's width
    started = time.perf_counter()
    with claimed_run(cfg, train_pairs, val_pairs, log=lambda _: None) as trainer:  # the epochs alone
        run = trainer.fit()
    predictor = Predictor(run.best_checkpoint)

    def keep_first(pair, _image, class_ids, _objects) -> None:
        if pair.name == heldout[0].name:
            examples[model] = class_ids

    report = evaluate_pairs(predictor, heldout, progress=False, on_prediction=keep_first)
    by_value = {row.mask_value: row.dice for row in report.per_class}
    return {
        "membrane_dice": by_value[0],
        "cell_dice": by_value[255],
        "parameters": sum(p.numel() for p in predictor.model.parameters()),
        "epochs": len(run.history),
        "seconds": time.perf_counter() - started,
    }


# --- DumbNet vs U-Net (unetkit/models/dumbnet.py); trains two models ---
def figure_dumbnet_vs_unet(out: Path, epochs: int = 10, minutes_each: float = 1.5) -> Path:
    """Both models trained with the demo recipe, shortened; Dice on held-out slices 25-29."""
    plt = _pyplot()
    by_slice = {int(p.name): p for p in find_pairs(DEMO_DATA / "images", DEMO_DATA / "masks")}
    train_pairs = [by_slice[i] for i in TRAIN_SLICES]
    val_pairs = [by_slice[i] for i in VAL_SLICES]
    heldout = [by_slice[i] for i in HELDOUT_SLICES]
    results, examples = {}, {}
    work = Path(tempfile.mkdtemp(prefix="unetkit-docs-"))  # checkpoints are not docs
    try:
        for model in ("dumbnet", "unet"):
            results[model] = _train_and_score(model, work, epochs, minutes_each, (train_pairs, val_pairs, heldout),
                                              examples)  # fmt: skip
    finally:  # a failure left a folder of checkpoints behind (a red-team round)
        shutil.rmtree(work, ignore_errors=True)
    (out / "dumbnet_vs_unet.json").write_text(json.dumps(results, indent=2) + "\n")
    image, truth = _demo_slice(HELDOUT_SLICES[0])
    figure, axes = plt.subplots(1, 4, figsize=(12, 3.6))
    panels = [("slice 25", image), ("true mask", truth)]
    for model in ("dumbnet", "unet"):
        r = results[model]
        panels.append(
            (f"{model}: membrane Dice {r['membrane_dice']:.3f}\n({r['parameters'] / 1e3:.0f}k params)", examples[model])
        )
    for axis, (title, array) in zip(axes, panels, strict=True):
        axis.imshow(array[128:384, 128:384], cmap="gray")  # the centre, so the membranes are visible
        axis.set_title(title, fontsize=9)
        axis.set_axis_off()
    return _save(figure, out / "dumbnet_vs_unet.png")


# --- the U-Net paper's border weight map (unetkit/data/weight_map.py) ---
def figure_weight_map(out: Path) -> Path:
    """A demo slice, its cells as objects, and the border term of the weight map (w0 10, sigma 5):
    the membranes between two cells weigh up to 10x more, open background nothing extra."""
    from unetkit.data.objects import true_objects
    from unetkit.data.weight_map import border_weights

    plt = _pyplot()
    image, mask = _demo_slice(TRAIN_SLICES[0])
    objects = true_objects(mask, [1])
    weights = border_weights(objects, w0=10.0, sigma=5.0)
    crop = (slice(160, 352), slice(160, 352))
    figure, axes = plt.subplots(1, 3, figsize=(9, 3.3))
    rng = np.random.default_rng(0)
    colours = np.vstack([[0, 0, 0], rng.uniform(0.25, 1, (objects.max(), 3))])
    axes[0].imshow(image[crop], cmap="gray")
    axes[0].set_title("slice 00 (centre)", fontsize=9)
    axes[1].imshow(colours[objects[crop]])
    axes[1].set_title(f"cells as objects ({objects.max()} in the slice)", fontsize=9)
    shown = axes[2].imshow(weights[crop], cmap="magma", vmin=0, vmax=10)
    axes[2].set_title("border term: 10 exp(-(d1 + d2)^2 / 50)", fontsize=9)
    figure.colorbar(shown, ax=axes[2], fraction=0.046)
    for axis in axes:
        axis.set_axis_off()
    return _save(figure, out / "weight_map.png")


CHEAP_FIGURES = {
    "weight_map": figure_weight_map,
    "dice_iou": figure_dice_iou,
    "upsampling": figure_upsampling,
    "amp": figure_amp,
    "weight_gradient": figure_weight_gradient,
    "winograd": figure_winograd,
    "schedulers": figure_schedulers,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python docs/make_figures.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/figures", help="folder for the figures (default docs/figures)")
    parser.add_argument("--skip-training", action="store_true", help="skip the DumbNet vs U-Net figure")
    parser.add_argument("--only", nargs="+", choices=[*CHEAP_FIGURES, "dumbnet_vs_unet"], help="just these figures")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Callable[[Path], Path]] = dict(CHEAP_FIGURES)
    if not args.skip_training:
        figures["dumbnet_vs_unet"] = figure_dumbnet_vs_unet
    for name, make in figures.items():
        if args.only and name not in args.only:
            continue
        started = time.perf_counter()
        path = make(out)
        print(f"{path} ({path.stat().st_size / 1e3:.0f} kB, {time.perf_counter() - started:.1f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
