"""A run's hold on its folder, for the life of the run: the lock, the checks that another run did
not finish there or files appear since the run was planned, the marker, the temporaries a killed
run left, and the config files. The run layer (unetkit/runs) holds it around fit -> object rule
-> report, so the Trainer only trains:

    with claimed_run(cfg) as trainer:
        result = trainer.fit()
        ...the steps after training, in the same folder, still held
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from unetkit.data import Pair
from unetkit.data.pairing import file_names
from unetkit.errors import UnetkitError
from unetkit.runtime.atomic import ensure_folder, remove_stale_temporaries, write_json
from unetkit.runtime.folder_lock import RunLock
from unetkit.runtime.hardware import cpu_description
from unetkit.runtime.ownership import MARKER, RUN_FILES, last_steps, mark_last_steps, mark_run_folder
from unetkit.train.config import PATH_OPTIONS, TrainConfig, absolute_paths
from unetkit.train.config_file import files_beside, write_config_toml
from unetkit.train.loop import Trainer
from unetkit.train.run_folder import carry_best, check_run_folder
from unetkit.train.run_plan import plan_run


@contextmanager
def claimed_run(
    cfg: TrainConfig,
    train_pairs: Sequence[Pair] | None = None,
    val_pairs: Sequence[Pair] | None = None,
    log: Callable[[str], None] = print,
    resume_overrides: Collection[str] | None = None,
) -> Iterator[Trainer]:
    """Plan the run (run_plan.plan_run, which says the arguments) and build its Trainer, then hold
    its folder while the caller trains."""
    trainer = Trainer(plan_run(cfg, train_pairs, val_pairs, log, resume_overrides))
    with claimed_run_folder(trainer):
        yield trainer
    # Not in a `finally`: after an error the other ranks may never reach close()'s barrier;
    # torchrun stops them instead.
    trainer.dist.close()


@contextmanager
def claimed_run_folder(trainer: Trainer) -> Iterator[None]:
    """Hold the trainer's run folder (rank 0 writes files, so only it locks); a resumed run that
    already finished is refused before anything is written (it rewrote best.pt and config.json)."""
    finished = trainer.finished_reason()
    trainer.only_last_steps = bool(finished) and last_steps(Path(str(trainer.cfg.resume)).parent) == "pending"
    if finished and not trainer.only_last_steps:
        reason, option = finished
        raise UnetkitError(
            f"{trainer.cfg.resume}: this run already finished at epoch {trainer.start_epoch - 1} ({reason}), so "
            f"there is nothing to resume; train longer with a larger {option}, or start a new run from it "
            "with --init-from"
        )
    out, lock, refused = trainer.out, RunLock(trainer.out, trainer.log) if trainer.dist.is_main else None, None
    if lock is not None:
        try:
            lock.acquire()
            # Another run may have finished here, or files appeared, since this one was set up.
            check_run_folder(out, trainer.cfg.resume)
            mark_run_folder(out)
            carry_best(out, trainer.cfg.resume)
        except UnetkitError as err:
            lock.release()
            refused = str(err)
    refused = trainer.dist.broadcast_object(refused)  # under torchrun every rank stops, none waits
    if refused:
        raise UnetkitError(refused)
    try:
        if lock is not None:
            stale = remove_stale_temporaries(out, (MARKER, *RUN_FILES))
            if stale:
                trainer.log(f"note: removed {len(stale)} temporary file(s) that a killed run left in {out}")
            write_run_config(trainer)
            mark_last_steps(out, "pending")  # until run_training's steps after the epochs are done
        yield
    finally:
        if lock is not None:
            lock.release()


def write_run_config(trainer: Trainer) -> None:
    """config.json (every option, resolved, and the machine), config.toml (`--config` it to run it
    again) and fingerprint.json (what the recipe read; none on resume: the run's own file stays)."""
    out, run = trainer.out, trainer.run
    if run.data.fingerprint is not None:
        write_json(out / "fingerprint.json", run.data.fingerprint)
    # Every path absolute, the run folder included: the run's config names them from any folder.
    cfg = files_beside(absolute_paths(replace(trainer.cfg, out=str(out)), Path.cwd(), PATH_OPTIONS), Path.cwd())
    ensure_folder(out)
    resolved = {
        "device": str(trainer.dist.device),
        "amp": trainer.built.amp.name,
        "amp_reason": trainer.built.amp.reason,
        "channels_last": trainer.built.channels_last,
        "world_size": trainer.dist.world_size,
        "cpu": cpu_description(),
        "mask_values": run.data.mask_values.values,
        "binary": bool(trainer.cfg.binary),
        "model_args": trainer.spec.args,
        "preprocess": run.data.preprocess.to_dict(),
        "train_images": file_names(run.train_pairs),
        "val_images": file_names(run.val_pairs),
    }
    write_json(out / "config.json", {**cfg.to_dict(), "resolved": resolved})
    write_config_toml(out / "config.toml", cfg)
