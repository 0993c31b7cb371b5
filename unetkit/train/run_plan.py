"""The plan of one run, made before anything is built (nnU-Net plans, then trains): the options
resolved (defaults < file < command line < checkpoint < recipe, option_layers.py), the data plan from
the training set's fingerprint, the run folder, the split, and the states it starts from (a
resumed last.pt, an --init-from model). The Trainer (loop.py) is built from it."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unetkit.data import Pair
from unetkit.errors import UnetkitError
from unetkit.models.checkpoint import load_checkpoint
from unetkit.runtime.hardware import resolve_device
from unetkit.train.config import TrainConfig, check_model_options
from unetkit.train.data_plan import DataPlan, plan
from unetkit.train.distributed import Distributed, quiet, setup_distributed
from unetkit.train.encoder_weights import check_encoder_early
from unetkit.train.init_from import architecture_from, load_init_state
from unetkit.train.option_layers import resolve
from unetkit.train.run_folder import prepare_run_folder
from unetkit.train.split import training_pairs


@dataclass
class RunPlan:
    cfg: TrainConfig  # resolved: no option left unset
    data: DataPlan
    dist: Distributed  # single-process unless torchrun
    out: Path  # the run folder
    train_pairs: list[Pair]
    val_pairs: list[Pair]
    resume_state: dict[str, Any] | None  # the last.pt this run continues
    init_state: dict[str, Any] | None  # the --init-from model's weights
    log: Callable[[str], None]  # quiet on every rank but the first


def load_resume_state(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    if Path(path).suffix.lower() == ".onnx":
        raise UnetkitError(f"{path}: an ONNX export holds no training state to resume; pass the run's last.pt")
    state = load_checkpoint(path)
    if "config" not in state or "optimizer" not in state:
        raise UnetkitError(f"{path}: a weights-only export cannot be resumed; pass the run's last.pt")
    return state


def plan_run(
    cfg: TrainConfig,
    train_pairs: Sequence[Pair] | None = None,
    val_pairs: Sequence[Pair] | None = None,
    log: Callable[[str], None] = print,
    resume_overrides: Collection[str] | None = None,
) -> RunPlan:
    """Resolve the options and plan the run. `train_pairs`/`val_pairs` default to the folders the
    options name (split as they say, or as the resumed run was); on resume, `resume_overrides`
    names the options to take from `cfg` rather than from the checkpoint (default: those that
    differ from TrainConfig's defaults)."""
    resume_state = load_resume_state(cfg.resume)
    cfg = resolve(cfg, resume_overrides, resume_state["config"] if resume_state else None)
    if resume_state is None:
        check_model_options(cfg)
        check_encoder_early(cfg.model, cfg.encoder, cfg.encoder_weights)
    init_state = load_init_state(cfg.init_from) if resume_state is None else None
    dist = setup_distributed(resolve_device(cfg.device))
    log = log if dist.is_main else quiet
    out = dist.broadcast_object(prepare_run_folder(cfg))  # one timestamped folder
    if train_pairs is None:
        split = resume_state.get("split") if resume_state else None
        train_pairs, val_pairs = training_pairs(cfg, split, log)
    train_pairs, val_pairs = list(train_pairs), list(val_pairs or [])
    if cfg.patience is not None and not val_pairs:
        raise UnetkitError(
            f"--patience {cfg.patience} needs validation images to watch; "
            "give --val-images/--val-masks or a --val-fraction above 0"
        )
    if init_state is not None:  # --model typed (or set in Python, off its default) must match the model's
        given = "model" in resume_overrides if resume_overrides is not None else cfg.model != TrainConfig.model
        cfg = architecture_from(cfg, init_state, cfg.init_from, model_given=given)
    cfg, data = plan(cfg, train_pairs, resume_state, dist.device, log, init_state)
    return RunPlan(cfg, data, dist, out, train_pairs, val_pairs, resume_state, init_state, log)
