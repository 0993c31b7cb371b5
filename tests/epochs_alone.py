"""The epochs alone, as the run layer holds them (`claimed_run` around `fit`), without the object
rule and the report that `unetkit.runs.run_training` adds: what the loop's tests train with."""

from __future__ import annotations

from unetkit.train import RunResult, TrainConfig
from unetkit.train.loop import EpochCallback
from unetkit.train.run_claim import claimed_run


def train(cfg: TrainConfig, *pairs, log=lambda _: None, on_epoch_end: EpochCallback | None = None) -> RunResult:
    with claimed_run(cfg, *pairs, log=log) as trainer:
        return trainer.fit(on_epoch_end)
