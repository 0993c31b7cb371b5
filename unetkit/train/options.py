"""Where each training option's value comes from, in one order (a later layer wins):

  1. TrainConfig's defaults (config.py)
  2. the --config file, TOML or YAML (config_file.py reads it)
  3. the command line, or the fields a Python caller set in its TrainConfig
  4. on --resume, the checkpoint's saved options: the run goes on as it started, except for
     RESUMABLE options (epochs, time, device, ...), which layers 2-3 may still change
  5. the recipe (recipes.py), for every option still unset, from the data and the machine

"Unset" is spelled None and means only that: a later layer fills it (or, for the few options no
layer fills, such as --patience or --time, the feature is off). `user_options` stacks layers 1-3,
`resolve` adds layer 4, `fill_unset` layer 5; each ends with TrainConfig.validate().
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from unetkit.train.config import TrainConfig

# Options a resumed run may change; everything else comes from the checkpoint's config.
RESUMABLE = ("epochs", "patience", "time", "min_epochs", "progress", "workers", "device", "cache_gb")


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
    """Layer 4, then the check: on resume the checkpoint's `config` with the RESUMABLE options in
    `given` (default: those that differ from the defaults) taken from `cfg`."""
    if checkpoint is not None:
        given = set_fields(cfg) if given is None else set(given)
        saved = dict(checkpoint)
        if saved.get("grad_clip", 0) is None:  # checkpoints before 0 meant off saved None
            saved["grad_clip"] = 0.0
        resumed = TrainConfig(**saved)
        for name in RESUMABLE:
            if name in given:
                setattr(resumed, name, getattr(cfg, name))
        resumed.resume = cfg.resume
        resumed.out = str(Path(cfg.resume).parent) if cfg.out is None else cfg.out
        cfg = resumed
    cfg.validate()
    return cfg


def fill_unset(cfg: TrainConfig, choices: Mapping[str, Any]) -> tuple[TrainConfig, dict[str, Any]]:
    """Layer 5: a copy of `cfg` with every unset option that `choices` (the recipe's) names; and
    what was filled. Checked again, since the recipe's values meet the user's (a patch and a depth)."""
    filled = {name: value for name, value in choices.items() if getattr(cfg, name) is None}
    cfg = dataclasses.replace(cfg, **filled)
    cfg.validate()
    return cfg, filled
