"""Masks for new images: files or folders in, one PNG mask per image out (same size, in the
user's mask values), optionally probability maps and overlays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from unetkit.data import IMAGE_EXTENSIONS, list_images, read_image
from unetkit.errors import UnetkitError
from unetkit.inference import Predictor, overlay, save_png
from unetkit.inference.outputs import save_probabilities


def collect_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named directly, plus the images inside named folders; names must be unique
    because each becomes an output file name."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files.extend(list_images(item, "images"))
        elif item.is_file():
            if item.suffix.lower() not in IMAGE_EXTENSIONS:
                raise UnetkitError(f"{item}: not an image file ({', '.join(IMAGE_EXTENSIONS)})")
            files.append(item)
        else:
            raise UnetkitError(f"{item}: no such file or folder")
    seen: dict[str, Path] = {}
    for path in files:
        if path.stem in seen and seen[path.stem] != path:
            raise UnetkitError(
                f"{path}: same name as {seen[path.stem]}, and both would write {path.stem}.png; "
                "predict them into different --out folders"
            )
        seen[path.stem] = path
    return list(dict.fromkeys(files))


def predict_files(
    predictor: Predictor,
    inputs: Sequence[str | Path],
    out: str | Path,
    threshold: float = 0.5,
    write_overlay: bool = False,
    write_probabilities: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Predict every input into `out`: <stem>.png, and <stem>_overlay.png / <stem>_probs.tif if
    asked. Returns the written mask paths."""
    files = collect_inputs(inputs)
    out = Path(out)
    legend = [f"value {value}" for value in predictor.mask_values.values]
    written = []
    for path in tqdm(files, desc="predict", unit="img", disable=not progress or len(files) < 2, leave=False):
        image = read_image(path)
        logits = predictor.logits(image, path)
        class_ids = predictor.class_ids_from_logits(logits, threshold)
        mask_path = out / f"{path.stem}.png"
        save_png(mask_path, predictor.mask_values.decode(class_ids))
        if write_probabilities:
            save_probabilities(out / f"{path.stem}_probs.tif", predictor.probabilities(logits))
        del logits
        if write_overlay:
            save_png(out / f"{path.stem}_overlay.png", overlay(image, class_ids, legend))
        written.append(mask_path)
    return written
