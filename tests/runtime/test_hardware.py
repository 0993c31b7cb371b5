"""The machine's speed choices: asked once in a process, then the same answer."""

from __future__ import annotations

import torch

from unetkit.runtime import hardware


def test_the_layout_probe_times_each_question_once_a_process(monkeypatch):
    """A second predictor in one process must not flip the layout (and with it a bf16 model's
    rounding) because a busy machine timed the probe the other way."""
    timings = [1.0, 2.0, 2.0, 1.0]  # NCHW then NHWC: first NCHW wins, then NHWC would
    monkeypatch.setattr(hardware, "fastest_call", lambda call, repeats: timings.pop(0))
    hardware._cpu_channels_last_is_faster.cache_clear()
    try:
        cpu = torch.device("cpu")
        answers = {hardware.channels_last_is_faster(cpu, torch.bfloat16, channels=8, size=8) for _ in range(3)}
        assert answers == {False}
        assert timings == [2.0, 1.0]  # the probe ran once: its second pair of timings was never taken
        monkeypatch.setattr(torch, "get_num_threads", lambda: 97)  # another thread count is another question
        assert hardware.channels_last_is_faster(cpu, torch.bfloat16, channels=8, size=8) is True
    finally:
        hardware._cpu_channels_last_is_faster.cache_clear()  # the real answer for the tests after this one
