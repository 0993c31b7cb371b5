"""One training per run folder: a lock file holding the process id, for the run's life.

Two trainings into one `--out` would otherwise interleave their checkpoints, config and metrics
(best.pt of one, last.pt of the other). The lock is created atomically (O_EXCL); a lock whose
process is gone (a killed run) is stale and taken over, with a note.
"""

from __future__ import annotations

import os
from pathlib import Path

from unetkit.atomic import ensure_folder
from unetkit.errors import UnetkitError

LOCK_NAME = ".unetkit-train.lock"


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """`with RunLock(folder):` holds the folder's lock; a second holder gets a one-line error."""

    def __init__(self, folder: str | Path, log=print) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.log = log
        self.held = False

    def acquire(self) -> None:
        ensure_folder(self.path.parent)
        for _ in range(2):  # a second try after removing a stale lock
            try:
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid = self._holder()
                if _process_alive(pid):
                    raise UnetkitError(
                        f"{self.path.parent}: another training (process {pid}) is writing to this run folder; "
                        "wait for it to finish or choose another --out"
                    ) from None
                self.log(f"note: removing the stale lock of a run that ended without cleaning up ({self.path})")
                self.path.unlink(missing_ok=True)
                continue
            except OSError as err:
                raise UnetkitError(f"{self.path}: cannot create the run lock ({err.strerror or err})") from None
            with os.fdopen(handle, "w") as file:
                file.write(f"{os.getpid()}\n")
            self.held = True
            return
        raise UnetkitError(f"{self.path}: the run lock keeps reappearing; is another training starting here?")

    def _holder(self) -> int:
        try:
            return int(self.path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return -1  # unreadable or half-written: treat as stale

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *_exc) -> None:
        self.release()
