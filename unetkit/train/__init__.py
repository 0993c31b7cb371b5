from unetkit.models.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from unetkit.runtime.amp import AmpPolicy, cpu_has_native_bf16, resolve_amp
from unetkit.train.config import TrainConfig
from unetkit.train.loop import RunResult, Trainer
from unetkit.train.run_plan import plan_run
from unetkit.train.schedulers import SCHEDULERS, Schedule

__all__ = [
    "SCHEDULERS",
    "AmpPolicy",
    "RunResult",
    "Schedule",
    "TrainConfig",
    "Trainer",
    "cpu_has_native_bf16",
    "load_checkpoint",
    "model_from_checkpoint",
    "plan_run",
    "resolve_amp",
    "save_checkpoint",
]
