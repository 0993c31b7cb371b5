"""One training per run folder, one predict per --out folder: a lock file holding the process
id, for the command's life.

Two trainings into one `--out` would otherwise interleave their checkpoints, config and metrics
(best.pt of one, last.pt of the other); two predicts into one `--out` would each keep a manifest
of its own view, and the last to finish would drop the other's outputs from it. The lock is
created atomically (O_EXCL); a lock whose process is gone (a killed run) is stale and taken
over, with a note.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from pathlib import Path

from unetkit.errors import UnetkitError
from unetkit.runtime.atomic import ensure_folder

LOCK_NAME = ".unetkit-train.lock"
PREDICT_LOCK_NAME = ".unetkit-predict.lock"


def is_lock_temporary(name: str) -> bool:
    """The name `acquire` gives the lock's content before linking it into place."""
    return re.fullmatch(r"\.lock\.\d+\.\d+\.tmp", name) is not None


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


def _link_or_create(source: Path, target: Path) -> None:
    """Hard-link `source` to `target` (atomic, content included); where the file system has no
    hard links, create `target` exclusively and write the id (a moment empty, but still exclusive)."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        handle = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        with os.fdopen(handle, "w") as file:
            file.write(source.read_text())


class RunLock:
    """`with RunLock(folder):` holds the folder's lock; a second holder gets a one-line error."""

    def __init__(self, folder: str | Path, log=print, name: str = LOCK_NAME, holder: str = "training") -> None:
        self.path = Path(folder) / name
        self.log, self.holder = log, holder
        self.held = False

    def acquire(self) -> None:
        folder = ensure_folder(self.path.parent)
        # The lock appears with its process id already in it (written to a temporary file, then
        # hard-linked into place, which fails if the lock exists): no reader ever sees it empty.
        temporary = folder / f".lock.{os.getpid()}.{time.monotonic_ns()}.tmp"
        try:
            temporary.write_text(f"{os.getpid()}\n")
            for _ in range(2):  # a second try after removing a stale lock
                try:
                    _link_or_create(temporary, self.path)
                except FileExistsError:
                    self._refuse_or_clear()
                    continue
                self.held = True
                return
        except OSError as err:
            raise UnetkitError(f"{self.path}: cannot create the run lock ({err.strerror or err})") from None
        finally:
            # On a read-only file system unlinking even a file that was never written fails (EROFS,
            # not ENOENT), and that error would replace the one line above with a traceback.
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
        raise UnetkitError(f"{self.path}: the lock keeps reappearing; is another {self.holder} starting here?")

    def refuse_if_held(self) -> None:
        """The one-line error of a folder another live process holds; nothing otherwise."""
        pid = self.live_holder()
        if pid is not None:
            raise UnetkitError(
                f"{self.path.parent}: another {self.holder} (process {pid}) is writing to this folder; "
                "wait for it to finish or choose another --out"
            )

    def _refuse_or_clear(self) -> None:
        self.refuse_if_held()
        self.log(f"note: removing the stale lock of a {self.holder} that ended without cleaning up ({self.path})")
        self.path.unlink(missing_ok=True)

    def live_holder(self) -> int | None:
        """The id of another live process that holds the lock now, or None (no lock, or a stale one:
        our own id in it is a leftover too, as a restarted container often runs as the same pid)."""
        pid = self._holder() if self.path.is_file() else -1
        return pid if pid != os.getpid() and _process_alive(pid) else None

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
