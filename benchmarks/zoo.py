"""The ready-made models of unetkit/zoo, made again: `python -m benchmarks.zoo [--only NAME] [--time T]`.

Each model is what a new user gets from `unetkit train --images TRAIN --masks TRAIN --time T`
with the defaults (benchmarks/accuracy.py's run_dataset: the same split, facts and evaluation),
scored on its set's held-out split, exported with `unetkit export --safetensors` into
unetkit/zoo/<name>.safetensors, and described in unetkit/zoo/<name>.md, its model card, with the
numbers of this very run. Run it on a quiet machine: it takes the sum of the budgets and a few
minutes more.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from benchmarks.accuracy import DATA, RESULTS, run_dataset
from benchmarks.common import cpu_slug, save_results
from unetkit.cli import parse_duration
from unetkit.runtime.hardware import cpu_description

ZOO = Path(__file__).resolve().parent.parent / "unetkit" / "zoo"

# name -> the data set it learns, its default budget, and what its card says of use and licence
MODELS = {
    "nuclei": {
        "data": "dsb2018-dev",
        "time": 30 * 60,
        "what": "fluorescence nuclei as objects (instance output: one id per nucleus)",
        "data_text": "the 160 training images of dsb2018-dev (StarDist's DSB2018 subset: fluorescence "
        "nuclei of many cell types and magnifications from the Kaggle 2018 Data Science Bowl, BBBC038)",
        "licence": "images and annotations CC0 1.0 (BBBC038, Broad Institute); cite Caicedo et al., Nat. "
        "Methods 16, 1247 (2019) and, for the subset, Schmidt et al., MICCAI 2018",
        "use": "2-D fluorescence images of nuclei (DAPI, Hoechst and the like), gray, 8- or 16-bit, nuclei "
        "about 10-40 px across; `predict --model nuclei --instances`, or `train --init-from nuclei` on a "
        "few corrected images of your own",
        "limits": "not for brightfield or H&E, 3-D stacks are segmented plane by plane, nuclei much larger "
        "or smaller than 10-40 px need resizing first; crowded clumps still merge at times",
    },
    "em-membranes": {
        "data": "isbi2012",
        "time": 10 * 60,
        "what": "cell membranes in serial-section electron microscopy (ISBI 2012), mask 0 = membrane, 255 = cell",
        "data_text": "slices 00-24 of the ISBI 2012 training stack (Drosophila larva ventral nerve cord, "
        "ssTEM, 512x512)",
        "licence": "the public ISBI 2012 challenge data (Arganda-Carreras et al., Front. Neuroanat. 9:142, "
        "2015; Cardona et al., PLoS Biol. 8:e1000502, 2010), as redistributed in zhixuhao/unet (MIT)",
        "use": "ssTEM slices of neural tissue at about 4 nm/px; cells as objects with `--instances`",
        "limits": "trained on 25 slices of one stack: other tissue, stains or resolutions need "
        "`train --init-from em-membranes` on some of your own",
    },
}


def card(name: str, spec: dict, row: dict, seconds: float) -> str:
    """The model card's text, from this run's own numbers."""
    objects = row.get("objects") or {}
    classes = ", ".join(f"value {c['value']}: Dice {c['dice']:.3f}" for c in row["per_class"])
    scores = f"{row['evaluated_on']} split of {spec['data']} ({row['images']} images): {classes}"
    if objects.get("ap50") is not None:
        scores += f"; objects AP@0.5 {objects['ap50']:.3f}, AP@0.5:0.9 {objects['ap50_90']:.3f} (pooled, as StarDist)"
    if objects.get("adapted_rand_error") is not None:
        scores += f", adapted Rand error {objects['adapted_rand_error']:.3f}"
    plan = ", ".join(f"{key} {value}" for key, value in row["plan"].items())
    return f"""# {name}: {spec["what"]}

Held out: {scores}

- **Data**: {spec["data_text"]}; never the held-out images scored above.
- **Licence of the data**: {spec["licence"]}. The weights: MIT, as unetkit.
- **Recipe**: `unetkit train --images TRAIN --masks TRAIN --time {seconds:g}` with the defaults
  (the fast recipe: a 16-channel, 4-level U-Net with bilinear upsampling); what it chose: {plan};
  {row["epochs"]} epochs.
- **Training**: {row["train_seconds"]:.0f} s on {row["cpu"]}, {datetime.now():%Y-%m-%d}; made by
  `python -m benchmarks.zoo --only {name}`.
- **Intended use**: {spec["use"]}.
- **Limits**: {spec["limits"]}.
"""


def make(name: str, seconds: float, data: Path, out: Path) -> dict:
    spec = MODELS[name]
    row = run_dataset(spec["data"], seconds, data, out, [])
    if "error" in row:
        raise SystemExit(f"{name}: {row['error']}")
    row["cpu"] = cpu_description()
    best = out / spec["data"] / "best.pt"
    target = ZOO / f"{name}.safetensors"
    target.unlink(missing_ok=True)  # unetkit's own earlier export: replaced
    command = [sys.executable, "-m", "unetkit.cli", "export", "--checkpoint", str(best), "--safetensors", str(target)]
    subprocess.run(command, check=True)
    (ZOO / f"{name}.md").write_text(card(name, spec, row, seconds), encoding="utf-8")
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.zoo", description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(MODELS), help="make only this model")
    parser.add_argument("--time", type=parse_duration, help="training budget (default: each model's own)")
    parser.add_argument("--data", type=Path, default=DATA, help=f"the data sets' folder (default {DATA})")
    parser.add_argument("--out", type=Path, default=Path("runs") / "zoo", help="run folders and logs")
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_description()}", flush=True)
    out = args.out / f"{datetime.now():%Y%m%d-%H%M%S}"
    out.mkdir(parents=True)
    rows = {name: make(name, args.time or MODELS[name]["time"], args.data, out) for name in args.only or MODELS}
    path = RESULTS / f"zoo-{datetime.now():%Y-%m-%d-%H%M}-{cpu_slug()}.json"
    save_results(path, {"cpu": cpu_description(), "models": rows})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
