"""Options as dataclass fields that carry their own help, choices, check and command-line form,
so that a new option of `unetkit train` (TrainConfig) or of predict/evaluate (InferenceOptions)
is one field: the command line (unetkit/cli/arguments.py), the config files and the checks all
read it from there.

    lr: float | None = option(None, "peak learning rate", group="optimisation", valid=above(0, 10),
                              need="a learning rate above 0 and at most 10, e.g. 1e-3")
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import inspect
import math
from collections.abc import Callable, Collection
from typing import Any

from unetkit.errors import UnetkitError

Check = Callable[[Any], bool]


def option(
    default: Any,
    help: str,
    *,
    group: str = "options",
    choices: Collection[str] | None = None,
    valid: Check | None = None,
    need: str = "",
    parse: Callable[[str], Any] | None = None,
    flag: tuple[str, Any] | None = None,
    toggle: bool = False,
) -> Any:
    """A dataclass field with what the command line and the checks need.

    choices: the allowed values (also checked by `check_fields`); valid/need: a check of the value
    and what it must be, for the one-line error; parse: turns the command-line text into the value;
    flag: a switch that sets the field to a value, e.g. ("--no-augment", False); toggle: a
    --name/--no-name pair."""
    metadata = {"help": help, "group": group, "choices": choices, "valid": valid, "need": need}
    metadata.update(parse=parse, flag=flag, toggle=toggle)
    return dataclasses.field(default=default, metadata=metadata)


def check_fields(instance: Any, spelled: Callable[[str, Any], str] | None = None) -> None:
    """The first field whose value fails its `choices` or `valid` check, as a one-line
    UnetkitError naming the command-line option, or as `spelled(name, value)` says it (a config
    file's line). None passes where the default is None (unset)."""
    spelled = spelled or (lambda name, value: f"{command_line_name(name)} {show(value)}")
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        if value is None and field.default is None:
            continue
        choices, valid = field.metadata.get("choices"), field.metadata.get("valid")
        if choices is not None and value not in choices:
            need = "one of " + ", ".join(sorted(choices))
        elif valid is not None and not valid(value):
            need = field.metadata["need"]
            if isinstance(value, str | bool) and any(word in str(field.type) for word in ("int", "float")):
                # InferenceOptions(zoom="0.5") was told it "must be ..., e.g. 0.5" (a red-team round)
                need += f" (a number, where {value!r} is {'text' if isinstance(value, str) else 'true/false'})"
        else:
            continue
        raise UnetkitError(f"{spelled(field.name, value)} is invalid: it must be {need}")


def closest(key: str, names: Collection[str]) -> str | None:
    """The field a misspelled `key` most likely meant (dashes read as underscores), or None."""
    close = difflib.get_close_matches(key.replace("-", "_"), list(names), n=1)
    return close[0] if close else None


def known_fields_only(cls: type) -> type:
    """A dataclass whose constructor refuses an unknown keyword in one UnetkitError naming the
    closest field, as the command line and config files do: `TrainConfig(epoch=3)` was Python's
    TypeError (a red-team finding against the README's "a wrong argument is one UnetkitError")."""
    names = {field.name for field in dataclasses.fields(cls)}
    cls.__init__ = refusing_unknown_keywords(cls.__init__, names, cls.__name__, "option")
    return cls


def known_keywords(function: Callable) -> Callable:
    """known_fields_only for a function or constructor: `Predictor(path, devise="cpu")` was
    Python's TypeError (a red-team round)."""
    names = {name for name in inspect.signature(function).parameters if name != "self"}
    owner = function.__qualname__.removesuffix(".__init__")
    return refusing_unknown_keywords(function, names, owner, "argument")


def refusing_unknown_keywords(function: Callable, names: set[str], owner: str, kind: str) -> Callable:
    """`function`, refusing a keyword not among `names` in one line with the closest one."""

    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        for key in kwargs:
            if key not in names:
                near = closest(key, names)
                hint = f"; did you mean {near}=?" if near else ""
                raise UnetkitError(f"{owner}({key}=...): no such {kind}{hint}; help({owner}) lists them")
        return function(*args, **kwargs)

    return checked


def command_line_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def show(value: Any) -> str:
    """A value as a user writes it: 0,255 for a list, 1e-3 for a float, true / false (TOML's, and
    YAML's) for a switch, where Python's False read as a typo in a config file's message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(show(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


# --- checks ---
def number(value: Any) -> bool:
    """A finite int or float, not a bool (False for NaN too)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def between(low: float, high: float = math.inf) -> Check:
    return lambda value: number(value) and low <= value <= high


def above(low: float, high: float = math.inf) -> Check:
    return lambda value: number(value) and low < value <= high


def whole(low: int, high: int) -> Check:
    return lambda value: number(value) and value == int(value) and low <= value <= high


def each(check: Check) -> Check:
    return lambda values: isinstance(values, list) and all(check(v) for v in values)


# --- command-line value types ---
def int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like '0,255', got {text!r}") from None


def float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like '1,5', got {text!r}") from None


def patch_size(text: str) -> int:
    if text.lower() in ("none", "full", "0"):
        return 0  # whole images
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels or 'none', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer or 'none'")
    return value


def duration(text: str) -> float:
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


def check_argument(value: Any, kinds: type | tuple[type, ...], name: str, example: str) -> None:
    """A Python API argument checked where it enters: the wrong type is one line naming the
    argument and a right call, as the command line answers, not a TypeError from deep inside."""
    if isinstance(value, kinds):
        return
    wanted = " or ".join(kind.__name__ for kind in (kinds if isinstance(kinds, tuple) else (kinds,)))
    raise UnetkitError(f"{name}: expected {wanted}, got {type(value).__name__} {str(value)[:40]!r}; e.g. {example}")
