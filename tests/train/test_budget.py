"""train/budget.py: the --time budget the schedule and the stop rules read."""

from __future__ import annotations

from unetkit.train.budget import TimeBudget


def test_a_budget_counts_earlier_processes_and_starts_an_epoch_while_a_quarter_of_one_fits(monkeypatch):
    clock = iter([100.0, *[130.0] * 8])
    monkeypatch.setattr("unetkit.train.budget.time.perf_counter", lambda: next(clock))
    budget = TimeBudget(limit=60.0, min_epochs=None, epochs=None, before=20.0)
    assert budget.elapsed() == 20.0 and budget.shown() == " (20/60s)"  # not started: the earlier seconds
    budget.start()  # at 100 s
    assert budget.elapsed() == 50.0  # 20 before + 30 now
    budget.reserve = 2.0  # the last epoch's validation and saving: 8 s left to train
    assert budget.no_room(epoch=3, training_seconds=40.0) and not budget.no_room(epoch=3, training_seconds=30.0)
    assert not budget.spent(epoch=4)  # an epoch started with 8 s left ends when they are up
    budget.reserve = 10.0
    assert budget.spent(epoch=4) and not TimeBudget(60.0, min_epochs=4, before=70.0).spent(epoch=4)


def test_the_schedule_clock_waits_for_the_minimum_epochs_and_runs_out_with_the_epochs():
    budget = TimeBudget(limit=100.0, min_epochs=10, epochs=None, before=50.0)  # half the time spent
    assert budget.progress(step=10, steps_per_epoch=10) == 0.1  # 1 of 10 minimum epochs: behind the time
    budget = TimeBudget(limit=100.0, min_epochs=None, epochs=4, before=10.0)
    assert budget.progress(step=30, steps_per_epoch=10) == 0.75  # 3 of 4 epochs: ahead of the time
    assert not TimeBudget(limit=None).no_room(epoch=100, training_seconds=1e9)


def test_the_schedule_runs_its_course_over_the_training_time_left_before_the_last_validation():
    """The last epoch ends `reserve` seconds before the limit: with the whole limit as its course,
    poly's rate was still 11% of the peak there (a red-team round)."""
    budget = TimeBudget(limit=10.0, before=9.0, reserve=1.0)
    assert budget.progress(step=5, steps_per_epoch=10) == 1.0  # 9 s of the 9 there are to train
    assert TimeBudget(limit=10.0, before=4.0, reserve=9.0).progress(step=5, steps_per_epoch=10) == 0.8  # at most halved


def test_one_slow_epoch_end_does_not_stop_the_run_early():
    """The reserve is the median of the recent ends: one slow validation on a busy machine stopped a
    3 s run an epoch early with its rate at 21% of the peak."""
    budget = TimeBudget(limit=10.0, before=8.0)
    for seconds in (0.1, 0.1, 0.1, 1.8):
        budget.note_end(seconds)
    assert budget.reserve == 0.1 and not budget.no_room(epoch=5, training_seconds=1.0)
    for seconds in (1.8, 1.8):  # the machine stays slow: the reserve follows it
        budget.note_end(seconds)
    assert budget.reserve == 1.8 and budget.no_room(epoch=7, training_seconds=1.0)
    budget.note_end(0.2)
    assert len(budget.ends) == 5  # the last five ends
