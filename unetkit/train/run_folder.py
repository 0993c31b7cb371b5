"""The run folder belongs to unetkit: created by it, or empty when the run starts.

A training writes config.json, metrics.csv, checkpoints and more into `--out`, and cleans up the
temporaries a killed run left there. Both would destroy a user's files of those names (a folder
with their own `config.json` and `.notes.tmp`), so a run writes only into a folder that is new,
empty, or marked as a run folder by MARKER, which unetkit writes before anything else; which
names in it are unetkit's is the ownership rule's (runtime/ownership.py). Everything else is the
user's, and its presence stops the run with one line.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

from unetkit.errors import UnetkitError
from unetkit.runtime.atomic import atomic_write
from unetkit.runtime.folder_lock import RunLock
from unetkit.runtime.ownership import MARKER, foreign_files
from unetkit.train.config import TrainConfig


def prepare_run_folder(cfg: TrainConfig) -> Path:
    """The run's folder (`--out`, or a new timestamped one), checked before anything is built."""
    out = Path(cfg.out) if cfg.out else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    for option in ("images", "masks", "val_images", "val_masks"):
        folder = getattr(cfg, option)
        if folder and Path(folder).resolve() == out.resolve():
            raise UnetkitError(
                f"{out}: --out is the --{option.replace('_', '-')} folder; the run's checkpoints, plots and logs "
                "would mix with your data; choose another --out"
            )
    check_run_folder(out, cfg.resume)
    return out


def resuming_in_place(out: Path, resume: str | None) -> bool:
    return resume is not None and out.resolve() == Path(resume).resolve().parent


def check_run_folder(out: Path, resume: str | None) -> None:
    """Refuse a folder holding another run's checkpoint or files unetkit did not write; a run
    resumed in its own folder keeps it (whatever the user put beside it is never written). A folder
    a live training writes to is said first: "continue it with --resume" sent a user to that refusal."""
    RunLock(out).refuse_if_held()
    if resuming_in_place(out, resume):
        refuse_unmarked_neighbours(out, Path(resume).name)
        return
    refuse_finished_run(out, resume)
    foreign = foreign_files(out)
    if foreign:
        raise UnetkitError(
            f"{out / foreign[0]}: --out holds {len(foreign)} file(s) or folder(s) that unetkit did not write (e.g. "
            f"{foreign[0]}); a run would overwrite or remove files there; choose a new or empty --out folder"
        )


def refuse_unmarked_neighbours(out: Path, checkpoint: str) -> None:
    """Resuming where the checkpoint lies writes the run's files there: fine in a run folder
    unetkit marked, but a copied last.pt in a folder of the user's files (their metrics.csv) must
    not be; runs of versions before the marker resume into an empty --out instead."""
    if (out / MARKER).is_file():
        return
    others = [name for name in foreign_files(out) if name not in (checkpoint, "best.pt", "last.pt")]
    if others:
        raise UnetkitError(
            f"{out / others[0]}: {checkpoint} lies in a folder unetkit did not mark as a run folder (no {MARKER}), "
            "and resuming there would overwrite or remove files beside it; resume into an empty folder with "
            "--out NEW_FOLDER"
        )


def refuse_finished_run(out: Path, resume: str | None) -> None:
    """A folder that holds another run's checkpoint is never written into."""
    finished = [name for name in ("best.pt", "last.pt") if (out / name).exists()]
    if not finished:
        return
    if resume is not None:
        raise UnetkitError(
            f"{out / finished[0]}: --out holds another run's checkpoint, and resuming {resume} there would "
            f"replace it; resume into the run's own folder ({Path(resume).parent}) or an empty --out"
        )
    # last.pt is missing where the disk filled between the two saves: best.pt holds the same epoch
    checkpoint = out / ("last.pt" if "last.pt" in finished else finished[0])
    raise UnetkitError(
        f"{out / finished[0]}: the run folder already holds a checkpoint; "
        f"continue it with --resume {checkpoint} or choose another --out"
    )


def carry_best(out: Path, resume: str | None) -> None:
    """A run resumed into a new folder takes its best.pt along, and fingerprint.json (what the
    recipe read, which a resume does not read again): the folder then holds the run's best
    checkpoint (which the next epochs may or may not beat) and its record, as a run folder always does."""
    if resume is None or resuming_in_place(out, resume):
        return
    for name in ("best.pt", "fingerprint.json"):
        source = Path(resume).parent / name
        if source.is_file() and not (out / name).exists():
            atomic_write(out / name, lambda temporary, source=source: shutil.copyfile(source, temporary), durable=True)
