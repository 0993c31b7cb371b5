from __future__ import annotations

import compileall
import gc
import os
from pathlib import Path

import pytest
import torch
from synthetic import TINY_TRAIN, make_shapes

from unetkit.cli import main


@pytest.fixture
def binary_data(tmp_path: Path) -> tuple[Path, Path]:
    return make_shapes(tmp_path / "binary")


@pytest.fixture
def multiclass_data(tmp_path: Path) -> tuple[Path, Path]:
    return make_shapes(tmp_path / "multi", values=(0, 1, 2, 3, 4), size=(64, 64))


@pytest.fixture(scope="session")
def rgb_run(tmp_path_factory):
    """A tiny RGB model trained for one epoch on 0/255 masks: enough to exercise the commands."""
    root = tmp_path_factory.mktemp("rgb")
    images, masks = make_shapes(root, count=5, size=(40, 56), rgb=True)
    code = main(["train", "--images", str(images), "--masks", str(masks), "--out", str(root / "run"), *TINY_TRAIN])
    assert code == 0
    return root, images, masks, root / "run" / "best.pt"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`-n 2`), each worker takes its share of the cores for torch's own
    threads, so two workers on two cores do not fight over them; the project's source is compiled."""
    if not hasattr(config, "workerinput"):  # once, in the process that starts the workers
        # Many tests start `python -m unetkit` children, each importing unetkit from its
        # source where PYTHONDONTWRITEBYTECODE is set (as in this project's containers): compiled
        # once here, a child's import is ~1 s shorter.
        compileall.compile_dir(Path(__file__).parents[1] / "unetkit", quiet=1)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        share = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(share)
        # and the `python -m unetkit` children a test starts: with the machine's threads each, their
        # OpenMP threads spun against the other worker's
        os.environ.setdefault("OMP_NUM_THREADS", str(share))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Every module the tests import is loaded by now (torch, napari, Qt): moved out of the garbage
    collector's reach, a full collection walks only what the tests make. napari runs one each time
    a viewer's layers are cleared: 0.7 s of each napari test's teardown, ~0.05 s after this."""
    gc.collect()
    gc.freeze()
