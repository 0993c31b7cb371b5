"""The docs generator (docs/make_figures.py)'s figures render (the training-based one only with -m slow)."""

import make_figures as docs
import pytest


@pytest.mark.parametrize("name", sorted(docs.CHEAP_FIGURES))
def test_cheap_figures_render(tmp_path, name):
    small = {"amp": 32, "weight_gradient": 16, "winograd": 16}  # timings: their figures' sizes take seconds
    path = docs.CHEAP_FIGURES[name](tmp_path, size=small[name]) if name in small else docs.CHEAP_FIGURES[name](tmp_path)
    assert path.suffix == ".png" and 0 < path.stat().st_size < 200_000


def test_the_training_figure_trains_and_scores_a_model(tmp_path):
    """The figure's scoring read the evaluation report as a dict long after it became a dataclass,
    and the full regeneration crashed, unseen, since only the slow test trained (a red-team
    round): one epoch of DumbNet, scored on the held-out slices as the figure does."""
    from unetkit.data import find_pairs

    by_slice = {int(p.name): p for p in find_pairs(docs.DEMO_DATA / "images", docs.DEMO_DATA / "masks")}
    pairs = tuple([by_slice[i] for i in slices] for slices in (docs.TRAIN_SLICES, docs.VAL_SLICES, [25]))
    examples: dict = {}
    scores = docs._train_and_score("dumbnet", tmp_path, 1, 1.0, pairs, examples)
    assert scores["epochs"] == 1 and 0 < scores["cell_dice"] <= 1 and 0 <= scores["membrane_dice"] <= 1
    assert examples["dumbnet"].shape == (512, 512)


@pytest.mark.slow
def test_dumbnet_vs_unet_figure_trains_both_models(tmp_path):
    path = docs.figure_dumbnet_vs_unet(tmp_path, epochs=1)
    assert path.stat().st_size > 0 and (tmp_path / "dumbnet_vs_unet.json").is_file()


def test_every_page_names_its_module_and_has_its_figure():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pages = {
        "metrics.md": ("unetkit/scoring/metrics.py", "dice_iou.png"),
        "upsampling.md": ("unetkit/models/blocks.py", "upsampling.png"),
        "amp.md": ("unetkit/runtime/amp.py", "amp.png"),
        "schedulers.md": ("unetkit/train/schedulers.py", "schedulers.png"),
        "dumbnet_vs_unet.md": ("unetkit/models/dumbnet.py", "dumbnet_vs_unet.png"),
        "objects.md": ("unetkit/data/weight_map.py", "weight_map.png"),
        "training_step.md": ("unetkit/models/conv3x3.py", "weight_gradient.png"),
        "winograd.md": ("unetkit/models/winograd.py", "winograd.png"),
    }
    for page, (module, figure) in pages.items():
        text = (root / "docs" / page).read_text()
        assert module in text and f"figures/{figure}" in text, page
        assert (root / "docs" / "figures" / figure).is_file(), figure
