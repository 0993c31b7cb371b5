from __future__ import annotations

from pathlib import Path

import pytest
from synthetic import make_shapes


@pytest.fixture
def binary_data(tmp_path: Path) -> tuple[Path, Path]:
    return make_shapes(tmp_path / "binary")


@pytest.fixture
def multiclass_data(tmp_path: Path) -> tuple[Path, Path]:
    return make_shapes(tmp_path / "multi", values=(0, 1, 2, 3, 4), size=(64, 64))
