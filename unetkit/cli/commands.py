"""What each `unetkit` command does with its parsed options (the parser is in __init__.py)."""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unetkit.cli.arguments import typed_as
from unetkit.errors import UnetkitError
from unetkit.runtime.atomic import remove_stale_temporaries
from unetkit.runtime.options import show
from unetkit.runtime.ownership import written_by_unetkit
from unetkit.train.config import TrainConfig
from unetkit.train.config_file import read_config_file
from unetkit.train.option_layers import user_options


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig defaults < the --config file < options given on the command line."""
    return config_and_given_options(args)[0]


def config_and_given_options(args: argparse.Namespace) -> tuple[TrainConfig, dict[str, str]]:
    """The config, and the options set on the command line or in the --config file (unetkit/train/
    option_layers.py: layers 1-3), each with how it was given (`--depth 3`, `run.toml: depth = 3`): on
    --resume these replace the checkpoint's own, or are refused in those words."""
    config_file = getattr(args, "config", None)
    file, keys = read_config_file(config_file) if config_file else (None, {})
    typed = {name: getattr(args, name, None) for name in TrainConfig().to_dict()}
    cfg, given = user_options(file, typed)
    how = {name: f"{config_file}: {keys.get(name, name)} = {show(getattr(cfg, name))}" for name in given}
    how.update({name: typed_as(TrainConfig, name, value) for name, value in typed.items() if value is not None})
    return cfg, how


def cmd_train(args: argparse.Namespace) -> None:
    from unetkit.runs import run_training
    from unetkit.train.distributed import is_main_process

    cfg, given = config_and_given_options(args)
    result = run_training(cfg, resume_overrides=given)
    if not is_main_process():  # under torchrun, one summary is enough
        return
    best = f"best val Dice {result.best_dice:.4f}" if result.best_dice > -1 else "no validation: best = last"
    best = result.best_is or best  # an --init-from run's best.pt may be the start, or an average
    print(f"checkpoints: {result.best_checkpoint} ({best}), {result.last_checkpoint}")
    print(f"logs: {result.out / 'metrics.csv'}, {result.out / 'curves.png'}")


def inference_options(args: argparse.Namespace):
    """InferenceOptions with the fields given on the command line; the rest at their defaults."""
    from unetkit.inference import InferenceOptions

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(InferenceOptions)}
    given["progress"] = given["progress"] is None  # bars on the command line unless --no-progress
    return InferenceOptions(**{name: value for name, value in given.items() if value is not None})


def predictor_from_args(args: argparse.Namespace, in_memory: Callable[[Any], bool] = lambda options: True):
    """The Predictor the options ask for, and a line saying what runs it. `in_memory(options)`:
    whether any image is predicted in memory, where --backend auto may time ONNX Runtime first
    (out of core PyTorch runs: Predictor.slide_plan)."""
    from unetkit.inference import Predictor

    options = inference_options(args)
    if args.onnx and Path(args.onnx).suffix.lower() != ".onnx":  # the Predictor tells the formats apart by name
        raise UnetkitError(f"{args.onnx}: --onnx takes a model.onnx from 'unetkit export --onnx'; for a run's "
                           "best.pt or last.pt use --checkpoint")  # fmt: skip
    source = args.onnx or checkpoint_of(args)
    if options.backend == "onnxruntime" and options.amp in ("bf16", "fp16"):
        raise UnetkitError(f"--backend onnxruntime runs in fp32; drop --amp {options.amp} or use --backend torch")
    predictor = Predictor(source, options=options)
    if in_memory(predictor.options):
        predictor.choose_backend_now()
    if predictor.backend == "onnxruntime":
        how = "as asked" if args.onnx or options.backend == "onnxruntime" else "timed faster than PyTorch fp32 here"
        print(f"running on ONNX Runtime ({how})")
    else:
        print(f"running on PyTorch, {predictor.device}, {predictor.amp.compute_dtype}")
    return predictor


def checkpoint_of(args: argparse.Namespace) -> str:
    """--checkpoint, or the weights of the ready-made model --model names."""
    if args.model is None:
        return args.checkpoint
    from unetkit.zoo import zoo_model

    return str(zoo_model(args.model).weights)


def cmd_models(args: argparse.Namespace) -> None:
    from unetkit.zoo import zoo_models

    models = zoo_models()
    if not models:
        print("no ready-made models in this installation")
    for model in models.values():
        size = model.weights.stat().st_size / 2**20
        print(f"{model.name}: {model.summary} ({size:.1f} MB)\n  held out: {model.held_out}\n  card: {model.card}")


def cmd_encoders(args: argparse.Namespace) -> None:
    from unetkit.models import create_model
    from unetkit.models.encoder_unet import ENCODERS, SIZE_MULTIPLE
    from unetkit.train.encoder_weights import encoder_normalisation

    for name in ENCODERS:
        model = create_model("encoder-unet", in_channels=3, num_classes=2, encoder=name)
        parameters = sum(p.numel() for p in model.parameters()) / 1e6
        mean, std = encoder_normalisation(name, 3)
        print(f"{name:<24} {parameters:5.1f}M parameters  sides: a multiple of {SIZE_MULTIPLE} (padded)  "
              f"pretrained mean {[round(m, 3) for m in mean]} std {[round(s, 3) for s in std]}")  # fmt: skip


def output_file(option: str, path: str | None, suffix: str) -> None:
    """An output file option must name a file of its kind: `--json masks/img01.png` or
    `--onnx best.pt` would replace the user's data with a report or a model; and an existing file
    of that name is replaced only if unetkit wrote it (its content says so: runtime/ownership.py).
    The temporaries a killed export of this very name left beside it are removed."""
    if path is None:
        return
    if Path(path).suffix.lower() != suffix:
        raise UnetkitError(
            f"{option} {path}: give a file name ending in {suffix}; the output never replaces another kind of file"
        )
    if Path(path).is_dir():
        raise UnetkitError(f"{option} {path}: is a folder; give a file name ending in {suffix}")
    if Path(path).exists() and not written_by_unetkit(Path(path)):
        raise UnetkitError(
            f"{option} {path}: the file exists and unetkit did not write it, so it is never replaced; "
            "give a new file name"
        )
    if Path(path).parent.is_dir():
        remove_stale_temporaries(Path(path).parent, [Path(path).name])


def cmd_evaluate(args: argparse.Namespace) -> None:
    from unetkit.data import find_pairs
    from unetkit.data.pairing import expand_planes
    from unetkit.data.tiff_axes import AxisChoice, refuse_unused_axes
    from unetkit.evaluate import evaluate_pairs, format_report, training_images_among

    output_file("--json", args.json, ".json")
    predictor = predictor_from_args(args)
    options = predictor.options
    pairs = find_pairs(args.images, args.masks, args.mask_suffix)
    refuse_unused_axes(AxisChoice(args.channel_axis, args.plane_axis), [pair.image for pair in pairs])  # typed ones
    pairs = expand_planes(pairs, predictor.axes)
    trained = training_images_among(predictor, pairs)
    if trained:
        print(f"note: {trained}")
    report = evaluate_pairs(predictor, pairs, progress=options.progress)
    print(format_report(report))
    if args.json:
        from unetkit.runtime.atomic import write_json

        write_json(Path(args.json), {"written_by": f"unetkit {args.command}", **report.to_dict()})
        print(f"wrote {args.json}")


def cmd_predict(args: argparse.Namespace) -> None:
    from unetkit.data.tiff_axes import AxisChoice, refuse_unused_axes
    from unetkit.inference.outputs import PredictOutputs
    from unetkit.inference.slide.large_tiff import out_of_core
    from unetkit.predict import collect_inputs, predict_files

    def in_memory(options) -> bool:
        inputs = collect_inputs(args.inputs)
        refuse_unused_axes(AxisChoice(args.channel_axis, args.plane_axis), inputs)
        return not all(out_of_core(path, options.out_of_core, options.axes) for path in inputs)

    predictor = predictor_from_args(args, in_memory)  # a bad checkpoint is named first
    files = tuple(name for name, asked in (("geojson", args.geojson), ("imagej", args.imagej_rois)) if asked)
    outputs = PredictOutputs(
        Path(args.out), args.overlay, args.probabilities, args.instances or bool(files), files, args.overwrite
    )
    started = time.perf_counter()
    written = predict_files(predictor, args.inputs, outputs)
    seconds = max(time.perf_counter() - started, 1e-6)
    print(f"wrote {len(written)} mask(s) to {args.out} in {seconds:.1f} s ({len(written) / seconds:.3g} images/s)")


def cmd_export(args: argparse.Namespace) -> None:
    if not (args.onnx or args.safetensors or args.bioimageio):
        raise UnetkitError("export needs --onnx FILE, --safetensors FILE and/or --bioimageio FILE.zip")
    output_file("--bioimageio", args.bioimageio, ".zip")
    output_file("--onnx", args.onnx, ".onnx")
    output_file("--safetensors", args.safetensors, ".safetensors")
    checkpoint = checkpoint_of(args)
    # Every refusal before any file is written: a bad --name must not leave the ONNX file behind.
    if args.onnx:
        from unetkit.inference.export.onnx import export_onnx, require_onnx
        from unetkit.inference.onnx_runtime import OnnxModel

        require_onnx()
    if args.bioimageio:
        from unetkit.inference.export.bioimageio import export_bioimageio, prepare_package

        package = prepare_package(checkpoint, args.sample, args.name, args.author)
    if args.safetensors:  # first: an ONNX export refused for its logits left no safetensors (a red-team round)
        from unetkit.models.checkpoint import export_safetensors

        print(f"wrote {export_safetensors(checkpoint, args.safetensors)} (weights and metadata only, no pickle)")
    if args.onnx:
        difference = export_onnx(checkpoint, args.onnx)
        multiple = OnnxModel(args.onnx).multiple
        print(f"wrote {args.onnx}; ONNX Runtime vs PyTorch max abs logit difference {difference:.2e}; its inputs' "
              f"height and width are multiples of {multiple} (pad, then crop the logits: predict --onnx does)")  # fmt: skip
    if args.bioimageio:
        export_bioimageio(package, args.bioimageio)
        print(f"wrote {args.bioimageio} (bioimage.io model package: TorchScript and ONNX weights, test tensors)")


def cmd_check(args: argparse.Namespace) -> int:
    from unetkit.check import check_dataset, format_check

    output_file("--json", args.json, ".json")
    from unetkit.data.tiff_axes import AxisChoice

    axes = AxisChoice(args.channel_axis, args.plane_axis)
    report = check_dataset(args.images, args.masks, args.mask_suffix, args.instance_masks, axes, args.ignore_value)
    print(format_check(report))
    if args.json:
        from unetkit.runtime.atomic import write_json

        write_json(Path(args.json), {"written_by": f"unetkit {args.command}", **report})
    return 0 if report["ok"] else 1


def cmd_report(args: argparse.Namespace) -> None:
    from unetkit.report import write_report

    output_file("--out", args.out, ".html")
    write_report(args.run, args.images, args.masks, args.out)


def cmd_demo(args: argparse.Namespace) -> None:
    from unetkit.demo import run_demo

    run_demo(args.out, progress=not args.no_progress, amp=args.amp)
