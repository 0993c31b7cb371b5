"""Config files for `unetkit train --config FILE`: TOML (or YAML), one key per TrainConfig field.

Precedence: TrainConfig defaults < the file < options given on the command line.
Every run writes the options it ran with to RUN/config.toml, so
`unetkit train --config RUN/config.toml --out NEW` runs it again. `out` and `resume` are left
out of that file: they name this run's folder, not the recipe.

TOML has no null. An unset option (None) is simply omitted, and "none" reads as unset. Files
written before `grad_clip = 0` meant off said `grad_clip = "none"`; that still reads as off.
"""

from __future__ import annotations

import codecs
import json
import math
import tomllib
import types
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

from unetkit.errors import UnetkitError
from unetkit.train.config import TrainConfig

NOT_IN_SAVED_CONFIG = ("out", "resume")


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UnetkitError(f"{path}: config file not found")
    text = _decode_text(path, path.read_bytes())
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise UnetkitError(f"{path}: YAML config files need PyYAML: pip install unetkit[yaml]") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise UnetkitError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise UnetkitError(f"{path}: not valid TOML: {err}") from None
    if not isinstance(data, dict):
        raise UnetkitError(f"{path}: expected key = value pairs at the top level")
    return data


def _decode_text(path: Path, raw: bytes) -> str:
    """UTF-8, with or without a byte-order mark; UTF-16 when it starts with one (Windows editors
    save both)."""
    try:
        if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return raw.decode("utf-16")
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UnetkitError(f"{path}: the config file is not UTF-8 or UTF-16 text; save it as UTF-8") from None


def _check_value(path: Path, key: str, value: Any, hint: Any) -> Any:
    """`value` converted to the field's type, or a one-line error naming the key and the file."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    optional = type(None) in options
    kind = next(option for option in options if option is not type(None))
    if optional and (value is None or (kind is not str and isinstance(value, str) and value.lower() == "none")):
        return None
    origin = typing.get_origin(kind)
    if origin is list:
        item = typing.get_args(kind)[0]
        if isinstance(value, list):
            try:
                return [_check_scalar(v, item) for v in value]
            except TypeError:
                pass
    else:
        try:
            return _check_scalar(value, kind)
        except TypeError:
            pass
    raise UnetkitError(f"{path}: {key} = {value!r} is not a valid {_type_name(hint)}")


def _check_scalar(value: Any, kind: type) -> Any:
    # bool is an int in Python; a config that says `epochs = true` is a mistake, not 1.
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise TypeError(value) from None
    if kind is str and isinstance(value, str):
        return value
    raise TypeError(value)


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("NoneType", "None")


def load_config_file(path: str | Path) -> TrainConfig:
    """TrainConfig defaults, overridden by the file's keys."""
    path = Path(path)
    types_by_name = _field_types()
    cfg = TrainConfig()
    for key, value in _read_mapping(path).items():
        if not isinstance(key, str):
            raise UnetkitError(f"{path}: key {key!r} is not an option name; keys are names like lr or batch-size")
        name = key.replace("-", "_")  # accept the CLI spelling too: batch-size = 8
        if name not in types_by_name:
            raise UnetkitError(f"{path}: unknown option {key!r}; see `unetkit train --help` for the options")
        if name == "grad_clip" and isinstance(value, str) and value.lower() == "none":
            value = 0.0  # the older spelling of off
        setattr(cfg, name, _check_value(path, key, value, types_by_name[name]))
    return cfg


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if math.isfinite(value) else str(value)  # TOML spells them inf, -inf, nan
    if isinstance(value, str):
        # JSON string escapes are valid TOML basic-string escapes; TOML also wants DEL escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def config_to_toml(cfg: TrainConfig) -> str:
    defaults = TrainConfig()
    lines = [
        "# The options of this run (unetkit train). Run it again with:",
        "#   unetkit train --config THIS_FILE --out NEW_FOLDER",
    ]
    for field in fields(cfg):
        value = getattr(cfg, field.name)
        if field.name in NOT_IN_SAVED_CONFIG:
            continue
        if value is None:
            if getattr(defaults, field.name) is None:
                continue  # omitted = the default, None
            lines.append(f'{field.name} = "none"')
        else:
            lines.append(f"{field.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def write_config_toml(path: Path, cfg: TrainConfig) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(config_to_toml(cfg))
    temporary.replace(path)
