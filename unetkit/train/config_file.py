"""Config files for `unetkit train --config FILE`: TOML (or YAML), one key per TrainConfig field.

Precedence: TrainConfig defaults < the file < options given on the command line.
Every run writes the options it ran with to RUN/config.toml, so
`unetkit train --config RUN/config.toml --out NEW` runs it again, from any folder: the run's
paths are written absolute, and a relative path in a config file is taken against the file's
folder (`read_config_file`). `out` and `resume` are left out of that file: they name this run's
folder, not the recipe. A value is spelled as on the command line or as its TOML/YAML type
(`time = "10m"` or `time = 600`).

TOML has no null. An unset option (None) is simply omitted, and "none" reads as unset. Files
written before `grad_clip = 0` meant off said `grad_clip = "none"`; that still reads as off.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import tomllib
from collections.abc import Collection
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from unetkit.errors import UnetkitError
from unetkit.runtime.atomic import atomic_write
from unetkit.runtime.options import check_fields, closest
from unetkit.train.config import PATH_OPTIONS, TrainConfig, absolute_paths, option_value
from unetkit.train.encoder_weights import ENCODER_WORDS

NOT_IN_SAVED_CONFIG = ("out", "resume")


def _read_mapping(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise UnetkitError(f"{path}: is a folder; --config takes a TOML or YAML file (a run folder's config.toml)")
    if not path.is_file():
        raise UnetkitError(f"{path}: config file not found")
    if path.suffix.lower() == ".json":  # a run's config.json records the resolved run; config.toml reruns it
        beside = path.with_name("config.toml")
        again = (
            f"; to run a run again, pass the config.toml beside its config.json ({beside})" if beside.is_file() else ""
        )
        raise UnetkitError(
            f"{path}: --config reads TOML or YAML, not JSON; write the options as key = value lines{again}"
        )
    text = _decode_text(path, path.read_bytes())
    try:
        data = _read_yaml(path, text) if path.suffix.lower() in (".yaml", ".yml") else _read_toml(path, text)
    except RecursionError:  # thousands of nested brackets: no option is shaped like that
        raise UnetkitError(f"{path}: values nested too deep to read; options are plain values or short lists") from None
    if not isinstance(data, dict):
        raise UnetkitError(f"{path}: expected key = value pairs at the top level")
    if not data:  # the command would then ask for --images as if no file were given
        raise UnetkitError(
            f"{path}: holds no options (empty, or only comments); write key = value lines, e.g. epochs = 30"
        )
    return data


def _read_toml(path: Path, text: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UnetkitError(
            f"{path}: not valid TOML ({str(err)[:200]}); fix the line it names, or write the file as key = value lines"
        ) from None


def _read_yaml(path: Path, text: str) -> Any:
    """PyYAML's safe loader, except that a key given twice is refused (PyYAML keeps the last in
    silence; TOML refuses it too)."""
    try:
        import yaml
    except ImportError:
        raise UnetkitError(f"{path}: YAML config files need PyYAML: pip install unetkit[yaml]") from None

    class UniqueKeys(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            # An alias repeats a node by reference: nine nested ones make a 1 KB file expand to 3 GB
            # (measured: 38 s, then a traceback). A config file has no use for them.
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                line, anchor = event.start_mark.line + 1, str(event.anchor)[:40]
                raise UnetkitError(
                    f"{path}: line {line} repeats a value by a YAML alias (*{anchor}); "
                    "config files take plain values: write the value out"
                )
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            lines: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if not isinstance(key, str | int | float):
                    continue  # unhashable keys: PyYAML's own error follows
                line = key_node.start_mark.line + 1
                if key in lines:
                    raise UnetkitError(
                        f"{path}: key {str(key)[:40]!r} is given twice (lines {lines[key]} and {line}); keep one"
                    )
                lines[key] = line
            return super().construct_mapping(node, deep)

    try:
        return yaml.load(text, Loader=UniqueKeys) or {}  # a SafeLoader: builds no Python objects
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        hint = "; YAML indents with spaces, not tabs" if "\\t" in problem else ""
        raise UnetkitError(f"{path}: not valid YAML: {problem}{where}{hint}") from None


def _decode_text(path: Path, raw: bytes) -> str:
    """UTF-8, with or without a byte-order mark; UTF-16 when it starts with one (Windows editors
    save both)."""
    try:
        if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return raw.decode("utf-16")
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UnetkitError(f"{path}: the config file is not UTF-8 or UTF-16 text; save it as UTF-8") from None


def load_config_file(path: str | Path) -> TrainConfig:
    """TrainConfig defaults, overridden by the file's keys, their values as the file writes them
    (`read_config_file` also anchors relative paths to the file's folder)."""
    return _load(Path(path))[0]


def read_config_file(path: str | Path) -> tuple[TrainConfig, dict[str, str]]:
    """What `train --config FILE` uses: the file's options with relative paths taken against the
    file's folder (not the current one), and each option's key as the file spells it, for messages."""
    path = Path(path)
    cfg, keys = _load(path)
    cfg = absolute_paths(cfg, path.parent, [name for name in PATH_OPTIONS if name in keys])
    return files_beside(cfg, path.parent), keys


def files_beside(cfg: TrainConfig, base: Path) -> TrainConfig:
    """The options that take a file or a word, their files taken against `base` (a config file's
    folder, like every path in it): init_from (or a ready-made model's name) and encoder_weights
    (or imagenet / none), which was read from the folder the command ran in (a red-team round)."""
    from unetkit.zoo import zoo_models

    init_from = path_or_word(cfg.init_from, base, zoo_models())  # a file of a model's name wins, as model_file
    weights = cfg.encoder_weights
    if weights not in ENCODER_WORDS:  # always words where the loader reads them (encoder_weights.pretrained)
        weights = path_or_word(weights, base, ())
    return replace(cfg, init_from=init_from, encoder_weights=weights)


def path_or_word(value: str | None, base: Path, words: Collection[str]) -> str | None:
    """`value` as a path against `base`, unless it is one of `words` and no file or folder of
    that name is there."""
    if not value:
        return value
    beside = base / Path(value).expanduser()
    if value in words and not beside.exists():
        return value
    return os.path.abspath(beside)


def _load(path: Path) -> tuple[TrainConfig, dict[str, str]]:
    names = [field.name for field in fields(TrainConfig)]
    cfg, keys, raw = TrainConfig(), {}, {}
    for key, value in _read_mapping(path).items():
        if not isinstance(key, str):
            shown = repr(key)[:40]  # a number stays a number: key 1
            raise UnetkitError(f"{path}: key {shown} is not an option name; keys are names like lr or batch-size")
        name = key.replace("-", "_")  # accept the CLI spelling too: batch-size = 8
        if name not in names:
            raise UnetkitError(f"{path}: {_not_an_option(key, value, names)}")
        if name in keys:
            raise UnetkitError(f"{path}: {keys[name]} and {key} are the same option; keep one")
        if name == "grad_clip" and isinstance(value, str) and value.lower() == "none":
            value = 0.0  # the older spelling of off
        try:
            setattr(cfg, name, option_value(name, value, text=True))
        except ValueError as err:
            raise UnetkitError(f"{path}: {key} = {_shown(value)} is not {err}") from None
        keys[name], raw[name] = key, value
    # Ranges and choices here, so the error names the file's line, not a flag nobody typed.
    check_fields(cfg, lambda name, value: f"{path}: {keys.get(name, name)} = {_shown(raw.get(name, value))}")
    return cfg, keys


def _not_an_option(key: str, value: Any, names: list[str]) -> str:
    """Why `key` is no option, and what to write: a switch's command-line spelling (no-elastic =
    true, multiclass = true) as the field and value it sets, where the closest name (elastic) led
    to the opposite; a [section] as its keys at the top level; else the closest name."""
    switches = {}
    for field in fields(TrainConfig):
        if field.metadata.get("toggle"):
            switches[f"no_{field.name}"] = field.name, False
        if field.metadata.get("flag"):
            flag, set_to = field.metadata["flag"]
            switches[flag[2:].replace("-", "_")] = field.name, set_to
    switch = switches.get(key.replace("-", "_"))
    if switch and isinstance(value, bool):
        name, set_to = switch
        written = f"{name} = {_toml_value(set_to == value)}"
        return f"{key} is the command line's --{key.replace('_', '-')}; in a file write {written}"
    if isinstance(value, dict):
        return f"[{key}] is a section, and a config file has none; write its keys at the top level, without [{key}]"
    return f"unknown option {key[:40]!r}{_closest(key, names)}; `unetkit train --help` lists the options"


def _closest(key: str, names: list[str]) -> str:
    """The option a typo most likely meant, spelled as the key was (dashes or underscores)."""
    near = closest(key, names)
    if near is None:
        return ""
    return f" (did you mean {near.replace('_', '-') if '-' in key else near}?)"


def _shown(value: Any) -> str:
    return _toml_value(value) if isinstance(value, bool | int | float | str) else repr(value)


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
    if not cfg.images:  # its pairs came from Python (run_training's train_pairs), not from folders
        lines += [
            "# Its images were pairs given in Python (run_training's train_pairs), not folders: add",
            "#   --images DIR --masks DIR (and --val-images/--val-masks) to run it again",
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
    text = config_to_toml(cfg)
    atomic_write(path, lambda temporary: temporary.write_text(text))
