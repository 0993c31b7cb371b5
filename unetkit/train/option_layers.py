"""Where each training option's value comes from, in one order (a later layer wins):

  1. TrainConfig's defaults (config.py)
  2. the --config file, TOML or YAML (config_file.py reads it)
  3. the command line, or the fields a Python caller set in its TrainConfig
  4. on --resume, the checkpoint's saved options: the run goes on as it started, except for
     RESUMABLE options (epochs, time, device, ...), which layers 2-3 may still change, and the
     data folders, which may name where the run's data is now (split.py matches the run's split
     by file name); any other option given with a value other than the run's is refused, never
     dropped
  5. the recipe (recipes.py), for every option still unset, from the data and the machine

"Unset" is spelled None and means only that: a later layer fills it (or, for the few options no
layer fills, such as --patience or --time, the feature is off). `user_options` stacks layers 1-3,
`resolve` adds layer 4 and makes the data folders absolute (against the current folder; a
config file's are already absolute against its own), so config.json, config.toml and the
checkpoints name them from anywhere; `fill_unset` adds layer 5; each ends with TrainConfig.validate().
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from unetkit.errors import UnetkitError
from unetkit.runtime.options import show
from unetkit.train.config import DATA_FOLDERS, TrainConfig, absolute_paths

# Options a resumed run may change (when to stop, where it runs, what it writes beside the run);
# the data folders may move; everything else comes from the checkpoint's config.
RESUMABLE = ("epochs", "patience", "time", "min_epochs", "progress", "workers", "device", "cache_gb")
RESUMABLE += ("report", "tensorboard")


def user_options(file: TrainConfig | None, command_line: Mapping[str, Any]) -> tuple[TrainConfig, set[str]]:
    """Layers 1-3: the --config file (or the defaults) with the options typed on the command line
    on top; and the names of the options the user gave (typed, even at their default value, or in
    the file where they differ from the default), which are the ones a resume may change."""
    cfg = file or TrainConfig()
    given = set_fields(cfg)
    for name, value in command_line.items():
        if value is not None:
            setattr(cfg, name, value)
            given.add(name)
    return cfg, given


def set_fields(cfg: TrainConfig) -> set[str]:
    """The options that differ from TrainConfig's defaults: what a Python caller set."""
    defaults = TrainConfig()
    return {f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(defaults, f.name)}


def resolve(
    cfg: TrainConfig, given: Collection[str] | None = None, checkpoint: Mapping[str, Any] | None = None
) -> TrainConfig:
    """Layer 4, then the check: on resume the checkpoint's `config` with the RESUMABLE options and
    data folders in `given` (default: those that differ from the defaults) taken from `cfg`; any
    other option in `given` must hold the run's own value. `given` may map each name to how the
    user gave it (`--depth 3`, `run.toml: depth = 3`), which a refusal quotes."""
    cfg = absolute_paths(cfg, Path.cwd())
    if checkpoint is not None:
        given = set_fields(cfg) if given is None else given
        saved = dict(checkpoint)
        if saved.get("grad_clip", 0) is None:  # checkpoints before 0 meant off saved None
            saved["grad_clip"] = 0.0
        if "boundary_class" in saved:  # runs before --instance-target had the toggle --boundary-class
            boundary = saved.pop("boundary_class")
            saved["instance_target"] = ("boundary" if boundary else "objects") if saved.get("instance_masks") else None
        resumed = absolute_paths(TrainConfig(**saved), Path.cwd())  # older runs saved them as typed
        refuse_changes(cfg, resumed, given)
        for name in (*RESUMABLE, *DATA_FOLDERS):
            if name in given:
                setattr(resumed, name, getattr(cfg, name))
        resumed.resume = cfg.resume
        resumed.out = str(Path(cfg.resume).parent) if cfg.out is None else cfg.out
        cfg = resumed
    cfg.validate()
    return cfg


def refuse_changes(cfg: TrainConfig, resumed: TrainConfig, given: Collection[str]) -> None:
    """A resumed run goes on as it started: an option it cannot change, given with another value
    than the run's, is an error rather than dropped (the user would think it applied). A data
    folder may name where the run's own folder moved, not add one the run did not have."""
    for name in [field.name for field in dataclasses.fields(cfg) if field.name in given]:  # in the options' order
        moved = name in DATA_FOLDERS and bool(getattr(resumed, name))
        if moved or name in (*RESUMABLE, "resume", "out") or getattr(cfg, name) == getattr(resumed, name):
            continue
        how = given[name] if isinstance(given, Mapping) else f"TrainConfig {name}={getattr(cfg, name)!r}"
        raise UnetkitError(
            f"{how}: a resumed run keeps the options it started with ({cfg.resume} has "
            f"{name} = {show(getattr(resumed, name))}); leave it out, or start a new run without --resume "
            f"(a resume may change only {', '.join(RESUMABLE).replace('_', '-')} and the data folders' places)"
        )


def fill_unset(cfg: TrainConfig, choices: Mapping[str, Any]) -> tuple[TrainConfig, dict[str, Any]]:
    """Layer 5: a copy of `cfg` with every unset option that `choices` (the recipe's) names; and
    what was filled. Checked again, since the recipe's values meet the user's (a patch and a depth)."""
    filled = {name: value for name, value in choices.items() if getattr(cfg, name) is None}
    cfg = dataclasses.replace(cfg, **filled)
    cfg.validate()
    return cfg, filled
