"""The `unetkit` command: train, evaluate, predict, demo."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from unetkit.core.amp import AMP_MODES
from unetkit.errors import UnetkitError
from unetkit.inference.predictor import BACKENDS
from unetkit.losses import LOSSES
from unetkit.models import MODELS
from unetkit.train.config import OPTIMIZERS, TrainConfig
from unetkit.train.config_file import load_config_file
from unetkit.train.options import user_options
from unetkit.train.recipes import RECIPES
from unetkit.train.schedulers import SCHEDULERS


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like '0,255', got {text!r}") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like '1,5', got {text!r}") from None


def _patch_size(text: str) -> int:
    if text.lower() in ("none", "full", "0"):
        return 0  # whole images
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer or 'none'")
    return value


def parse_duration(text: str) -> float:
    """'90s', '10m', '1.5h' or a plain number of seconds -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    text = text.strip().lower()
    factor = units.get(text[-1:], None)
    try:
        value = float(text[:-1] if factor else text) * (factor or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration like 90s, 10m or 1.5h, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"the time budget must be positive, got {text!r}")
    return value


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    # Defaults are None here so that a resumed run can tell what was set on the command line;
    # the real defaults live in TrainConfig.
    d = TrainConfig()
    data = p.add_argument_group("data")
    data.add_argument("--images", help="folder of training images")
    data.add_argument("--masks", help="folder of training masks (same file stems as the images)")
    data.add_argument("--val-images", help="folder of validation images (default: split off --val-fraction)")
    data.add_argument("--val-masks", help="folder of validation masks")
    data.add_argument(
        "--val-fraction", type=float, help=f"share of images held out for validation, seeded (default {d.val_fraction})"
    )
    data.add_argument("--mask-suffix", help="mask name = image stem + this, e.g. _mask (default: tried automatically)")
    data.add_argument(
        "--mask-values",
        type=_int_list,
        help="the mask values of the classes, e.g. 0,255 (default: found in the training masks)",
    )
    data.add_argument(
        "--ignore-value", type=int, help="a mask value whose pixels count for neither loss nor metrics, e.g. 255"
    )
    data.add_argument(
        "--scale", type=float, help="resize images and masks by this factor for the model (default: chosen by --recipe)"
    )
    data.add_argument(
        "--patch-size",
        type=_patch_size,
        help="random training crop size, or 'none' for whole images (default: chosen by --recipe)",
    )
    data.add_argument(
        "--patches-per-image",
        type=int,
        help="random crops per image and epoch (default: enough for ~96 crops an epoch)",
    )
    data.add_argument(
        "--no-augment",
        dest="augment",
        action="store_const",
        const=False,
        help="turn off flips, rotations, scaling, elastic and intensity augmentation",
    )
    data.add_argument(
        "--elastic",
        action=argparse.BooleanOptionalAction,
        help="elastic deformation, the U-Net paper's augmentation (default: chosen by --recipe; off in runs under 15 minutes)",
    )
    data.add_argument(
        "--orientation",
        choices=("any", "upright"),
        help="any: flips and 90-degree turns; upright: left-right flips only, for scenes with an up (default: from the masks: upright when a class sits well above or below the middle)",
    )
    model = p.add_argument_group("model")
    model.add_argument(
        "--recipe",
        choices=RECIPES,
        help="fills the options you leave out from the data: fast (16 base channels, bilinear, resolution from the "
        "masks' geometry), paper (64 channels, transposed, full resolution), auto (paper on GPU, fast on CPU; the default)",
    )
    model.add_argument("--model", choices=sorted(MODELS), help=f"architecture (default {d.model})")
    model.add_argument(
        "--base-channels",
        type=int,
        help="channels of the first level, doubling per level (default: chosen by --recipe); DumbNet's width",
    )
    model.add_argument("--depth", type=int, help="number of down/up levels (default: chosen by --recipe)")
    model.add_argument(
        "--upsampling", choices=["transposed", "bilinear"], help="decoder upsampling (default: chosen by --recipe)"
    )
    model.add_argument(
        "--multiclass",
        dest="binary",
        action="store_const",
        const=False,
        help="use softmax over 2 classes instead of one sigmoid logit for two-value masks",
    )
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, help="number of epochs (default 50, or as many as fit in --time)")
    opt.add_argument("--batch-size", type=int, help="images per step (default: chosen by --recipe)")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, help=f"(default {d.optimizer})")
    opt.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's, 4e-3 fast, 1e-3 paper)")
    opt.add_argument("--weight-decay", type=float, help=f"(default {d.weight_decay})")
    opt.add_argument("--momentum", type=float, help=f"SGD momentum (default {d.momentum}, the U-Net paper's)")
    opt.add_argument("--scheduler", choices=SCHEDULERS, help=f"learning-rate schedule (default {d.scheduler})")
    opt.add_argument("--warmup-epochs", type=float, help=f"linear warmup for cosine (default {d.warmup_epochs})")
    opt.add_argument(
        "--step-size", type=int, help=f"epochs between drops for the step schedule (default {d.step_size})"
    )
    opt.add_argument("--gamma", type=float, help=f"LR factor of each step drop (default {d.gamma})")
    opt.add_argument("--loss", choices=LOSSES, help=f"(default {d.loss})")
    opt.add_argument(
        "--class-weights",
        type=_float_list,
        help="one loss weight per class, e.g. 1,5 (default: 1/sqrt of each class's pixel fraction)",
    )
    opt.add_argument(
        "--grad-clip", type=float, help=f"clip the gradient norm to this; 0 turns it off (default {d.grad_clip})"
    )
    opt.add_argument(
        "--amp",
        choices=AMP_MODES,
        help="mixed precision: auto picks fp16/bf16 on GPUs and bf16 on CPUs with native bf16 (default auto)",
    )
    opt.add_argument(
        "--channels-last",
        choices=["auto", "on", "off"],
        help="NHWC memory layout; auto measures which is faster (default auto)",
    )
    opt.add_argument("--patience", type=int, help="stop after this many epochs without a better validation Dice")
    opt.add_argument(
        "--min-epochs",
        type=int,
        help="with --time: train at least this many epochs even if the machine is slower than expected",
    )
    opt.add_argument(
        "--time",
        type=parse_duration,
        help="wall-clock budget, e.g. 10m: the LR schedule runs over the time, no epoch starts that would pass it, "
        "best.pt keeps the best epoch",
    )
    run = p.add_argument_group("run")
    run.add_argument(
        "--config",
        help="a TOML (or YAML) file of these options, e.g. a run's config.toml; options given here override it",
    )
    run.add_argument("--out", help="run folder for checkpoints and logs (default runs/<timestamp>)")
    run.add_argument(
        "--resume",
        help="continue from a last.pt; its saved options are used, except epochs, patience, time, min-epochs, device, workers, progress",
    )
    run.add_argument("--seed", type=int, help=f"(default {d.seed})")
    run.add_argument("--device", help="auto, cpu, cuda or cuda:N (default auto)")
    run.add_argument("--workers", type=int, help="data-loading processes (default: 0 on small CPUs, else 4)")
    run.add_argument(
        "--cache-gb",
        type=float,
        help="keep decoded images in memory up to this many GiB, else decode each time (default: 30%% of the memory)",
    )
    run.add_argument("--no-progress", dest="progress", action="store_const", const=False, help="no progress bars")
    run.add_argument(
        "--sync-bn",
        action="store_const",
        const=True,
        help="under torchrun: BatchNorm statistics over all ranks' batches (SyncBatchNorm, CUDA only)",
    )
    run.add_argument(
        "--tensorboard",
        action="store_const",
        const=True,
        help="also log losses, Dice/IoU per class, LR and validation images to RUN/tensorboard",
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig defaults < the --config file < options given on the command line."""
    return config_and_given_options(args)[0]


def config_and_given_options(args: argparse.Namespace) -> tuple[TrainConfig, set[str]]:
    """The config, and the names of the options set on the command line or in the --config file
    (unetkit/train/options.py: layers 1-3). On --resume only these replace the checkpoint's own."""
    config_file = getattr(args, "config", None)
    file = load_config_file(config_file) if config_file else None
    typed = {name: getattr(args, name, None) for name in TrainConfig().to_dict()}
    return user_options(file, typed)


def cmd_train(args: argparse.Namespace) -> None:
    from unetkit.train import train
    from unetkit.train.distributed import is_main_process

    cfg, given = config_and_given_options(args)
    result = train(cfg, resume_overrides=given)
    if not is_main_process():  # under torchrun, one summary is enough
        return
    best = f"best val Dice {result.best_dice:.4f}" if result.best_dice > -1 else "no validation: best = last"
    print(f"checkpoints: {result.best_checkpoint} ({best}), {result.last_checkpoint}")
    print(f"logs: {result.out / 'metrics.csv'}, {result.out / 'curves.png'}")


def predictor_from_args(args: argparse.Namespace):
    from unetkit.inference import InferenceOptions, Predictor

    if not 0 < args.threshold < 1:  # False for NaN too
        raise UnetkitError(
            f"--threshold {args.threshold:g} is invalid: it must be a probability between 0 and 1, e.g. 0.5"
        )

    options = InferenceOptions(
        tiling=args.tiling,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        tta=args.tta,
        progress=not args.no_progress,
        backend=args.backend,
    )
    source = args.onnx or args.checkpoint
    if source is None:
        raise UnetkitError("give the model with --checkpoint CKPT (or --onnx MODEL.onnx)")
    if args.backend == "onnxruntime" and args.amp in ("bf16", "fp16"):
        raise UnetkitError(f"--backend onnxruntime runs in fp32; drop --amp {args.amp} or use --backend torch")
    predictor = Predictor(source, device=args.device, amp=args.amp, options=options)
    if predictor.backend == "onnxruntime":
        how = "as asked" if args.onnx or args.backend == "onnxruntime" else "timed faster than PyTorch fp32 here"
        print(f"running on ONNX Runtime ({how})")
    else:
        print(f"running on PyTorch, {predictor.device}, {predictor.amp.compute_dtype}")
    return predictor


def output_file(option: str, path: str | None, suffix: str) -> None:
    """An output file option must name a file of its kind: `--json masks/img01.png` or
    `--onnx best.pt` would replace the user's data with a report or a model."""
    if path is not None and Path(path).suffix.lower() != suffix:
        raise UnetkitError(
            f"{option} {path}: give a file name ending in {suffix}; the output never replaces another kind of file"
        )


def cmd_evaluate(args: argparse.Namespace) -> None:
    from unetkit.data import find_pairs
    from unetkit.evaluate import evaluate_pairs, format_report

    output_file("--json", args.json, ".json")
    predictor = predictor_from_args(args)
    pairs = find_pairs(args.images, args.masks, args.mask_suffix)
    report = evaluate_pairs(predictor, pairs, args.threshold, progress=not args.no_progress)
    print(format_report(report))
    if args.json:
        from unetkit.core.atomic import write_json

        write_json(Path(args.json), report)
        print(f"wrote {args.json}")


def cmd_predict(args: argparse.Namespace) -> None:
    from unetkit.predict import predict_files

    predictor = predictor_from_args(args)
    written = predict_files(
        predictor,
        args.inputs,
        args.out,
        args.threshold,
        args.overlay,
        args.probabilities,
        not args.no_progress,
        args.overwrite,
    )
    print(f"wrote {len(written)} mask(s) to {args.out}")


def cmd_export(args: argparse.Namespace) -> None:
    if not args.onnx and not args.safetensors:
        raise UnetkitError("export needs --onnx FILE and/or --safetensors FILE")
    output_file("--onnx", args.onnx, ".onnx")
    output_file("--safetensors", args.safetensors, ".safetensors")
    if args.onnx:
        from unetkit.inference.onnx_export import export_onnx

        difference = export_onnx(args.checkpoint, args.onnx)
        print(f"wrote {args.onnx}; ONNX Runtime vs PyTorch max abs logit difference {difference:.2e}")
    if args.safetensors:
        from unetkit.core.checkpoint import export_safetensors

        print(f"wrote {export_safetensors(args.checkpoint, args.safetensors)} (weights and metadata only, no pickle)")


def cmd_check(args: argparse.Namespace) -> int:
    from unetkit.check import check_dataset, format_check

    output_file("--json", args.json, ".json")
    report = check_dataset(args.images, args.masks, args.mask_suffix)
    print(format_check(report))
    if args.json:
        from unetkit.core.atomic import write_json

        write_json(Path(args.json), report)
    return 0 if report["ok"] else 1


def cmd_demo(args: argparse.Namespace) -> None:
    from unetkit.demo import run_demo

    run_demo(args.out, progress=not args.no_progress, amp=args.amp)


def add_labelled_folder_arguments(p: argparse.ArgumentParser, json_help: str) -> None:
    """The folder pair that `evaluate` and `check` read, and where their report may go."""
    p.add_argument("--images", required=True, help="folder of images")
    p.add_argument("--masks", required=True, help="folder of their masks")
    p.add_argument("--mask-suffix", help="mask name = image stem + this (default: tried automatically)")
    p.add_argument("--json", help=json_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unetkit", description="U-Net segmentation: train, evaluate, predict.")
    from unetkit import __version__

    parser.add_argument("--version", action="version", version=f"unetkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "train",
        help="train a model on folders of images and masks",
        description="Train a U-Net on folders of images and masks.",
    )
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)

    def add_inference_arguments(p: argparse.ArgumentParser) -> None:
        model = p.add_mutually_exclusive_group(required=True)
        model.add_argument("--checkpoint", help="a best.pt or last.pt from a run")
        model.add_argument("--onnx", help="an exported model.onnx (run with ONNX Runtime) instead of a checkpoint")
        p.add_argument(
            "--threshold",
            type=float,
            default=0.5,
            help="foreground probability cut-off for binary models (default 0.5)",
        )
        p.add_argument(
            "--tiling",
            choices=["auto", "on", "off"],
            default="auto",
            help="overlapping tiles: auto tiles images above 1024x1024 pixels (default auto)",
        )
        p.add_argument("--tile", type=int, default=512, help="tile size in pixels, at the model's scale (default 512)")
        p.add_argument(
            "--overlap",
            type=int,
            default=64,
            help="overlap between tiles in pixels; blended with a Gaussian window (default 64)",
        )
        p.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (default 4)")
        p.add_argument(
            "--tta",
            action="store_true",
            help="test-time augmentation: average flipped (and, for square tiles, rotated) predictions",
        )
        p.add_argument(
            "--amp",
            choices=AMP_MODES,
            default="auto",
            help="mixed precision for PyTorch models, as for train (default auto)",
        )
        p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
        p.add_argument(
            "--backend",
            choices=BACKENDS,
            default="auto",
            help="for --checkpoint: run with PyTorch, or export on the fly to ONNX Runtime; auto times both "
            "on CPUs without bf16 (fp32) when onnxruntime is installed and keeps the faster (default auto)",
        )
        p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = commands.add_parser(
        "evaluate",
        help="score a model on a labelled folder (Dice, IoU)",
        description="Dice and IoU per class and per image on a labelled folder.",
    )
    add_inference_arguments(p)
    add_labelled_folder_arguments(p, "also write the full report (per class, per image) to this file")
    p.set_defaults(func=cmd_evaluate)

    p = commands.add_parser(
        "predict",
        help="write masks for new images",
        description="Write a PNG mask per image, same size as the image, in the training mask values.",
    )
    add_inference_arguments(p)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument("--out", required=True, help="folder for the masks")
    p.add_argument("--overlay", action="store_true", help="also write <name>_overlay.png, the mask over the image")
    p.add_argument(
        "--probabilities", action="store_true", help="also write <name>_probs.tif: float32, one channel per class"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace files of an earlier prediction in --out (default: refuse)"
    )
    p.set_defaults(func=cmd_predict)

    p = commands.add_parser(
        "export",
        help="export a checkpoint to ONNX or safetensors for deployment and sharing",
        description="Export to ONNX (dynamic batch, height, width; checked against PyTorch with ONNX Runtime) "
        "and/or to safetensors (weights plus JSON metadata, safe to load from strangers).",
    )
    p.add_argument("--checkpoint", required=True, help="a best.pt or last.pt from a run")
    p.add_argument("--onnx", help="output .onnx file")
    p.add_argument("--safetensors", help="output .safetensors file; predict/evaluate take it as --checkpoint")
    p.set_defaults(func=cmd_export)

    p = commands.add_parser(
        "check",
        help="check a data set before training (exit 1 if training would fail)",
        description="The data set doctor: pairs, sizes, channels, mask values, class fractions, broken files.",
    )
    add_labelled_folder_arguments(p, "also write the report to this file")
    p.set_defaults(func=cmd_check)

    p = commands.add_parser(
        "demo",
        help="train and evaluate on the bundled ISBI 2012 EM membranes",
        description="Train on ISBI 2012 slices 00-24, score held-out slices 25-29.",
    )
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--amp", choices=AMP_MODES, default="auto", help="mixed precision, as for train (default auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except BrokenPipeError:  # output piped into `head` and the like: not an error of ours
        sys.stderr.close()
        return 0
    except UnetkitError as err:
        print(_printable(f"unetkit {args.command}: error: {err}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        # The trainer re-raises Ctrl-C with where its checkpoint is and how to resume.
        detail = f": {err}" if str(err) else ""
        print(_printable(f"unetkit {args.command}: interrupted{detail}"), file=sys.stderr)
        return 130
    return code or 0


def _printable(text: str) -> str:
    """File names that are not valid UTF-8 reach Python as lone surrogates, which cannot be
    printed; show their bytes as \\xNN (as `ls -b` does) so the message still names the file."""
    raw = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    return raw.encode(encoding, "backslashreplace").decode(encoding)


if __name__ == "__main__":
    sys.exit(main())
