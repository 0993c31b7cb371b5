"""Command-line options made from dataclass fields (unetkit/runtime/options.py), so that a field of
TrainConfig or InferenceOptions is an option of `unetkit train` or of predict/evaluate with no
line here. Every generated option defaults to None: then "given on the command line" can be told
from "left at the dataclass's default", which a resumed run needs (unetkit/train/option_layers.py).

Why not jsonargparse or tyro, which turn dataclasses into a CLI and config files too: unetkit
needs None for "not typed" (resume), flags such as --no-augment and --multiclass, and one-line
errors naming the file and the fix; with ~70 lines here and ~160 in config_file.py there is
little plumbing left for a library to replace, and its own error texts would replace ours."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Collection
from typing import Any

from unetkit.runtime.options import show


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, skip: Collection[str] = ()) -> None:
    """One option per field of `cls`, in the field's group, with its help, choices and type."""
    groups: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        meta = field.metadata
        group_name = meta.get("group", "options")
        if group_name not in groups:  # fields without a group join the command's own options
            groups[group_name] = parser if group_name == "options" else parser.add_argument_group(group_name)
        names, kwargs = argument(field, hints[field.name])
        groups[group_name].add_argument(*names, dest=field.name, default=None, **kwargs)


def argument(field: dataclasses.Field, hint: Any) -> tuple[list[str], dict[str, Any]]:
    """The option strings and add_argument keywords for one field."""
    meta = field.metadata
    name = "--" + field.name.replace("_", "-")
    help_text = meta.get("help", "")
    if meta.get("flag"):
        flag, value = meta["flag"]
        return [flag], {"action": "store_const", "const": value, "help": help_text}
    if field.default not in (None, "") and "default" not in help_text:
        shown = ("on" if field.default else "off") if isinstance(field.default, bool) else show(field.default)
        help_text = f"{help_text} (default {shown})".strip()
    if meta.get("toggle"):
        return [name], {"action": argparse.BooleanOptionalAction, "help": help_text}
    kwargs: dict[str, Any] = {"help": help_text, "type": meta.get("parse") or value_type(hint)}
    if meta.get("choices") is not None:
        kwargs["choices"] = sorted(meta["choices"])
    return [name], kwargs


def value_type(hint: Any) -> type:
    """int, float or str from a field's annotation (`int | None` -> int)."""
    types = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    return types[0] if types[0] in (int, float) else str


def typed_as(cls: type, name: str, value: Any) -> str:
    """How option `name` of `cls` is typed with `value` on the command line, for messages:
    `--depth 3`, `--no-augment`, `--multiclass` (a flag, not --binary)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    flag = "--" + name.replace("_", "-")
    if field.metadata.get("flag"):
        return field.metadata["flag"][0]
    if field.metadata.get("toggle"):
        return flag if value else "--no-" + flag[2:]
    return f"{flag} {show(value)}"
