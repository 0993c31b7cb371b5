"""A training run that is killed or interrupted loses at most the epoch in progress."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from synthetic import make_shapes

from unetkit.train import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
# Epochs of roughly a second each on a small CPU, so a signal can land inside one.
SLOW_EPOCHS = ("--base-channels", "8", "--depth", "2", "--patch-size", "48", "--patches-per-image", "12")
SLOW_EPOCHS += ("--batch-size", "4", "--val-fraction", "0.25", "--no-progress", "--amp", "off", "--workers", "0")
# A third of that, where a signal or a closed output lands after an epoch's line: the run stops at
# its next batch or line, so a shorter epoch only shortens the wait.
QUICK_EPOCHS = (*SLOW_EPOCHS[:6], "--patches-per-image", "4", *SLOW_EPOCHS[8:])


def start_training(*args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-u", "-m", "unetkit", "train", *map(str, args)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A suite started in the background by a non-interactive shell inherits an ignored SIGINT,
        # and unetkit rightly leaves it ignored: give the run a terminal's Ctrl-C instead.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for_epoch(process: subprocess.Popen, epoch: int, timeout: float = 120) -> None:
    """Read the run's log until it reports `epoch` done (its checkpoint is saved by then)."""
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        if line.lstrip().startswith("epoch") and line.split()[1].startswith(f"{epoch}/"):
            return
        assert time.monotonic() < deadline, "training did not reach the epoch in time"
    pytest.fail(f"training ended before epoch {epoch}: {process.stderr.read()}")


def epochs_in_metrics(run: Path) -> list[int]:
    with (run / "metrics.csv").open() as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


# Ctrl-C; and SIGTERM (timeout, Slurm, docker stop), whose handler the InterruptFlag test checks in the default suite
@pytest.mark.parametrize("stop", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_ctrl_c_exits_cleanly_and_says_how_to_resume(tmp_path, stop):
    images, masks = make_shapes(tmp_path / "data", count=6)
    run = tmp_path / "run"
    process = start_training("--images", images, "--masks", masks, "--out", run, "--epochs", "50", *QUICK_EPOCHS)
    wait_for_epoch(process, 1)
    process.send_signal(stop)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"--resume {run / 'last.pt'}" in err
    epoch = load_checkpoint(run / "last.pt")["epoch"]
    assert epoch >= 1 and f"holds epoch {epoch}" in err


def test_a_run_whose_output_reader_goes_away_stops_and_says_how_to_resume(tmp_path):
    """`unetkit train ... | head`: the run stops at its next line, as after Ctrl-C, with exit code 141
    (a shell's for a broken pipe) and one line on stderr, not a silent success with epochs missing."""
    images, masks = make_shapes(tmp_path / "data", count=6)
    run = tmp_path / "run"
    process = start_training("--images", images, "--masks", masks, "--out", run, "--epochs", "50", *QUICK_EPOCHS)
    wait_for_epoch(process, 1)
    process.stdout.close()  # the reader quits, as `head` does
    err = process.stderr.read()
    assert process.wait(timeout=60) == 141
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "its output was closed" in err and f"--resume {run / 'last.pt'}" in err
    assert load_checkpoint(run / "last.pt")["epoch"] < 50


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_finishes_the_run(tmp_path):
    images, masks = make_shapes(tmp_path / "data", count=6)
    run = tmp_path / "run"
    epochs = 4
    process = start_training("--images", images, "--masks", masks, "--out", run, "--epochs", epochs, *SLOW_EPOCHS)
    wait_for_epoch(process, 1)
    time.sleep(0.3)  # into epoch 2
    process.kill()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL

    killed_at = load_checkpoint(run / "last.pt")["epoch"]  # loads: the kill never tears a checkpoint
    assert 1 <= killed_at < epochs
    resumed = subprocess.run(
        [sys.executable, "-m", "unetkit", "train", "--resume", run / "last.pt", "--no-progress"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run / 'last.pt'} at epoch {killed_at + 1}" in resumed.stdout
    assert epochs_in_metrics(run) == list(range(1, epochs + 1))
    assert load_checkpoint(run / "last.pt")["epoch"] == epochs
    best = load_checkpoint(run / "best.pt")
    assert 1 <= best["epoch"] <= epochs and best["best_dice"] >= 0


def test_interrupt_flag_defers_the_first_ctrl_c_to_a_safe_point():
    from unetkit.train.interrupt import InterruptFlag

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even under nohup
    flag = InterruptFlag()
    with pytest.raises(KeyboardInterrupt):  # a Ctrl-C not yet acted on is raised on the way out
        with flag:
            flag.check()  # nothing asked yet
            signal.raise_signal(signal.SIGINT)  # the first Ctrl-C only sets the flag
            assert flag.requested
            with pytest.raises(KeyboardInterrupt):
                flag.check()
            with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C interrupts at once
                signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with flag:  # used again: starts with no request
        flag.check()
    signal.signal(signal.SIGINT, before)


def test_interrupt_flag_leaves_an_ignored_sigint_ignored():
    from unetkit.train.interrupt import InterruptFlag

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with InterruptFlag():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_interrupt_flag_takes_sigterm_but_leaves_it_to_torchruns_agent_and_to_a_programs_own_handler():
    from unetkit.train.interrupt import InterruptFlag

    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with InterruptFlag() as flag:
        assert signal.getsignal(signal.SIGTERM) == flag._on_sigint
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back
    with InterruptFlag(take_sigterm=False):  # a rank of a torchrun job
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    def own(*_):
        pass

    before = signal.signal(signal.SIGTERM, own)
    try:
        with InterruptFlag():
            assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_run_stopped_after_its_last_epoch_does_the_steps_after_it_on_resume(tmp_path, monkeypatch, capsys):
    """Killed or Ctrl-C'd after its last epoch but before the object rule and the report, a run
    counted as finished: no rule in best.pt, no report.html, and --resume refused (a red-team
    finding). The run folder's marker says the steps are pending; --resume does them alone."""
    import json

    from synthetic import TINY_TRAIN, run_cli

    import unetkit.runs.training as training
    from unetkit.runtime.ownership import MARKER

    images, masks = make_shapes(tmp_path / "data", count=8)
    out = tmp_path / "run"
    tiny = [option for option in TINY_TRAIN if option != "--no-report"]

    def stopped(*_args, **_kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:  # Ctrl-C in the object rule's step
        patched.setattr(training, "choose_object_rule", stopped)
        code, _, err = run_cli(capsys, "train", "--images", images, "--masks", masks, "--out", out, *tiny)
    assert code == 130 and "holds all 1 epochs, not yet the steps after them" in err and "--resume" in err
    assert json.loads((out / MARKER).read_text())["last_steps"] == "pending"
    assert "object_rule" not in load_checkpoint(out / "best.pt") and not (out / "report.html").exists()
    trained = (out / "last.pt").read_bytes()
    code, stdout, _ = run_cli(capsys, "train", "--resume", out / "last.pt", "--no-progress")
    assert code == 0 and "the steps after them (object rule, report) were not; doing them now" in stdout
    assert "object_rule" in load_checkpoint(out / "best.pt") and (out / "report.html").is_file()
    assert (out / "last.pt").read_bytes() == trained  # no epoch trained
    assert json.loads((out / MARKER).read_text())["last_steps"] == "done"
    code, _, err = run_cli(capsys, "train", "--resume", out / "last.pt")
    assert code == 2 and "already finished" in err


def test_a_run_from_a_model_resumed_for_its_last_steps_still_weighs_the_model_it_started_from(
    tmp_path, monkeypatch, capsys
):
    """The --init-from model is not read again on resume: the comparison with it (WiSE-FT, the start)
    was skipped on a resume for the steps after the epochs. The start is kept as start.pt."""
    from synthetic import nuclei_with_ids, run_cli

    import unetkit.runs.training as training

    images, masks = nuclei_with_ids(tmp_path / "data", count=4)
    out = tmp_path / "run"
    args = ["--epochs", "1", "--no-progress", "--no-report", "--amp", "off", "--val-fraction", "0.25"]

    def stopped(*_args, **_kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:  # Ctrl-C in the comparison with the start
        patched.setattr(training, "settle_from_start", stopped)
        code, _, err = run_cli(capsys, "train", "--images", images, "--masks", masks, "--out", out,
                               "--init-from", "nuclei", *args)  # fmt: skip
    assert code == 130 and "not yet the steps after them" in err
    assert "object_rule" in load_checkpoint(out / "start.pt")  # the start, with the rule it is judged by
    code, stdout, err = run_cli(capsys, "train", "--resume", out / "last.pt", "--no-progress")
    assert code == 0, err
    assert "from the model: pooled AP@0.5:0.9 the start" in stdout
