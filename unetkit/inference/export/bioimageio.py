"""`unetkit export --bioimageio model.zip`: a bioimage.io model package, the format that Fiji
(deepImageJ), ilastik, QuPath and napari read, so a unetkit model runs there with no code.

The package (bioimage.io model spec 0.5, written by bioimageio.spec, tested by bioimageio.core):
- input `raw`: (batch, channel, y, x) float32 pixel values as the file holds them (0-255 for
  8-bit images), made into what unetkit's model saw by the spec's own preprocessing:
  scale_linear (1 / the type's maximum) then fixed_zero_mean_unit_variance with the training
  set's channel means and standard deviations;
- output `probabilities`: one channel per class (background and foreground for a binary model),
  the same size as the input;
- weights: TorchScript and ONNX of the network with its resize (a model trained at --scale)
  and softmax/sigmoid inside, so any y, x in steps of the network's size multiple work;
- a test input (the sample image) and its expected output, a cover image (the sample with its
  predicted classes overlaid) and a short documentation page.
"""

from __future__ import annotations

import re
import string
import tempfile
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unetkit.data.io import read_image_scaled
from unetkit.data.preprocess import percentile_scaled
from unetkit.data.tiff_axes import count_planes
from unetkit.errors import UnetkitError
from unetkit.inference.outputs import overlay, save_png
from unetkit.models.checkpoint import load_checkpoint, model_from_checkpoint
from unetkit.models.spec import ModelSpec
from unetkit.runtime.atomic import WRITE_FIX, atomic_write, ensure_folder

# The characters bioimageio.spec 0.5 allows in a model's name (ModelDescr.name).
NAME_CHARACTERS = set(string.ascii_letters + string.digits + "_+- ()")


class ProbabilityNet(nn.Module):
    """Normalised image -> class probabilities at the input's size (the resize inside, as
    predict's: antialiased going down, bilinear back up)."""

    def __init__(self, model: nn.Module, scale: float, binary: bool, channels: int) -> None:
        super().__init__()
        self.model, self.scale, self.binary = model, scale, binary
        self.down = AntialiasedDownscale(scale, channels) if scale < 1.0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        if self.down is not None:
            x = self.down(x)
        elif self.scale != 1.0:  # going up, antialiasing changes nothing (within 4e-7)
            x = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        logits = self.model(x)
        if self.scale != 1.0:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        if self.binary:
            foreground = torch.sigmoid(logits)
            return torch.cat([1 - foreground, foreground], dim=1)
        return torch.softmax(logits, dim=1)


class AntialiasedDownscale(nn.Module):
    """F.interpolate(x, scale_factor=1/k, mode="bilinear", antialias=True) for a whole factor k,
    as preprocessing resizes for a model trained at --scale 1/k, written as a depthwise strided
    convolution that ONNX can hold (its TorchScript exporter has no antialiased resize; plain
    bilinear instead left a scale-0.25 CamVid package agreeing with predict on 93% of pixels, a
    red-team finding). The taps are PyTorch's own, read off an identity matrix; at the borders the
    zero padding's share is divided out, as PyTorch renormalises the taps it keeps."""

    def __init__(self, scale: float, channels: int) -> None:
        super().__init__()
        factor = round(1 / scale)
        if abs(1 / scale - factor) > 1e-6:
            raise UnetkitError(
                f"a model trained at --scale {scale:g} resizes by a fraction bioimage.io's formats cannot hold "
                "exactly; train with --scale 1, 0.5, 0.25 or 0.125 (the recipes' choices) or export --onnx instead"
            )
        length = 8 * factor  # long enough that its middle output is away from both borders
        impulses = torch.eye(length).view(1, length, 1, length)  # channel i: a 1 at pixel i of a row
        outputs = F.interpolate(impulses, size=(1, length // factor), mode="bilinear", antialias=True)[0, :, 0]
        middle = outputs[:, length // factor // 2]  # one output's weight on each input pixel
        taps = middle.nonzero().flatten()
        start = int(taps[0]) - factor * (length // factor // 2)  # the first tap, from the output's first pixel
        self.factor, self.before = factor, -start
        self.after = start + len(taps) - factor  # the last output's taps past the input's end
        kernel = middle[taps[0] : taps[-1] + 1] / middle.sum()
        weights = torch.outer(kernel, kernel).expand(channels, 1, -1, -1).clone()  # one per channel (depthwise)
        self.register_buffer("weights", weights, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = (self.before, self.after, self.before, self.after)
        summed = F.conv2d(F.pad(x, pad), self.weights, stride=self.factor, groups=self.weights.shape[0])
        # the taps' share that fell on pixels, not on the padding
        kept = F.conv2d(F.pad(torch.ones_like(x[:, :1]), pad), self.weights[:1], stride=self.factor)
        return summed / kept


def size_step(multiple: int, scale: float) -> int:
    """The input size step that keeps the scaled size a multiple of the network's `multiple`."""
    step = multiple / scale
    if abs(step - round(step)) > 1e-6:
        raise UnetkitError(
            f"a model trained at --scale {scale:g} cannot be described by fixed size steps for bioimage.io; "
            "train with a --scale whose inverse times the network's size multiple is whole (e.g. 1, 0.5, 0.25)"
        )
    return round(step)


def sample_image(path: str | Path | None, channels: int, step: int) -> tuple[np.ndarray, float]:
    """(C, H, W) float32 raw pixel values of the sample (a stack's first plane), cropped to whole
    size steps, and the type's maximum (255 for 8-bit); without a file, a smooth synthetic 8-bit
    image."""
    if path is None:
        side = 4 * step
        yy, xx = np.mgrid[:side, :side] / side
        raw = (127 + 100 * np.sin(6 * yy) * np.cos(5 * xx))[None].repeat(channels, 0)
        return raw.astype(np.float32), 255.0
    plane = 0 if count_planes(Path(path)) > 1 else None  # the package's test input is one 2-D image
    image, maximum = read_image_scaled(path, plane)  # (H, W, C) in [0, 1], and the raw value of 1.0
    if image.shape[2] != channels:
        raise UnetkitError(f"{path}: the sample has {image.shape[2]} channel(s), the model takes {channels}")
    height, width = (image.shape[0] // step) * step, (image.shape[1] // step) * step
    if min(height, width) < step:
        raise UnetkitError(f"{path}: the sample is smaller than the model's {step}x{step} minimum")
    raw = image[:height, :width].transpose(2, 0, 1) * maximum
    return raw.astype(np.float32), maximum


def normalised(raw: np.ndarray, maximum: float, spec: ModelSpec) -> torch.Tensor:
    """The model's input from (C, H, W) raw pixels, as unetkit's Preprocess makes it."""
    image = raw / maximum
    if spec.preprocess.percentiles is not None:
        image = percentile_scaled(image.transpose(1, 2, 0), *spec.preprocess.percentiles).transpose(2, 0, 1)
    mean = np.asarray(spec.preprocess.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.preprocess.std, dtype=np.float32)[:, None, None]
    return torch.from_numpy((image - mean) / std)[None].float()


def preprocessing(spec: ModelSpec, maximum: float) -> list[Any]:
    """The spec's steps for unetkit's Preprocess: the type's range (scale_linear) or each image's
    percentiles per channel (scale_range, then clip to [0, 1]), then the training set's mean and std."""
    from bioimageio.spec.model import v0_5 as bio

    normalise = bio.FixedZeroMeanUnitVarianceAlongAxisKwargs(
        mean=list(spec.preprocess.mean), std=list(spec.preprocess.std), axis=bio.AxisId("channel")
    )
    if spec.preprocess.percentiles is None:
        scaled = [bio.ScaleLinearDescr(kwargs=bio.ScaleLinearKwargs(gain=1 / maximum))]
    else:
        low, high = spec.preprocess.percentiles
        axes = [bio.AxisId("y"), bio.AxisId("x")]
        kwargs = bio.ScaleRangeKwargs(axes=axes, min_percentile=low, max_percentile=high)
        scaled = [bio.ScaleRangeDescr(kwargs=kwargs), bio.ClipDescr(kwargs=bio.ClipKwargs(min=0.0, max=1.0))]
    return [*scaled, bio.FixedZeroMeanUnitVarianceDescr(kwargs=normalise)]


def write_weights(net: nn.Module, example: torch.Tensor, folder: Path) -> tuple[Path, Path]:
    """TorchScript (traced) and ONNX (opset 17, dynamic batch/y/x) files of `net`."""
    torchscript, onnx_file = folder / "weights_torchscript.pt", folder / "weights.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.trace(net, example), str(torchscript))
        axes = {0: "batch", 2: "y", 3: "x"}
        names = {"input_names": ["raw"], "output_names": ["probabilities"]}
        dynamic = {"raw": axes, "probabilities": axes}
        torch.onnx.export(
            net, (example,), str(onnx_file), opset_version=17, dynamic_axes=dynamic, dynamo=False, **names
        )
    return torchscript, onnx_file


@dataclass
class PackageInputs:
    """What a package is made of, every part that can be refused already checked (prepare_package)."""

    net: nn.Module
    spec: ModelSpec
    step: int
    raw: np.ndarray
    maximum: float
    name: str
    authors: list[str] | None


def prepare_package(
    checkpoint: str | Path | dict[str, Any],
    sample: str | Path | None = None,
    name: str | None = None,
    authors: list[str] | None = None,
) -> PackageInputs:
    """The package's network, sample and names, or the one line that refuses them: called before
    `unetkit export` writes any of its files, so a refused --name leaves no ONNX file behind."""
    check_names(name, authors)
    try:
        from bioimageio.spec import save_bioimageio_package  # noqa: F401
    except ImportError:
        raise UnetkitError("bioimage.io export needs bioimageio.core: pip install 'unetkit[bioimageio]'") from None
    state = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    spec = ModelSpec.from_state(state)
    run_name = "model" if isinstance(checkpoint, dict) else Path(checkpoint).resolve().parent.name
    name = name or spelled_as_name(f"unetkit {spec.name} {run_name}")
    model = model_from_checkpoint(state, "checkpoint" if isinstance(checkpoint, dict) else checkpoint).eval()
    step = size_step(model.size_multiple, spec.preprocess.scale)
    net = ProbabilityNet(model, spec.preprocess.scale, spec.binary, spec.in_channels).eval()
    raw, maximum = sample_image(sample, spec.in_channels, step)
    return PackageInputs(net, spec, step, raw, maximum, name, authors)


def export_bioimageio(
    checkpoint: str | Path | dict[str, Any] | PackageInputs,
    out: str | Path,
    sample: str | Path | None = None,
    name: str | None = None,
    authors: list[str] | None = None,
) -> Path:
    """Write the bioimage.io package `out` (.zip) and return its path; see the module docstring.
    `checkpoint` may be prepare_package's inputs, already checked."""
    inputs = checkpoint if isinstance(checkpoint, PackageInputs) else prepare_package(checkpoint, sample, name, authors)
    spec = inputs.spec
    with torch.no_grad():
        expected = inputs.net(normalised(inputs.raw, inputs.maximum, spec)).numpy()
    out = Path(out)
    ensure_folder(out.parent)  # a folder that cannot be made is said before any work
    try:
        with tempfile.TemporaryDirectory(prefix="unetkit-bioimageio-") as folder:
            files = package_files(Path(folder), inputs.net, inputs.raw, inputs.maximum, expected, spec)
            description = describe(files, spec, inputs.step, inputs.maximum, inputs.name, inputs.authors)
            from bioimageio.spec import save_bioimageio_package

            # The zip is written whole under a temporary name and renamed into place: a full disk
            # or a read-only folder leaves no partial package (atomic_write says which, in one line).
            atomic_write(out, lambda temporary: save_bioimageio_package(description, output_path=temporary))
    except OSError as err:  # the temporary folder's files (a full /tmp)
        where = err.filename or tempfile.gettempdir()
        raise UnetkitError(f"{where}: cannot write the package's files ({err.strerror or err}); {WRITE_FIX}") from None
    return out


def check_names(name: str | None, authors: list[str] | None) -> None:
    """--name and --author as bioimage.io takes them (a name of NAME_CHARACTERS, 5 to 128 of them; an
    author without '/'): refused with a spelling that fits rather than changed unasked. The default
    name, made of the run folder's (which may hold dots or accents: `cells.v2`), is spelled to fit."""
    if name is not None and not (set(name) <= NAME_CHARACTERS and 5 <= len(name) <= 128):
        raise UnetkitError(
            f"--name {name!r}: bioimage.io names hold only ASCII letters, digits, spaces and _+-() (5 to 128 "
            f"characters); e.g. --name {spelled_as_name(name)!r}"
        )
    for author in authors or []:
        if "/" in author:
            raise UnetkitError(f"--author {author!r}: bioimage.io author names cannot hold '/'; write it without")


def spelled_as_name(text: str) -> str:
    """`text` in NAME_CHARACTERS: accents dropped (é -> e), any other character a '-', at least 5
    and at most 64 characters (bioimage.io advises 64)."""
    letters = []
    for character in text:
        plain = unicodedata.normalize("NFKD", character).encode("ascii", "ignore").decode()
        letters.append(plain if plain and set(plain) <= NAME_CHARACTERS else "-")
    name = re.sub("-{2,}", "-", "".join(letters)).strip(" -")[:64].strip()
    return name if len(name) >= 5 else f"{name} model".strip()


def package_files(folder: Path, net: nn.Module, raw: np.ndarray, maximum: float, expected: np.ndarray,
                  spec: ModelSpec) -> dict[str, Path]:  # fmt: skip
    """The files the package holds besides rdf.yaml."""
    files = {"input": folder / "test_input.npy", "output": folder / "test_output.npy"}
    np.save(files["input"], raw[None])
    np.save(files["output"], expected.astype(np.float32))
    files["torchscript"], files["onnx"] = write_weights(net, normalised(raw, maximum, spec), folder)
    files["cover"] = folder / "cover.png"
    image = (raw.transpose(1, 2, 0) / maximum).clip(0, 1)
    save_png(files["cover"], overlay(image, expected[0].argmax(axis=0), spec.mask_values.legend))
    files["documentation"] = folder / "README.md"
    files["documentation"].write_text(documentation(spec))
    return files


def documentation(spec: ModelSpec) -> str:
    classes = ", ".join(f"channel {k}: mask value {v}" for k, v in enumerate(spec.mask_values.values))
    return (
        f"# unetkit {spec.name}\n\nA U-Net trained with unetkit for semantic segmentation.\n\n"
        f"- input: {spec.in_channels} channel(s), raw pixel values; scaled to [0, 1] and normalised with the "
        f"training set's mean {spec.preprocess.mean} and standard deviation {spec.preprocess.std}\n"
        f"- output: the probability of each class ({classes}); the predicted class is the most probable\n"
        f"- resolution: the network sees the image resized by {spec.preprocess.scale:g} and answers at the "
        "input's size\n"
    )


def describe(files: dict[str, Path], spec: ModelSpec, step: int, maximum: float, name: str,
             authors: list[str] | None) -> Any:  # fmt: skip
    """The bioimage.io ModelDescr (spec 0.5) of the package."""
    from bioimageio.spec.model import v0_5 as bio

    channels = [bio.Identifier(f"channel{k}") for k in range(spec.in_channels)]
    classes = [bio.Identifier(f"class{k}_value{v}") for k, v in enumerate(spec.mask_values.values)]
    space_in = [bio.SpaceInputAxis(id=bio.AxisId(a), size=bio.ParameterizedSize(min=step, step=step)) for a in "yx"]
    raw = bio.TensorId("raw")
    space_out = [bio.SpaceOutputAxis(id=bio.AxisId(a), size=bio.SizeReference(tensor_id=raw, axis_id=bio.AxisId(a)))
                 for a in "yx"]  # fmt: skip
    inputs = bio.InputTensorDescr(
        id=raw,
        description="raw pixel values (0-255 for 8-bit images)",
        axes=[bio.BatchAxis(), bio.ChannelAxis(channel_names=channels), *space_in],
        test_tensor=bio.FileDescr(source=files["input"]),
        data=bio.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=preprocessing(spec, maximum),
    )
    outputs = bio.OutputTensorDescr(
        id=bio.TensorId("probabilities"),
        description="the probability of each class",
        axes=[bio.BatchAxis(), bio.ChannelAxis(channel_names=classes), *space_out],
        test_tensor=bio.FileDescr(source=files["output"]),
        data=bio.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
    )
    weights = bio.WeightsDescr(
        torchscript=bio.TorchscriptWeightsDescr(
            source=files["torchscript"], pytorch_version=bio.Version(torch.__version__.split("+")[0])
        ),
        onnx=bio.OnnxWeightsDescr(source=files["onnx"], opset_version=17),
    )
    return bio.ModelDescr(
        name=name,
        description=f"U-Net semantic segmentation ({len(classes)} classes) trained with unetkit",
        authors=[bio.Author(name=author) for author in (authors or ["unetkit user"])],
        cite=[
            bio.CiteEntry(
                text="Ronneberger, Fischer, Brox: U-Net (MICCAI 2015)", doi=bio.Doi("10.1007/978-3-319-24574-4_28")
            )
        ],  # fmt: skip
        license=bio.LicenseId("MIT"),
        documentation=bio.FileDescr(source=files["documentation"]),
        covers=[bio.FileDescr(source=files["cover"])],
        tags=["unet", "segmentation", "unetkit", "2d"],
        inputs=[inputs],
        outputs=[outputs],
        weights=weights,
    )
