"""The `unetkit` command: train, evaluate, predict, export, check, demo. The options of train and
of predict/evaluate are made from TrainConfig's and InferenceOptions' fields (arguments.py); the
commands' work is in commands.py."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from unetkit.cli.arguments import add_dataclass_arguments
from unetkit.cli.commands import (
    cmd_check,
    cmd_demo,
    cmd_encoders,
    cmd_evaluate,
    cmd_export,
    cmd_models,
    cmd_predict,
    cmd_report,
    cmd_train,
    config_and_given_options,
    config_from_args,
)
from unetkit.data.tiff_axes import CHANNEL_AXIS_HELP, PLANE_AXIS_HELP
from unetkit.errors import OutputClosed, UnetkitError
from unetkit.inference import InferenceOptions
from unetkit.runtime.amp import AMP_MODES
from unetkit.runtime.options import duration as parse_duration
from unetkit.train.config import TrainConfig
from unetkit.train.distributed import (
    another_rank_left,
    leave_without_teardown,
    one_of_several_ranks,
    say_for_the_job,
)

__all__ = ["add_train_arguments", "build_parser", "config_and_given_options", "config_from_args", "main"]
__all__ += ["parse_duration"]


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(p, TrainConfig)
    p.add_argument(
        "--config",
        help="a TOML (or YAML) file of these options, e.g. a run's config.toml; options given here override it",
    )


def add_inference_arguments(p: argparse.ArgumentParser) -> None:
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="a best.pt or last.pt from a run")
    model.add_argument("--onnx", help="an exported model.onnx (run with ONNX Runtime) instead of a checkpoint")
    model.add_argument("--model", help="a ready-made model by name, e.g. nuclei (unetkit models lists them)")
    add_dataclass_arguments(p, InferenceOptions)


def add_labelled_folder_arguments(p: argparse.ArgumentParser, json_help: str) -> None:
    """The folder pair that `evaluate` and `check` read, and where their report may go."""
    p.add_argument("--images", required=True, help="folder of images")
    p.add_argument("--masks", required=True, help="folder of their masks")
    p.add_argument("--mask-suffix", help="mask name = image stem + this (default: tried automatically)")
    p.add_argument("--json", help=json_help)


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
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
    p.add_argument(
        "--instances",
        action="store_true",
        help="also write the objects: <name>_objects.tif (one id per object, touching ones split by seeded "
        "watershed) and <name>_objects.csv (id, class, area, centroid, bounding box, mean probability)",
    )
    p.add_argument(
        "--geojson",
        action="store_true",
        help="also write <name>_objects.geojson, the objects' outlines with their class and measurements, "
        "for QuPath (File > Import objects); implies --instances",
    )
    p.add_argument(
        "--imagej-rois",
        action="store_true",
        help="also write <name>_rois.zip, each object's outline as an ImageJ ROI (a polygon holds no holes, "
        "and an object of several pieces gets its largest), for Fiji's ROI Manager; implies --instances",
    )


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="a best.pt or last.pt from a run")
    model.add_argument("--model", help="a ready-made model by name, e.g. nuclei (unetkit models lists them)")
    p.add_argument("--onnx", help="output .onnx file")
    p.add_argument("--safetensors", help="output .safetensors file; predict/evaluate take it as --checkpoint")
    p.add_argument(
        "--bioimageio",
        help="output .zip: a bioimage.io model package for Fiji (deepImageJ), ilastik, QuPath, napari "
        "(needs pip install 'unetkit[bioimageio]')",
    )
    p.add_argument(
        "--sample", help="with --bioimageio: an image (a stack's first plane) for the package's test input and cover"
    )
    p.add_argument("--name", help="with --bioimageio: the model's name")
    p.add_argument("--author", action="append", help="with --bioimageio: an author's name (repeat for more)")


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--amp", choices=AMP_MODES, default="auto", help="mixed precision, as for train (default auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_check_arguments(p: argparse.ArgumentParser) -> None:
    add_labelled_folder_arguments(p, "also write the report to this file")
    p.add_argument("--channel-axis", type=str.upper, help=CHANNEL_AXIS_HELP)
    p.add_argument("--plane-axis", type=str.upper, help=PLANE_AXIS_HELP)
    p.add_argument(
        "--instance-masks",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the masks are instance label images (each object its own id): count the objects per mask "
        "(default: recognised from the masks, as train does)",
    )
    p.add_argument(
        "--ignore-value",
        type=int,
        help="mask value of unlabelled pixels, as train's --ignore-value (e.g. CamVid's void 11): counted apart, "
        "not as a class",
    )


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR", help="a run folder of 'unetkit train' (config.json, metrics.csv, best.pt)")
    p.add_argument("--images", help="score and show these images (default: the run's validation images)")
    p.add_argument("--masks", help="their masks")
    p.add_argument("--out", help="the HTML file to write (default RUN_DIR/report.html)")


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    add_inference_arguments(p)
    add_labelled_folder_arguments(p, "also write the full report (per class, per image) to this file")


Arguments = Callable[[argparse.ArgumentParser], None]
# name: (what `unetkit --help` says, what `unetkit NAME --help` says, its options, what it runs)
COMMANDS: dict[str, tuple[str, str, Arguments, Callable]] = {
    "train": (
        "train a model on folders of images and masks",
        "Train a U-Net on folders of images and masks.",
        add_train_arguments,
        cmd_train,
    ),
    "evaluate": (
        "score a model on a labelled folder (Dice, IoU)",
        "Dice and IoU per class and per image on a labelled folder.",
        add_evaluate_arguments,
        cmd_evaluate,
    ),
    "predict": (
        "write masks for new images",
        "Write a PNG mask per image, same size as the image, in the training mask values.",
        add_predict_arguments,
        cmd_predict,
    ),
    "export": (
        "export a checkpoint to ONNX or safetensors for deployment and sharing",
        "Export to ONNX (dynamic batch, height, width; checked against PyTorch with ONNX Runtime) "
        "and/or to safetensors (weights plus JSON metadata, safe to load from strangers).",
        add_export_arguments,
        cmd_export,
    ),
    "check": (
        "check a data set before training (exit 1 if training would fail)",
        "The data set doctor: pairs, sizes, channels, mask values, class fractions, broken files.",
        add_check_arguments,
        cmd_check,
    ),
    "report": (
        "write an HTML report of a run: curves, per-class table, confusion, worst images",
        "One self-contained HTML file (images embedded, no network) about a run and its best.pt.",
        add_report_arguments,
        cmd_report,
    ),
    "models": (
        "list the ready-made models shipped with unetkit (predict --model NAME, train --init-from NAME)",
        "The ready-made models: what each segments, its held-out score, and its model card.",
        lambda p: None,
        cmd_models,
    ),
    "encoders": (
        "list the timm backbones tested under the U-Net decoder (train --encoder NAME)",
        "The encoders tested with train --encoder: parameters of the whole model (2 classes, RGB), the input "
        "size multiple, and what their pretrained weights expect (mean, std). Needs the encoders extra.",
        lambda p: None,
        cmd_encoders,
    ),
    "demo": (
        "train and evaluate on the bundled ISBI 2012 EM membranes",
        "Train on ISBI 2012 slices 00-24, score held-out slices 25-29.",
        add_demo_arguments,
        cmd_demo,
    ),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors in one line, as unetkit's own are: `--time 0` printed the 35-line
    usage first (red-team finding); the usage stays where it is asked for, with --help."""

    def error(self, message: str) -> NoReturn:
        option = re.match(r"argument (--[\w-]+): expected one argument$", message)
        if option:  # `--time -5m`: argparse takes a value that starts with '-' for an option
            message += f" (a value that starts with '-' is read as an option: write {option[1]}=VALUE)"
        self.exit(2, _printable(f"{self.prog}: error: {message}; {self.prog} --help lists the options") + "\n")


def build_parser() -> argparse.ArgumentParser:
    from unetkit import __version__

    parser = OneLineParser(prog="unetkit", description="U-Net segmentation: train, evaluate, predict.")
    parser.add_argument("--version", action="version", version=f"unetkit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, description, add_arguments, run) in COMMANDS.items():
        p = commands.add_parser(name, help=summary, description=description)
        add_arguments(p)
        p.set_defaults(func=run, parser=p)
    return parser


def parsed(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments, an unknown one refused by its command's parser, so the line names that
    command's --help (it named `unetkit --help`), with the likely fix of a common slip."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        hint = ""
        if args.command == "predict" and {"--images", "--input"} & set(unknown):
            hint = " (predict takes its images and folders without an option: unetkit predict --checkpoint best.pt IMAGES --out FOLDER)"
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parsed(parser, argv)
    code = run_command(args)
    leave_without_teardown(code)  # a torchrun rank that set up a process group leaves here (it says why)
    return code


def run_command(args: argparse.Namespace) -> int:
    """The command's exit code, with its errors said in one line."""
    try:
        if one_of_several_ranks() and args.command != "train":
            raise UnetkitError(f"{args.command} runs in one process: run it without torchrun, which only train uses")
        code = args.func(args)
    except (BrokenPipeError, OutputClosed) as err:  # output piped into `head`, a pager that quit
        # Nothing more reaches stdout (Python's exit would fail flushing it); stderr says why the
        # command stopped, and the code is a shell's for a broken pipe (128 + SIGPIPE), not success.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # a stdout with no file behind it (captured, replaced): nothing to flush
            pass
        detail = f": {err}" if isinstance(err, OutputClosed) else ""
        say_if_possible(f"unetkit {args.command}: stopped, its output was closed{detail}")
        return 141
    except UnetkitError as err:
        say_for_the_job(f"unetkit {args.command}: error: {err}", say_if_possible)
        return 2
    except KeyboardInterrupt as err:
        # The trainer re-raises Ctrl-C with where its checkpoint is and how to resume.
        detail = f": {err}" if str(err) else ""
        say_for_the_job(f"unetkit {args.command}: interrupted{detail}", say_if_possible)
        return 130
    except (RuntimeError, MemoryError) as err:
        if out_of_memory(err):  # what the budget's floor let through (setup.check_training_fits)
            fix = MEMORY_FIX.get(args.command, "close other programs, or run it on a machine with more memory")
            say_for_the_job(f"unetkit {args.command}: error: out of memory{wanted(err)}; {fix}", say_if_possible)
            return 2
        if not (one_of_several_ranks() and another_rank_left(err)):
            raise
        rank = os.environ["RANK"]
        say_if_possible(f"unetkit {args.command}: rank {rank} stopped: another process of this torchrun job left it")
        return 1
    return code or 0


MEMORY_FIX = {
    "train": "use a smaller --batch-size, --patch-size or --scale (a last.pt already written stays whole)",
    "predict": "use a smaller --tile or --batch-size, or --out-of-core on for a large TIFF",
    "evaluate": "use a smaller --tile or --batch-size",
}


def out_of_memory(err: BaseException) -> bool:
    """An allocation that failed: Python's MemoryError, torch's OutOfMemoryError (CUDA), or the CPU
    allocator's RuntimeError ("DefaultCPUAllocator: can't allocate memory")."""
    text = str(err)
    return isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError" or "can't allocate memory" in text


def wanted(err: BaseException) -> str:
    """' (could not allocate 320 MiB more)', where the allocator said how much."""
    asked = re.search(r"allocate (\d+) bytes", str(err))
    return f" (could not allocate {int(asked[1]) / 2**20:,.0f} MiB more)" if asked else ""


def say_if_possible(line: str) -> None:
    """Print to stderr, unless it too has gone (`2>&1 | head`)."""
    try:
        print(_printable(line), file=sys.stderr, flush=True)
    except OSError:
        pass


def _printable(text: str) -> str:
    """File names that are not valid UTF-8 reach Python as lone surrogates, which cannot be
    printed; show their bytes as \\xNN (as `ls -b` does) so the message still names the file."""
    raw = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    return raw.encode(encoding, "backslashreplace").decode(encoding)
