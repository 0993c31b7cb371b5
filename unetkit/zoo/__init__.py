"""Ready-made models shipped with unetkit: `predict --model nuclei`, `evaluate --model`, `export
--model` and `train --init-from nuclei` take them by name, with no training and no network.

A model is two files in this folder: <name>.safetensors (weights and metadata, the format of
`unetkit export --safetensors`, which every command reads as a checkpoint) and <name>.md, its model
card: the data and its licence, the recipe, training time and machine, held-out scores, intended
use and limits. The card's first line is "# <name>: <what it segments>". benchmarks/zoo.py made
each one and makes it again.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from unetkit.errors import UnetkitError

ZOO = Path(__file__).parent


@dataclass(frozen=True)
class ZooModel:
    name: str
    weights: Path
    card: Path

    @property
    def summary(self) -> str:
        """What it segments: the card's first line after '# <name>: '."""
        first = self.card.read_text(encoding="utf-8").splitlines()[0]
        return first.split(":", 1)[1].strip() if ":" in first else first.lstrip("# ")

    @property
    def held_out(self) -> str:
        """The card's line that starts 'Held out:', without that word."""
        lines = self.card.read_text(encoding="utf-8").splitlines()
        return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Held out:")), "")


def zoo_models() -> dict[str, ZooModel]:
    """Every shipped model, by name: each <name>.safetensors with its <name>.md card."""
    return {
        path.stem: ZooModel(path.stem, path, path.with_suffix(".md"))
        for path in sorted(ZOO.glob("*.safetensors"))
        if path.with_suffix(".md").is_file()
    }


def zoo_model(name: str) -> ZooModel:
    models = zoo_models()
    if name not in models:
        shown = ", ".join(models) or "none"
        raise UnetkitError(f"{name}: no such ready-made model (unetkit models lists them: {shown})")
    return models[name]


def model_file(name: str) -> Path:
    """A checkpoint's path as given, or a ready-made model's weights when `name` is a zoo name and
    no file of that name exists."""
    path = Path(name)
    if name not in zoo_models():
        near = difflib.get_close_matches(name, list(zoo_models()), n=1)
        if near and not path.exists() and len(path.parts) == 1:  # "nucleus" was "checkpoint not found", unhelped
            raise UnetkitError(
                f"{name}: no such file, nor a ready-made model of that name; did you mean {near[0]}? "
                f"(unetkit models lists them: {', '.join(zoo_models())})"
            )
        return path
    if not path.exists():
        return zoo_models()[name].weights
    if path.is_dir():  # a data folder named like a model: neither is what the user meant to load
        raise UnetkitError(
            f"{name}: is a folder here, and also the name of a ready-made model; a path wins over a name, and a "
            f"folder is no model: pass the file ({path / 'best.pt'}), or the ready-made one by its file "
            f"({zoo_models()[name].weights})"
        )
    print(
        f"note: {name} is a file here and is loaded as the model; the ready-made {name} is {zoo_models()[name].weights}"
    )
    return path
