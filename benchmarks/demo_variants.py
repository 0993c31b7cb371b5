"""Held-out Dice of demo variants: `python -m benchmarks.demo_variants NAME [option=value ...]`.

Trains the demo's configuration (unetkit.demo.demo_config, fp32 unless amp=... is given) with the
given TrainConfig options replaced, e.g. `time=90.0 min_epochs=None scale=1.0 lr=4e-3`, then
scores best.pt and last.pt, each with and without TTA, on the held-out slices 25-29 at full size.
Prints one JSON line and appends it to benchmarks/results/demo_variants.jsonl. This is how the
demo recipe in benchmarks/NOTES.md was chosen.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import sys
import time
from pathlib import Path

from unetkit.data import find_pairs
from unetkit.demo import DEMO_DATA, HELDOUT_SLICES, TRAIN_SLICES, VAL_SLICES, demo_config
from unetkit.evaluate import evaluate_pairs
from unetkit.inference import InferenceOptions, Predictor
from unetkit.runtime.hardware import cpu_description
from unetkit.train.run_claim import claimed_run

RESULTS = Path(__file__).parent / "results" / "demo_variants.jsonl"


def parse_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        try:
            options[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            options[key] = text  # a bare word, e.g. amp=bf16
    return options


def main(argv: list[str]) -> dict:
    name, options = argv[0], parse_options(argv[1:])
    out = Path("runs") / "demo_variants" / name
    pairs = {int(p.name): p for p in find_pairs(DEMO_DATA / "images", DEMO_DATA / "masks")}
    cfg = dataclasses.replace(demo_config(out, progress=False, amp="off"), **options)
    started = time.perf_counter()
    train_pairs, val_pairs = [pairs[i] for i in TRAIN_SLICES], [pairs[i] for i in VAL_SLICES]
    with claimed_run(cfg, train_pairs, val_pairs, log=lambda _: None) as trainer:  # the epochs alone
        result = trainer.fit()
    row = {
        "name": name,
        "options": options,
        "cpu": cpu_description(),
        "train_s": round(time.perf_counter() - started),
        "epochs": len(result.history),
    }
    for checkpoint in ("best", "last"):
        for tta in (False, True):
            predictor = Predictor(out / f"{checkpoint}.pt", amp=cfg.amp, options=InferenceOptions(tta=tta))
            report = evaluate_pairs(predictor, [pairs[i] for i in HELDOUT_SLICES], progress=False)
            dice = {cls.mask_value: cls.dice for cls in report.per_class}
            row[checkpoint + ("_tta" if tta else "")] = {"cell": round(dice[255], 4), "membrane": round(dice[0], 4)}
    print(json.dumps(row), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    return row


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
