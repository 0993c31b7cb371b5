"""Distributed data-parallel (DDP) training, launched by torchrun.

torchrun starts one process per device and tells each who it is through environment variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT). Each process trains a full copy of the model
on its own shard of the batches; DDP averages the gradients after every backward, so the copies
stay identical. Everything here is a no-op when those variables are absent (a plain
`unetkit train`), so single-process training is unchanged.

  backend:     gloo on CPU, nccl on CUDA (one GPU per process: cuda:LOCAL_RANK)
  data:        DistributedSampler, reshuffled per epoch by set_epoch(), so each rank sees a
               different 1/N of the images; --batch-size is per process
  validation:  each rank scores every N-th image; the confusion matrices and loss sums are
               summed across ranks, so every rank reports the same Dice
  files:       only rank 0 writes checkpoints, logs and plots (of the unwrapped model, so a
               checkpoint loads in a single process)
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

from unetkit.errors import UnetkitError

T = TypeVar("T")


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def one_of_several_ranks() -> bool:
    """Whether torchrun started this process as one of two or more."""
    return launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1


def processes_on_this_machine() -> int:
    """How many of the job's processes torchrun started on this machine (LOCAL_WORLD_SIZE): on a
    CPU they share its memory, where on CUDA each has a GPU of its own."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if launched_by_torchrun() else 1


def is_main_process() -> bool:
    """Rank 0, or not distributed at all; usable before and after the process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class Distributed:
    """This process's place in the job. world_size 1 means plain single-process training."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # we created the process group, so we destroy it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- model and data ---
    def wrap(self, model: nn.Module, sync_bn: bool) -> nn.Module:
        """DDP around the model (SyncBatchNorm first if asked); the model itself when not distributed."""
        if not self.enabled:
            return model
        if sync_bn:
            if self.device.type == "cpu":
                # PyTorch's SyncBatchNorm only has GPU kernels; failing here beats failing mid-epoch.
                raise UnetkitError("--sync-bn needs CUDA GPUs (PyTorch's SyncBatchNorm has no CPU kernel)")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def sampler(self, dataset: Dataset, seed: int) -> DistributedSampler | None:
        if not self.enabled:
            return None  # the DataLoader's own shuffle, seeded per epoch as before
        return DistributedSampler(dataset, self.world_size, self.rank, shuffle=True, seed=seed)

    def shard(self, count: int) -> range:
        """This rank's indices of `count` items: every world_size-th, starting at rank."""
        return range(self.rank, count, self.world_size)

    # --- collectives (no-ops in a single process) ---
    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over ranks, in place, and return it. Sent from self.device (nccl needs GPU tensors)."""
        if self.enabled:
            on_device = tensor.to(self.device)
            dist.all_reduce(on_device)
            tensor.copy_(on_device)
        return tensor

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when it is true on any: decisions that end the loop must agree, or
        the ranks still training wait forever for the ones that stopped."""
        if not self.enabled:
            return flag
        return bool(self.all_reduce_sum(torch.tensor([int(flag)], dtype=torch.long)).item())

    def broadcast_object(self, value: T) -> T:
        """Rank 0's value on every rank (e.g. a timestamped run folder, a measured speed choice)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def sync_buffers(self, model: nn.Module) -> None:
        """Copy rank 0's BatchNorm running statistics to every rank. DDP broadcasts them at the start
        of each training forward, so after the last step each rank holds its own; validation must
        use rank 0's, the ones the checkpoint saves."""
        if self.enabled:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)

    def close(self) -> None:
        """Wait for rank 0's last files, then tear the group down if we set it up."""
        if self.enabled and dist.is_initialized():
            dist.barrier()
            if self.owns_group:
                dist.destroy_process_group()


def another_rank_left(error: BaseException) -> bool:
    """Whether a collective failed because another process of the job went away (gloo's words for
    it): that process says why, so this one need not print 70 lines of its own traceback."""
    return isinstance(error, RuntimeError) and any(
        words in str(error) for words in ("Connection closed by peer", "Connection reset by peer")
    )


def say_for_the_job(line: str, say: Callable[[str], None]) -> None:
    """Say a rank's one-line error once for the job, not once per process: every rank hands it to
    torchrun's error file (TORCHELASTIC_ERROR_FILE), whose failure summary then shows the line in
    place of "To enable traceback see: ...", and only rank 0 (or a rank without that file) also
    prints it. Two ranks refusing a missing folder printed the same line twice."""
    told = False
    path = os.environ.get("TORCHELASTIC_ERROR_FILE") if one_of_several_ranks() else None
    if path:
        when = str(int(time.time()))
        entry = {"message": {"message": line, "extraInfo": {"py_callstack": line, "timestamp": when}}}
        try:
            Path(path).write_text(json.dumps(entry))
            told = True
        except OSError:  # torchrun's own folder gone: print it as any process would
            pass
    if is_main_process() or not told:
        say(line)


# The ranks whose process group this process set up (leave_without_teardown).
GROUPS_SET_UP: list[int] = []


def leave_without_teardown(code: int) -> None:
    """End a torchrun rank that set up a process group, whether its run closed the group or
    stopped on an error: run the exit handlers, flush, and leave without the interpreter's
    teardown. Once DDP has held a gloo group, destroy_process_group leaves gloo's three threads
    running (PyTorch 2.13; without DDP it stops them), and the teardown raced them. About 1 finished
    run in 15-100 under load had a rank abort at exit ("terminate called without an active
    exception", exit code -6), so torchrun called a run that had written all its files a failure.
    3 of 14 runs refused for a missing mask did the same, where the group is never closed
    (benchmarks/NOTES.md, eleventh slice). A no-op in any other process."""
    if not GROUPS_SET_UP:
        return
    atexit._run_exitfuncs()  # what a normal exit runs first: temporary folders, log handlers, worker processes
    for stream in (sys.stdout, sys.stderr):
        if not stream.closed:  # a broken pipe closes stderr (cli.run_command)
            stream.flush()
    os._exit(code)


def setup_distributed(device: torch.device) -> Distributed:
    """Join the torchrun job if there is one. `device` is the resolved --device; under torchrun a
    CUDA device becomes cuda:LOCAL_RANK, one GPU per process."""
    if not one_of_several_ranks():
        return Distributed(device=device)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        GROUPS_SET_UP.append(rank)
    return Distributed(rank, world_size, device, owns_group)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP, whose state_dict has no 'module.' prefixes."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def quiet(_message: Any) -> None:
    """The log function of ranks other than 0: one copy of each line is enough."""


def rng_state() -> dict[str, Any]:
    """The random generators' state (CPU, and every CUDA device), as a checkpoint keeps it."""
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
