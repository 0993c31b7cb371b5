"""A trained model, ready to turn images into masks: the checkpoint's model (or its ONNX export),
preprocessing and mask values together, so a prediction is made exactly the way training saw its
data. Large images go through overlapping tiles; `tta` averages flipped/rotated views."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from unetkit.data import read_image
from unetkit.data.io import MAX_CHANNELS, PixelRule, pixel_maximum, refuse_non_finite
from unetkit.data.limits import check_declared_pixels
from unetkit.data.tiff_axes import AXIS_NEED, CHANNEL_AXIS_HELP, PLANE_AXIS_HELP, AxisChoice, axis_letter
from unetkit.errors import UnetkitError
from unetkit.inference.objects import ObjectRule, split_objects
from unetkit.inference.tiling import Forward, predict_tiled, with_tta
from unetkit.models.blocks import folded, fuse_conv_bn, fused_for_cpu
from unetkit.models.checkpoint import load_checkpoint, model_from_checkpoint
from unetkit.models.heads import class_probabilities, predicted_classes
from unetkit.models.registry import model_class
from unetkit.models.spec import ModelSpec, trained_orientation
from unetkit.runtime.allocator import keep_freed_memory
from unetkit.runtime.amp import AMP_MODES, resolve_amp
from unetkit.runtime.hardware import channels_last_is_faster, fastest_call, resolve_device
from unetkit.runtime.notes import said, say_once
from unetkit.runtime.options import (
    check_argument,
    check_fields,
    known_fields_only,
    known_keywords,
    number,
    option,
    whole,
)
from unetkit.runtime.progress import Progress, progress_to

TILING_MODES = ("auto", "on", "off")
BACKENDS = ("auto", "torch", "onnxruntime")
MAX_ONNX_LOGIT_DIFFERENCE = 1e-3  # exports measured here differ by ~3e-8
AUTO_TILING_PIXELS = 1024 * 1024  # above this many pixels (at the model's scale) "auto" tiles
DEFAULT_BATCH_SIZE = 4  # a batch of 4 cost ~20% less per image than batches of one (inference/batched.py)
# A batch of tiles' full-resolution activation map at most this large: 4 x 512^2 tiles of 16
# channels in bf16. A slide's peak memory follows the batch (20,000^2, fp32: 1,164 MiB at 4 tiles,
# 948 at 2; benchmarks/NOTES.md), its speed hardly (168.5 against 174.3 s);
# a 4096^2 image in memory: 909 MiB at one 768^2 tile, 1,220 at four, in the same time.
SLIDE_MAP_BYTES = 32 * 2**20
DEFAULT_TILE = 512
# The largest of these whose one tile's map fits SLIDE_MAP_BYTES, in memory and out of core alike (one
# mask either way; benchmarks/NOTES.md, twentieth slice). Out of core an 8192^2 slide of a
# 16-channel model in bf16 took 9.0-9.4 s at 4 x 512^2 tiles a batch (730-762 MiB), 7.6-8.2 s at
# one 768^2 tile (646-663 MiB) and 7.7-8.2 s at one 1024^2 (808-842 MiB): fewer tiles, less overlap
# computed twice and fewer tile edges (benchmarks/NOTES.md). In fp32 (a map of 38 MiB) it stays 512.
SLIDE_TILES = (768, DEFAULT_TILE)
# Out of core, a band of tile rows' blended sums and input (4 bytes a class and a channel a pixel)
# at most this large, else the tile (the band's height) shrinks to one of BAND_TILES: a 4-class
# model's 20,000 px band holds 293 MiB in 768 px tiles (a 923 MiB peak), a 12-class RGB model's
# 879 MiB (benchmarks/NOTES.md, issue 36).
SLIDE_BAND_BYTES = 320 * 2**20
BAND_TILES = (512, 384, 256)


class SlidePlan(NamedTuple):
    """How a slide runs out of core: the forward, the tile side and the tiles per batch."""

    forward: Forward
    tile: int
    batch_size: int


@known_fields_only
@dataclass
class InferenceOptions:
    """How predict and evaluate run a model; each field is one option of both commands
    (unetkit/cli/arguments.py makes them from these fields)."""

    threshold: float = option(
        0.5, "foreground probability cut-off for binary models", valid=lambda v: number(v) and 0 < v < 1,
        need="a probability strictly between 0 and 1, e.g. 0.5",
    )  # fmt: skip
    tiling: str = option("auto", "overlapping tiles: auto tiles images above 1024x1024 pixels", choices=TILING_MODES)
    tile: int | None = option(
        None, f"tile size in pixels, at the model's scale (default {SLIDE_TILES[0]} where one tile's full-size "
        f"activation map fits 32 MiB, as a 16-channel model's in bf16, else {DEFAULT_TILE}; out of core, smaller "
        "for a wide image of many classes, said)",
        valid=whole(16, 65536), need="16 pixels or more",
    )  # fmt: skip
    overlap: int = option(64, "overlap between tiles in pixels; blended with a Gaussian window")
    zoom: float = option(
        1.0, "resize each image by this factor on top of the model's own scale, for images at another "
        "magnification than its training images: 0.5 where objects are twice the size in pixels of those it "
        "learned (stardist's scale; cellpose's diameter ratio); outputs and the object sizes follow",
        valid=lambda v: number(v) and 1 / 16 <= v <= 16, need="a factor from 0.0625 to 16, e.g. 0.5",
    )  # fmt: skip
    batch_size: int | None = option(
        None, f"images of one size, or tiles, per forward pass (images: default {DEFAULT_BATCH_SIZE}; tiles: as "
        "many as keep a batch's full-size activation map within 32 MiB, up to 4: one 768 px tile in bf16, two "
        "of 512 px in fp32, for a 16-channel model)", valid=whole(1, 4096), need="at least 1 (at most 4096)",
    )  # fmt: skip
    # 2: one thread can decode while another writes, the model in the main thread (inference/batched.py).
    workers: int = option(
        2, "predict: threads that decode images and write outputs while the model runs, images batched; "
        "0: one image at a time, in one thread", valid=whole(0, 256), need="0 or more threads (at most 256)",
    )  # fmt: skip
    tta: bool = option(
        False, "test-time augmentation: average flipped (and, for square tiles, rotated) predictions; "
        "for a model trained upright, the left-right mirror only",
        flag=("--tta", True),
    )  # fmt: skip
    amp: str = option("auto", "mixed precision for PyTorch models, as for train", choices=AMP_MODES)
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    backend: str = option(
        "auto",
        "for --checkpoint: run with PyTorch, or export on the fly to ONNX Runtime; auto times both on CPUs "
        "without bf16 (fp32) when onnxruntime is installed and keeps the faster",
        choices=BACKENDS,
    )
    progress: bool = option(False, "no progress bar", flag=("--no-progress", False))
    out_of_core: str = option(
        "auto", "predict TIFFs a band of tiles at a time and write a tiled TIFF mask (<name>.tif), never holding "
        "the image or its output whole: auto for TIFFs above 64 Mpx", choices=("auto", "on", "off"),
    )  # fmt: skip
    channel_axis: str | None = option(None, CHANNEL_AXIS_HELP, valid=axis_letter, need=AXIS_NEED, parse=str.upper)
    plane_axis: str | None = option(None, PLANE_AXIS_HELP, valid=axis_letter, need=AXIS_NEED, parse=str.upper)
    # Objects (predict --instances, evaluate's object scores); unset: the rule training chose on
    # its validation images, kept in the checkpoint (inference/objects.py).
    seed_threshold: float | None = option(
        None, "objects: cores are pixels above this probability (default: the checkpoint's)", group="objects",
        valid=lambda v: number(v) and 0 < v < 1, need="a probability strictly between 0 and 1, e.g. 0.9",
    )  # fmt: skip
    flood_threshold: float | None = option(
        None, "objects: cores grow over pixels above this probability (default: the checkpoint's)",
        group="objects", valid=lambda v: number(v) and 0 < v < 1,
        need="a probability strictly between 0 and 1, e.g. 0.5",
    )  # fmt: skip
    min_size: int | None = option(
        None, "objects: drop objects smaller than this many pixels (default: the checkpoint's)", group="objects",
        valid=whole(0, 2**31), need="0 or more pixels",
    )  # fmt: skip
    max_hole: int | None = option(
        None, "objects: fill holes up to this many pixels (default: the checkpoint's)", group="objects",
        valid=whole(0, 2**31), need="0 or more pixels",
    )  # fmt: skip

    @property
    def axes(self) -> AxisChoice:
        """How TIFF axes are read: --channel-axis, --plane-axis."""
        return AxisChoice(self.channel_axis, self.plane_axis)

    def __post_init__(self) -> None:
        check_fields(self)
        if not (number(self.overlap) and 0 <= self.overlap < (self.tile or float("inf"))):
            raise UnetkitError(f"--overlap {self.overlap} must be at least 0 and smaller than --tile {self.tile}")


def tiff_axes_for(options: InferenceOptions, trained: dict) -> AxisChoice:
    """How TIFF axes are read: the options' --channel-axis / --plane-axis, else the run's
    (`trained`: its config), for files like its own. Where a file lacks the run's axis its own
    metadata holds, and the channel count is checked: a tagged YXC file, or a flat gray one, was
    refused over the run's Q, naming an option the user never typed (a red-team round)."""
    if options.channel_axis is not None or options.plane_axis is not None:
        return options.axes
    return AxisChoice(trained.get("channel_axis"), trained.get("plane_axis"), strict=False)


class Predictor:
    """Load from a checkpoint (best.pt / last.pt, or its already loaded dict), a .safetensors
    export, or an exported .onnx."""

    @known_keywords
    def __init__(
        self,
        source: str | Path | dict[str, Any],
        device: str | None = None,
        amp: str | None = None,
        options: InferenceOptions | None = None,
        on_progress: Progress | None = None,
    ) -> None:
        check_argument(source, (str, Path, dict), "Predictor(source)", "Predictor('runs/cells/best.pt')")
        check_argument(
            options, (InferenceOptions, type(None)), "Predictor(options=)", "InferenceOptions(threshold=0.3)"
        )
        check_argument(device, (str, type(None)), "Predictor(device=)", "device='cpu'")
        check_argument(amp, (str, type(None)), "Predictor(amp=)", "amp='off'")
        self.options = options or InferenceOptions()
        # who hears the tiles of a tiled or out-of-core image: `on_progress` (napari's), else the bar
        self.progress = progress_to(on_progress, self.options.progress, "tile")
        device, amp = device or self.options.device, amp or self.options.amp  # the arguments win
        name = "checkpoint" if isinstance(source, dict) else source  # in messages
        if isinstance(source, str | Path) and Path(source).suffix.lower() == ".onnx":
            from unetkit.inference.onnx_runtime import OnnxModel

            if self.options.backend == "torch":
                raise UnetkitError(
                    f"{source}: an .onnx model runs on ONNX Runtime; for --backend torch pass --checkpoint"
                )
            onnx_model = OnnxModel(source)
            state, self._forward, self.backend = onnx_model.metadata, onnx_model, "onnxruntime"
            self.model, self.amp, self._untimed = None, None, None  # no PyTorch model here
        else:
            state = source if isinstance(source, dict) else load_checkpoint(source)
            self.device = resolve_device(device)
            if self.device.type == "cpu":
                keep_freed_memory()  # activation maps from the heap: 1.5x the tiles per second (AMX CPU)
            self.amp = resolve_amp(amp, self.device)
            self.model = model_from_checkpoint(state, name)
            self.memory_format = (
                torch.channels_last if channels_last_is_faster(self.device, self.amp.dtype) else torch.contiguous_format
            )
            # BN folded into the convs: +7% (paper U-Net) to +13% (fast recipe) images/s, bf16 CPU.
            self.model = fuse_conv_bn(self.model).to(self.device, memory_format=self.memory_format)
            self._forward, self.backend, self._untimed = self._torch_forward, "torch", None
            self._fuse_for_cpu(state)  # first, so ONNX Runtime is timed against the fused model
            self._choose_backend(state, source)
        # Checked here too, not only when a file is loaded: an .onnx export's metadata and a dict
        # given in Python pass the same check as a .pt or .safetensors file.
        self.spec = ModelSpec.from_state(state, name)
        self.state_object_rule = ObjectRule.from_state(state.get("object_rule"), name)
        trained = state.get("config") if isinstance(state.get("config"), dict) else {}  # the run's TIFF axes
        self.axes = tiff_axes_for(self.options, trained)
        self.upright = trained_orientation(state) == "upright"  # --tta shows it only the views it trained on
        # The run's training images (its folder, their names): scores on them flatter the model.
        split = state.get("split") if isinstance(state.get("split"), dict) else {}
        self.trained_on = (trained.get("images"), frozenset(split.get("train") or ()))
        self.mask_values = self.spec.mask_values
        self.preprocess = self.spec.preprocess  # at --zoom, the images are resized by it too
        if self.options.zoom != 1:
            self.preprocess = dataclasses.replace(self.preprocess, scale=self.preprocess.scale * self.options.zoom)
        self.binary, self.num_outputs = self.spec.binary, self.spec.num_outputs  # logits per pixel, as built
        self._check_options_against_the_model()

    def _check_options_against_the_model(self) -> None:
        """--threshold cuts binary models: given to a model of classes, it is said to change nothing
        (the nuclei model took 0.95 in silence and wrote the same files: a red-team round). And the
        default tile depends on the model (tile): an --overlap over it is refused with it."""
        if self.options.overlap >= self.tile:  # a --tile given was checked with the options
            raise UnetkitError(
                f"--overlap {self.options.overlap} must be smaller than the tile, {self.tile} px for this model "
                f"({'16-bit' if self._map_bytes() == 2 else 'fp32'} maps); give --tile above it"
            )
        if not self.binary and self.options.threshold != InferenceOptions().threshold:
            say_once("threshold", f"--threshold {self.options.threshold:g} cuts binary models only: this model has "
                     f"{self.mask_values.num_classes} classes and each pixel takes the most probable; for its "
                     "objects, --seed-threshold and --flood-threshold")  # fmt: skip

    @property
    def object_rule(self) -> ObjectRule:
        """How objects are cut from the probabilities: the options given, else the rule training
        chose on its validation images (kept in the checkpoint), else the defaults."""
        rule = self.state_object_rule or ObjectRule.default(self.mask_values.instances)
        rule = rule.at_zoom(self.options.zoom)  # sizes in these images' pixels; those given are taken as given
        given = {"seed": self.options.seed_threshold, "flood": self.options.flood_threshold}
        given.update(min_size=self.options.min_size, max_hole=self.options.max_hole)
        return dataclasses.replace(rule, **{k: v for k, v in given.items() if v is not None})

    def objects(self, logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(label image, class of each label id, (K, H, W) probabilities) from one image's logits."""
        probabilities = self.probabilities(logits)
        return *self.objects_from_probabilities(probabilities), probabilities

    def objects_from_probabilities(
        self, probabilities: np.ndarray, rule: ObjectRule | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(label image, class of each label id) by `rule` (default: object_rule)."""
        classes = self.mask_values.object_class_ids
        return split_objects(probabilities, rule or self.object_rule, classes, self.mask_values.instances)

    @property
    def num_classes(self) -> int:
        return self.mask_values.num_classes

    def _choose_backend(self, state: dict[str, Any], source: str | Path | dict[str, Any]) -> None:
        """Run a checkpoint's model with PyTorch, or export it to ONNX Runtime: at once where
        --backend onnxruntime asks for it; with `auto` perhaps, later (choose_backend_now)."""
        wanted = self.options.backend
        if wanted == "torch":
            return
        if wanted == "auto":
            fp32_cpu = self.device.type == "cpu" and self.amp.dtype is None
            if fp32_cpu and importlib.util.find_spec("onnxruntime") is not None:
                self._untimed = source  # timed at the first forward in memory; a file is read again then
            return
        if self.device.type != "cpu":
            raise UnetkitError("--backend onnxruntime runs on the CPU; use --device cpu")
        self._forward, self.backend = self._exported(state), "onnxruntime"

    def choose_backend_now(self) -> None:
        """--backend auto's choice, made once, before the first forward in memory: on a CPU
        without bf16 autocast (fp32), with onnxruntime installed, export (about a second), time one
        256x256 forward each way (PyTorch's with the blocks fused for the CPU: 0.023 against ONNX
        Runtime's 0.019 s on an AVX-512 CPU; its blocked-layout kernels ran the U-Nets 1.2-1.5x
        faster than PyTorch fp32, benchmarks/NOTES.md) and keep the faster. Not made for slides
        (slide_plan), so a run of slides alone never loads ONNX Runtime: its export left 170 MiB
        more in a 20,000^2 slide's peak (1,097 against 924 MiB, fp32)."""
        source, self._untimed = self._untimed, None
        if source is None:
            return
        state = source if isinstance(source, dict) else load_checkpoint(source)
        try:
            onnx_model = self._exported(state)
        except Exception:  # only a speed-up was at stake: PyTorch runs the model as well
            return
        x = torch.randn(1, ModelSpec.from_state(state).in_channels, 256, 256)
        # PyTorch first: ONNX Runtime's threads keep spinning for a while after a run.
        torch_time = fastest_call(partial(self._torch_forward, x), 2)
        if torch_time > fastest_call(partial(onnx_model, x), 2):
            self._forward, self.backend = onnx_model, "onnxruntime"

    def _exported(self, state: dict[str, Any]) -> Forward:
        """The checkpoint's model on ONNX Runtime, exported on the fly and checked against PyTorch."""
        from unetkit.inference.export.onnx import export_onnx
        from unetkit.inference.onnx_runtime import OnnxModel

        with tempfile.TemporaryDirectory(prefix="unetkit-onnx-") as folder:
            path = Path(folder) / "model.onnx"
            difference = export_onnx(state, path)
            onnx_model = OnnxModel(path)  # the session holds the graph; the file can go
        if difference > MAX_ONNX_LOGIT_DIFFERENCE:
            raise UnetkitError(
                f"the ONNX export's logits differ from PyTorch's by {difference:.2g}; use --backend torch"
            )
        return onnx_model

    def _fuse_for_cpu(self, state: dict[str, Any]) -> None:
        """On a CPU with PyTorch, each convolution and its ReLU as one oneDNN call, the decoder's
        without its concatenation, the max-pools without indices (blocks.fused_for_cpu: 1.36x,
        then 1.1x, the tiles per second on an AMX CPU), kept only where it runs and gives the
        model's own logits on a probe input; elsewhere the model stays as it is."""
        # (A timm encoder's model has no ConvBNReLU blocks: nothing to fuse.)
        if self.backend != "torch" or self.device.type != "cpu" or not any(map(folded, self.model.modules())):
            return
        fused = fused_for_cpu(copy.deepcopy(self.model), self.amp.dtype or torch.float32)
        x = torch.rand(1, ModelSpec.from_state(state).in_channels, 64, 64)
        plain = self._torch_forward(x)
        model, self.model = self.model, fused
        try:
            same = torch.allclose(self._torch_forward(x), plain, rtol=1e-2, atol=1e-2 * float(plain.abs().max()))
        except (RuntimeError, AttributeError, NotImplementedError):  # no such oneDNN op in this build of torch
            same = False
        if not same:
            self.model = model

    def _torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), self.amp.autocast(self.device):
            return self.model(x.to(self.device, memory_format=self.memory_format)).float().cpu()

    @property
    def forward(self) -> Forward:
        """(N, C, h, w) model inputs -> (N, K, h, w) float32 logits, averaged over views with --tta."""
        self.choose_backend_now()
        return with_tta(self._forward, self.upright) if self.options.tta else self._forward

    @property
    def batch_size(self) -> int:
        """Images of one size per forward pass in memory: --batch-size, else 4 (tiles: tile_batch_size)."""
        return self.options.batch_size or DEFAULT_BATCH_SIZE

    @property
    def tile(self) -> int:
        """The tile side, in memory and out of core alike (so both give one mask): --tile, else the
        largest of SLIDE_TILES whose one tile's full-size activation map fits SLIDE_MAP_BYTES."""
        if self.options.tile:
            return self.options.tile
        return next((side for side in SLIDE_TILES if self._tile_map(side) <= SLIDE_MAP_BYTES), SLIDE_TILES[-1])

    @property
    def tile_batch_size(self) -> int:
        """Tiles per forward pass, in memory and out of core: --batch-size, else tiles_fitting."""
        return self.options.batch_size or self.tiles_fitting(self.tile)

    def tiles_fitting(self, tile: int) -> int:
        """As many tiles (1 to DEFAULT_BATCH_SIZE) as keep a batch's full-size activation map within
        SLIDE_MAP_BYTES: in memory, four 768 px tiles held 0.25-0.31 GiB more than one for the same
        time (a 4096^2 image; benchmarks/NOTES.md)."""
        return max(1, min(DEFAULT_BATCH_SIZE, SLIDE_MAP_BYTES // self._tile_map(tile)))

    def _tile_map(self, side: int) -> int:
        """Bytes of one side x side tile's full-size activation map (its first level's channels, as it says)."""
        return model_class(self.spec.name).probe_channels(self.spec.args) * side * side * self._map_bytes()

    def _map_bytes(self) -> int:
        """Bytes a number of an activation map: 4 in fp32 (ONNX Runtime, or no AMP), else 2 (bf16/fp16)."""
        return 4 if self.model is None or self.options.backend == "onnxruntime" or self.amp.dtype is None else 2

    def slide_plan(self, width: int = 0) -> SlidePlan:
        """(forward, tile, tiles per batch) out of core, where a slide's peak memory is the bar. ONNX
        Runtime runs a slide only where asked for (or given an .onnx model): its arena keeps its
        largest batch's maps, and a 20,000^2 slide (fp32) peaked at 1,162 MiB at 2 tiles a batch
        (939 at 1 tile, 205 s) against PyTorch's 924-948 MiB in 134-174 s (benchmarks/NOTES.md).
        The tile: `tile`, smaller where an image `width` px wide would hold a band over
        SLIDE_BAND_BYTES (band_tile); the tiles per batch: --batch-size, else as many as keep one
        batch's map within SLIDE_MAP_BYTES."""
        onnx_asked = self.model is None or self.options.backend == "onnxruntime"  # or an .onnx model given
        forward = self._forward if onnx_asked else self._torch_forward
        if self.options.tta:
            forward = with_tta(forward, self.upright)
        tile = self.tile if self.options.tile else self.band_tile(self.tile, width)
        return SlidePlan(forward, tile, self.options.batch_size or self.tiles_fitting(tile))

    def band_tile(self, tile: int, width: int) -> int:
        """`tile`, or the largest of BAND_TILES (above twice the overlap) under it whose band of an
        image `width` px wide (the blended sums and the input, 4 bytes each) fits SLIDE_BAND_BYTES;
        said, and said where even the smallest it may take holds more."""
        row = (self.num_outputs + self.spec.in_channels) * width * 4  # a band's bytes per row
        sides = [tile] + [side for side in BAND_TILES if 2 * self.options.overlap < side < tile]
        chosen = next((side for side in sides if side * row <= SLIDE_BAND_BYTES), sides[-1])
        over = chosen * row > SLIDE_BAND_BYTES
        if chosen != tile or over:
            mib = lambda side: f"{side * row / 2**20:,.0f} MiB"  # noqa: E731
            said = f"out of core, tiles of {chosen} px" + (f", not {tile}" if chosen != tile else "")
            said += f": this {self.num_outputs}-output model's bands of {width} px wide images hold {mib(chosen)}"
            said += f" ({mib(tile)} in {tile} px tiles)" if chosen != tile else ""
            if over:
                said += f"; over the {SLIDE_BAND_BYTES // 2**20} MiB aimed at, as tiles stay above twice the "
                said += f"--overlap and at least {BAND_TILES[-1]} px: a smaller --overlap lets them shrink"
            say_once(f"band tile {chosen} {width}", said + "; --tile sets it")
        return chosen

    def tiled(self, x: torch.Tensor) -> bool:
        """Whether the (C, h, w) model input `x` runs as overlapping tiles (--tiling)."""
        opts = self.options
        return opts.tiling == "on" or (opts.tiling == "auto" and x.shape[-1] * x.shape[-2] > AUTO_TILING_PIXELS)

    @torch.inference_mode()
    def logits(self, image: np.ndarray, path: str | Path = "image") -> torch.Tensor:
        """(H, W, C) image in [0, 1] -> (1, K, H, W) float32 logits at the image's own size. Other
        arrays (uint8/uint16, 2-D, float64) are first made so by read_image's pixel rule (model_image)."""
        check_argument(
            image, np.ndarray, "Predictor.logits(image)", "an (H, W, C) numpy array; files: predict_file(path)"
        )
        x = self.preprocess.image_tensor(model_image(image, path), Path(path))
        opts = self.options
        if self.tiled(x):
            logits = predict_tiled(
                self.forward, x, self.num_outputs, self.tile, opts.overlap, self.tile_batch_size, self.progress
            )[None]
        else:
            logits = self.forward(x[None])
        del x
        return at_image_size(logits, image.shape[:2])

    def class_ids(self, image: np.ndarray, path: str | Path = "image") -> np.ndarray:
        """(H, W) class ids for an (H, W, C) image, binary models cut at options.threshold (its one source)."""
        return self.class_ids_from_logits(self.logits(image, path), self.options.threshold)

    @staticmethod
    def class_ids_from_logits(logits: torch.Tensor, threshold: float = 0.5) -> np.ndarray:
        return predicted_classes(logits, threshold, torch.uint8)[0].numpy()

    @staticmethod
    def probabilities(logits: torch.Tensor) -> np.ndarray:
        """(K, H, W) float32 per-class probabilities (two channels for a binary model)."""
        return class_probabilities(logits)[0].numpy().astype(np.float32)

    def predict_file(self, path: str | Path) -> np.ndarray:
        """The mask, in the original mask values, for one image file."""
        check_argument(path, (str, Path), "Predictor.predict_file(path)", "an image's path; arrays: class_ids(image)")
        if Path(path).is_dir():
            raise UnetkitError(f"{path}: a folder; predict_file takes one image file (`unetkit predict` takes folders)")
        return self.mask_values.decode(self.class_ids(read_image(path), path))

    def predict_images(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Masks, in the original mask values, for images already in memory (numpy arrays as
        read_image returns them, or any array its pixel rule reads: uint8, uint16, 2-D)."""
        check_argument(images, (list, tuple), "Predictor.predict_images(images)", "[image_a, image_b]")
        for index, image in enumerate(images):
            if isinstance(image, np.ndarray) and image.size:
                note_array_range(image, f"image {index}")
        return [self.mask_values.decode(self.class_ids(image, f"image {index}")) for index, image in enumerate(images)]

    @classmethod
    def from_pretrained(cls, name: str, **kwargs: Any) -> Predictor:
        """A ready-made model by its name (`unetkit models` lists them), as stardist's and Hugging
        Face's from_pretrained: Predictor.from_pretrained("nuclei"). Keywords as Predictor's."""
        from unetkit.zoo import zoo_model

        check_argument(name, str, "Predictor.from_pretrained(name)", "Predictor.from_pretrained('nuclei')")
        return cls(zoo_model(name).weights, **kwargs)


def model_image(image: np.ndarray, path: str | Path = "image") -> np.ndarray:
    """An image as read_image returns it: (H, W, C) float32 passes as it is (no copy); any other
    array (e.g. uint8 from another reader, or 2-D) is scaled and shaped by read_image's own rule,
    so an 8-bit image is not taken as values 0-255 where the model was trained on [0, 1]."""
    image = np.asarray(image)
    if image.ndim >= 2:  # the pixel limit of every file reader holds for arrays too (data/limits.py)
        check_declared_pixels(Path(path), image.shape[0], image.shape[1])
    if image.ndim == 3 and image.shape[2] > MAX_CHANNELS >= image.shape[0]:
        raise UnetkitError(
            f"{path}: an array of shape {image.shape} looks like (C, H, W); images are (H, W, C): pass "
            "image.transpose(1, 2, 0)"
        )
    if image.dtype == np.float32 and image.ndim == 3:
        refuse_non_finite(image, path)  # as read_image does for files
        return image
    if image.dtype.kind not in "biuf" or image.ndim not in (2, 3) or not image.size:
        raise UnetkitError(
            f"{path}: an image array must be (H, W) or (H, W, C) numbers, got {image.dtype} of shape {image.shape}"
        )
    maximum = pixel_maximum(image.dtype, lambda: int(image.max()))
    return PixelRule(maximum, alpha=False).apply(image, Path(path))


def note_array_range(image: np.ndarray, path: str | Path) -> None:
    """Say, once a process, where an array's values suggest another scale than the one read_image's
    rule gives its type (array_range)."""
    found = None if said("array range") else array_range(image)  # once said, no array is measured
    if found:
        say_once("array range", f"{path}: {found[0]}; {found[1]} (said once)")


def array_range(image: np.ndarray) -> tuple[str, str] | None:
    """(what, fix) where an array's values suggest another scale than the one read_image's rule
    gives its type (a red-team round: `np.asarray(img, float)` of 8-bit data, values 0-255 read as
    if 1.0 were white, agreed with the uint8 prediction on 22% of the pixels; `.astype(int)` of it
    read as 16-bit data, all background); None where they do not."""
    largest = float(image.max()) if image.size else 0.0
    if image.dtype.kind == "f" and largest > 1.5:
        return (
            f"a float array reaching {largest:g} is read as is, where 1.0 is white",
            "divide it by its type's maximum (e.g. image / 255) or pass the integer array",
        )
    if image.dtype.kind in "iu" and image.dtype.itemsize > 2 and 1 < largest <= 255:  # integer_range: 65535
        return (
            f"a {image.dtype} array whose values reach {largest:g} is read as 16-bit data (1.0 at 65535)",
            "pass image.astype(np.uint8) if it is 8-bit data",
        )
    return None


def at_image_size(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(1, K, h, w) logits resized (bilinear) to the image's (height, width) where the model ran
    at a scaled size; unchanged otherwise."""
    if logits.shape[-2:] == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
