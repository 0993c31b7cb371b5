"""A fingerprint of what unetkit reads from the shared data sets: a SHA-256 over every decoded
image and mask (values, dtype and shape), per set. Run it at two commits (PYTHONPATH=checkout)
to show that a change to the readers leaves every file's pixels as they were.

    python -m benchmarks.read_hash [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from unetkit.data import find_pairs
from unetkit.data.io import read_pair

SETS = ("isbi2012", "hc18-dev", "camvid-dev", "dsb2018-dev")


def read_hash(root: Path) -> dict:
    pairs = find_pairs(root / "images", root / "masks")
    digest = hashlib.sha256()
    for pair in pairs:
        for array in read_pair(pair.image, pair.mask):
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(array.tobytes())
    return {"pairs": len(pairs), "sha256": digest.hexdigest()[:16]}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.read_hash", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    print(json.dumps({name: read_hash(args.data / name) for name in SETS if (args.data / name).is_dir()}))


if __name__ == "__main__":
    main()
