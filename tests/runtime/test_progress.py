"""runtime/progress.py: one callback for a long call's progress, heard by the terminal's bar and
napari's; the training pass, tiled prediction and evaluation tell it as they go."""

import torch

from unetkit.inference.tiling import predict_tiled
from unetkit.runs import run_training
from unetkit.runtime.progress import TerminalBar, progress_to
from unetkit.train import TrainConfig


def test_the_terminal_bar_starts_a_new_bar_for_each_pass_and_closes_it_when_done():
    bar = TerminalBar()
    bar(2, 4, "epoch 1")
    first = bar.bar
    assert first.n == 2 and first.total == 4
    bar(1, 4, "epoch 2")  # done went back: a new pass
    assert bar.bar is not first and bar.bar.n == 1
    bar(4, 4, "epoch 2")
    assert bar.bar is None
    assert progress_to(None, False) is None

    def listener(*told):
        pass

    assert progress_to(listener, True) is listener  # a listener given wins over the bar


def test_training_and_tiled_prediction_tell_the_callback(binary_data, tmp_path):
    images, masks = binary_data
    heard = []
    cfg = TrainConfig(images=str(images), masks=str(masks), out=str(tmp_path / "run"), base_channels=8, depth=2,
                      patch_size=32, patches_per_image=1, batch_size=4, epochs=2, amp="off", channels_last="off",
                      val_fraction=0.25, report=False)  # fmt: skip
    run_training(cfg, log=lambda _: None, on_progress=lambda *told: heard.append(told))
    ends = [(done, total, what.split(" loss")[0]) for done, total, what in heard if done == total]
    assert [what for *_, what in ends] == ["epoch 1/2", "epoch 2/2"] and ends[0][1] == ends[1][1] > 0
    passes = [[done for done, _, what in heard if what.startswith(f"epoch {e}/2")] for e in (1, 2)]
    assert all(counts == sorted(counts) for counts in passes)  # counts only go up within a pass
    tiles = []
    image = torch.zeros(1, 100, 100)
    predict_tiled(lambda x: x[:, :1], image, 1, tile=64, overlap=16, progress=lambda *told: tiles.append(told))
    assert tiles == [(done, 4, "tiles") for done in range(1, 5)]


def test_a_log_file_gets_plain_lines_of_a_long_pass_and_a_terminal_a_bar(monkeypatch):
    """A redrawn bar writes carriage returns into a redirected log (a red-team finding): where
    standard error is not a terminal, a line every LOG_INTERVAL_SECONDS, none at the pass's end."""
    import io
    import sys

    import unetkit.runtime.progress as progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert isinstance(progress_to(None, True), progress.LogLines)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert isinstance(progress_to(None, True), TerminalBar)
    clock = iter([0.0, 5.0, 21.0, 30.0, 45.0, 100.0, 101.0, 130.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    log = io.StringIO()
    lines = progress.LogLines("img", stream=log)
    for done in (10, 20, 40, 60, 80, 100):  # one pass: 0 s to 100 s
        lines(done, 100, "epoch 1/2")
    lines(5, 100, "epoch 2/2")  # a new pass at 101 s
    lines(50, 100, "epoch 2/2")  # 29 s into it: past the interval
    assert log.getvalue().splitlines() == [
        "epoch 1/2: 40/100 img (1.9 img/s)",
        "epoch 1/2: 80/100 img (1.8 img/s)",
        "epoch 2/2: 50/100 img (1.7 img/s)",
    ]
    assert "\r" not in log.getvalue()


def test_the_training_bar_counts_what_the_loader_yields():
    """Patches, a whole image's several augmented views, or whole images: not every one an "img"
    (a red-team finding: a 9-image run counted 96 "img" an epoch)."""
    from types import SimpleNamespace

    from unetkit.train.loop import Trainer

    def unit(**options):
        return Trainer.sample_unit(SimpleNamespace(cfg=SimpleNamespace(**options)))

    assert unit(patch_size=256, patches_per_image=12) == "patch"
    assert unit(patch_size=None, patches_per_image=8) == "view"
    assert unit(patch_size=None, patches_per_image=1) == "img"
    assert unit(patch_size=None, patches_per_image=None) == "img"
