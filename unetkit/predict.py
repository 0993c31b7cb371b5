"""Masks for new images: files or folders in, one PNG mask per image out (same size, in the
user's mask values), optionally probability maps and overlays."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import torch

from unetkit.data import IMAGE_EXTENSIONS, list_images
from unetkit.data.io import ImageRef
from unetkit.data.tiff_axes import AxisChoice, TiffAxes, stack_layout
from unetkit.errors import UnetkitError
from unetkit.inference import Predictor, overlay, save_png
from unetkit.inference.batched import predict_images
from unetkit.inference.object_files import write_object_files
from unetkit.inference.objects import object_classes_note, object_table, save_labels, save_table
from unetkit.inference.outputs import PredictOutputs, save_probabilities
from unetkit.inference.slide.large_tiff import out_of_core, predict_large_tiff
from unetkit.inference.stacks import StackPrediction, predict_large_stack
from unetkit.runtime.atomic import is_temporary_of, remove_stale_temporaries
from unetkit.runtime.folder_lock import PREDICT_LOCK_NAME, RunLock
from unetkit.runtime.notes import say, say_once
from unetkit.runtime.ownership import JOURNAL, MANIFEST, Manifest
from unetkit.runtime.progress import progress_to, tell

# Every name predict may write for an image <stem> (planned_outputs says which a run writes).
OUTPUT_SUFFIXES = PredictOutputs.every_suffix()


def collect_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named directly, plus the images inside named folders; names must be unique
    because each becomes an output file name."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files.extend(images_not_written_by_predict(item))
        elif item.is_file():
            if item.suffix.lower() not in IMAGE_EXTENSIONS:
                raise UnetkitError(f"{item}: not an image file ({', '.join(IMAGE_EXTENSIONS)})")
            files.append(item)
        else:
            raise UnetkitError(f"{item}: no such file or folder")
    unique: dict[Path, Path] = {}
    for path in files:
        unique.setdefault(path.resolve(), path)  # one file named by two paths is predicted once
    files = list(unique.values())
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen:
            raise UnetkitError(
                f"{path}: same name as {seen[path.stem]}, and both would write outputs named {path.stem} (the mask, "
                f"{path.stem}_probs, ...); predict them into different --out folders"
            )
        seen[path.stem] = path
    return files


def images_not_written_by_predict(folder: Path) -> list[Path]:
    """A folder's images, less the masks, overlays and probabilities predict wrote there (its
    manifest lists them), said: predicting a predict folder took its 150 outputs as photos, an
    11-page probability TIFF as 11 gray images (a red-team round)."""
    images = list_images(folder, "images")
    if not (folder / MANIFEST).is_file() and not (folder / JOURNAL).is_file():
        return images
    written = Manifest.read(folder)
    kept = [path for path in images if not written.lists(path.name)]
    if len(kept) < len(images):
        if not kept:
            raise UnetkitError(
                f"{folder}: every image in it is an output predict wrote (its {MANIFEST} lists them); "
                "give the folder of the images they were predicted from"
            )
        say(f"{folder}: {len(images) - len(kept)} file(s) predict wrote there (listed in its {MANIFEST}) are "
            f"outputs, not images, and are left out; {len(kept)} other image(s) are predicted")  # fmt: skip
    return kept


def planned_outputs(
    files: Sequence[Path], outputs: PredictOutputs, large: Collection[Path] = (), stacks: Collection[Path] = ()
) -> dict[Path, Path]:
    """Every file predict will write -> the input it comes from (PredictOutputs.names); `large`
    inputs (out of core) write tiled TIFFs, and no overlay (a picture of a whole slide is the
    slide again); `stacks` write TIFF stacks (inference/stacks.py)."""
    planned: dict[Path, Path] = {}
    for path in files:
        if path in large and outputs.overlay:
            raise UnetkitError(
                f"{path}: predicted out of core, which writes no overlay; drop --overlay (open the mask over the "
                "slide in a viewer), or use --out-of-core off if it fits in memory"
            )
        kind = "stack" if path in stacks else "large" if path in large else "image"
        for name in outputs.names(path.stem, kind):
            target = outputs.out / name
            if target in planned:
                raise UnetkitError(
                    f"{path}: its output {name} is also the output of {planned[target].name}; "
                    "rename one of them or predict them into different --out folders"
                )
            planned[target] = path
    return planned


def check_outputs(files: Sequence[Path], outputs: dict[Path, Path], out: Path, overwrite: bool) -> None:
    """Predict never writes into a folder it reads images from, nor into one holding images it did
    not write, and never replaces a file unless asked, and then only its own earlier output:
    `--out imgs` would replace images by masks, `--out masks` the ground truth. The outputs of a
    run that was stopped halfway (killed) are replaced without --overwrite: the rerun completes it."""
    out_real = out.resolve()
    for path in files:
        if path.resolve().parent == out_real:
            raise UnetkitError(
                f"{out}: --out is the folder of the input image {path.name}; masks written there would replace "
                "or mix with the images; choose another --out folder"
            )
    manifest = Manifest.read(out)
    ours = [*manifest.files, *(target.name for target in outputs)]
    theirs = sorted(
        p.name
        for p in out.glob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and not manifest.lists(p.name) and not is_temporary_of(p.name, ours)
    )
    if theirs:
        raise UnetkitError(
            f"{out / theirs[0]}: --out holds {len(theirs)} image(s) or mask(s) that unetkit predict did not write; "
            "predict never writes beside them (--overwrite replaces only its own earlier outputs); "
            "choose an empty --out folder"
        )
    for target in outputs:
        if target.exists() and not manifest.lists(target.name):
            raise UnetkitError(
                f"{target}: already exists and unetkit predict did not write it, so it is never replaced; "
                "choose an empty --out folder"
            )
        if target.exists() and manifest.edited(target):
            raise UnetkitError(
                f"{target}: changed since predict wrote it (corrected by hand?), so it is never replaced; "
                "move it elsewhere first, or choose an empty --out folder"
            )
        if target.exists() and not overwrite and not manifest.unfinished:
            raise UnetkitError(
                f"{target}: already exists and predict never replaces files; choose an empty --out folder, "
                "or pass --overwrite to replace this earlier prediction"
            )


def remove_earlier_outputs(files: Sequence[Path], planned: Collection[Path], out: Path) -> None:
    """With --overwrite, the outputs an earlier run wrote for these images that this run does not
    write (objects without --instances now, an overlay without --overlay) would be left beside
    the new mask, out of date: predict's own, unedited ones go, and it says which."""
    manifest = Manifest.read(out)
    names = {f"{path.stem}{suffix}" for path in files for suffix in OUTPUT_SUFFIXES}
    earlier = sorted(
        out / name
        for name in names
        if out / name not in planned
        and manifest.lists(name)
        and (out / name).is_file()
        and not manifest.edited(out / name)
    )
    for path in earlier:
        path.unlink()
    if earlier:
        manifest.forget(earlier)
        shown = ", ".join(path.name for path in earlier[:3]) + (", ..." if len(earlier) > 3 else "")
        print(f"removed {len(earlier)} earlier output(s) of these images that this run does not write: {shown}")


@contextmanager
def claimed_folder(out: Path, planned: Collection[Path], files: Sequence[Path], overwrite: bool) -> Iterator[None]:
    """Hold `out` for this run (the predict lock: a second predict there is refused in one line);
    then, with no other run writing, take away what a killed run left half-done (its temporaries),
    and check the folder again: another run may have written there since the first check."""
    created = not out.exists()
    lock = RunLock(out, name=PREDICT_LOCK_NAME, holder="unetkit predict")
    try:
        with lock:
            remove_stale_temporaries(out, [MANIFEST, *Manifest.read(out).files, *(path.name for path in planned)])
            for folder in out.glob(".unetkit-????????"):  # a killed out-of-core stack's plane files
                if folder.is_dir():
                    shutil.rmtree(folder, ignore_errors=True)
            check_outputs(files, planned, out, overwrite)
            yield
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a refused or failed run leaves no trace


@contextmanager
def recorded_outputs(out: Path, outputs: Collection[Path]) -> Iterator[None]:
    """List `outputs` in the manifest before they are written, record each one's content as it is
    written (Manifest.journal), and mark the run finished only if it ends; a run that fails before
    writing any of them takes a new manifest away again (a refused command leaves no trace)."""
    first = not (out / MANIFEST).exists()
    manifest = Manifest.read(out)
    manifest.plan(outputs)
    finished = False
    try:
        with manifest.journal():
            yield
        finished = True
    finally:
        if first and not any(path.exists() for path in outputs):
            (out / MANIFEST).unlink(missing_ok=True)
            (out / JOURNAL).unlink(missing_ok=True)
        else:
            manifest.fold(finished)


def predict_files(predictor: Predictor, inputs: Sequence[str | Path], outputs: PredictOutputs) -> list[Path]:
    """Predict every input into `outputs.out`: <stem>.png, and what `outputs` asks for (its
    names): <stem>_overlay.png, <stem>_probs.tif, the objects (<stem>_objects.tif, one id per
    object, and <stem>_objects.csv, one row per object) and from those the object files for
    QuPath and Fiji (inference/object_files.py). Returns the written mask paths. Nothing is
    written when an output would replace an input or (without `outputs.overwrite`) any existing
    file. Images in memory go through inference/batched.py (--workers threads decode and write,
    batches of images), a stack's planes as images of their own, written back as stacks
    (<stem>.tif and its siblings, inference/stacks.py); large TIFFs out of core, one at a time.
    The threshold and progress bar are the predictor's options, the TIFF axes its `axes`."""
    files, out, options = collect_inputs(inputs), outputs.out, predictor.options
    large = {path for path in files if out_of_core(path, options.out_of_core, predictor.axes)}
    stacks = stack_layouts(files, predictor.axes)
    planned = planned_outputs(files, outputs, large, stacks)
    check_outputs(files, planned, out, outputs.overwrite)  # before the folder is made or locked
    say_what_the_outputs_hold(predictor, outputs)
    with claimed_folder(out, planned, files, outputs.overwrite):
        if outputs.overwrite:
            remove_earlier_outputs(files, planned, out)
        return write_outputs(predictor, files, outputs, large, stacks, planned)


def say_what_the_outputs_hold(predictor: Predictor, outputs: PredictOutputs) -> None:
    """An instance model's <stem>.png holds its classes 0-3, near black in a viewer; its objects
    are --instances' label image: said where they are not asked for (the nuclei model's users
    looked for the nuclei in that png). A model of several classes gives --instances no objects
    of class 0, taken as the background: said, since CamVid's 0 is the sky (red-team rounds)."""
    values = predictor.mask_values
    if values.instances is not None and not outputs.instances:
        classes = ", ".join(name.removeprefix("value ") for name in values.legend)
        say_once("instance classes", f"this instance model's masks hold its classes ({classes}); "
                 "--instances writes its objects (<stem>_objects.tif, one id per object, and a table)")  # fmt: skip
    elif outputs.instances and (note := object_classes_note(values)):
        say_once("object classes", f"--instances: {note}")


def write_outputs(
    predictor: Predictor,
    files: Sequence[Path],
    outputs: PredictOutputs,
    large: Collection[Path],
    stacks: dict[Path, TiffAxes],
    planned: Collection[Path],
) -> list[Path]:
    """predict_files' writing half, in a folder this run holds."""
    out, options = outputs.out, predictor.options
    collected = {path: StackPrediction(predictor, path, layout, outputs) for path, layout in stacks.items()}
    write = partial(write_prediction, predictor, outputs, collected)
    refs = [ImageRef(path, plane, predictor.axes) for path in files if path not in large
            for plane in planes_of(path, stacks)]  # fmt: skip
    written = {path: outputs.file(path.stem, "mask", "large") for path in [*large, *stacks]}
    written |= {path: outputs.file(path.stem, "mask") for path in files if path not in written}
    count = len(refs) + len(large)
    progress, done = progress_to(None, options.progress and count > 1), itertools.count(1)
    with recorded_outputs(out, planned):
        for path in files:
            if path in large and path in stacks:
                predict_large_stack(predictor, path, stacks[path], outputs)
                tell(progress, next(done), count, "predict")
            elif path in large:
                predict_large_tiff(predictor, path, written[path], outputs, axes=predictor.axes)
                tell(progress, next(done), count, "predict")
        for _ in predict_images(predictor, refs, write, options.workers):
            tell(progress, next(done), count, "predict")
        instance_model = predictor.mask_values.instances is not None
        for path in files if outputs.instances else []:
            labels, table = outputs.file(path.stem, "objects"), outputs.file(path.stem, "object_table")
            write_object_files(labels, table, outputs.object_files, instance_model)
    return [written[path] for path in files]


def stack_layouts(files: Sequence[Path], axes: AxisChoice) -> dict[Path, TiffAxes]:
    """The inputs that are stacks (more than one plane), with their axes."""
    layouts = {path: stack_layout(path, axes) for path in files}
    return {path: layout for path, layout in layouts.items() if layout is not None}


def planes_of(path: Path, stacks: dict[Path, TiffAxes]) -> list[int | None]:
    return list(range(stacks[path].planes)) if path in stacks else [None]


def write_prediction(
    predictor: Predictor,
    outputs: PredictOutputs,
    stacks: dict[Path, StackPrediction],
    ref: ImageRef,
    image: np.ndarray,
    logits: torch.Tensor,
) -> None:
    """One image's outputs from its logits: the mask and those asked for (in a writer thread); a
    stack's plane goes to its StackPrediction, which writes the stack with its last plane."""
    if ref.plane is not None:
        stacks[ref.path].add(ref.plane, image, logits)
        return
    stem = ref.path.stem
    class_ids = predictor.class_ids_from_logits(logits, predictor.options.threshold)
    save_png(outputs.file(stem, "mask"), predictor.mask_values.decode(class_ids))
    if outputs.probabilities:
        save_probabilities(outputs.file(stem, "probabilities"), predictor.probabilities(logits))
    if outputs.instances:
        labels, classes, probabilities = predictor.objects(logits)
        save_labels(outputs.file(stem, "objects"), labels)
        table = object_table(labels, classes, probabilities, bool(predictor.mask_values.instances))
        save_table(outputs.file(stem, "object_table"), table, predictor.mask_values.values)
    del logits
    if outputs.overlay:
        save_png(outputs.file(stem, "overlay"), overlay(image, class_ids, predictor.mask_values.legend))
