"""Refusals of the report: broken input gets exit code 2 and one line naming the file or option and
the fix, no traceback, and no user file changes (the harness: tests/refusals.py)."""

from __future__ import annotations

import pytest
from refusals import (
    cases_of,
    refused,
    report_case,
    run_copy,
    train_args,
)
from synthetic import make_shapes, run_cli


def case_report_on_a_config_json_cut_short(tmp_path, rgb_run, **_):
    run = run_copy(tmp_path, rgb_run)
    text = (run / "config.json").read_text()
    (run / "config.json").write_text(text[: len(text) // 2])
    return report_case(run, "config.json", "not readable JSON", "restore")


def case_report_on_a_config_json_that_is_a_list(tmp_path, rgb_run, **_):
    run = run_copy(tmp_path, rgb_run)
    (run / "config.json").write_text('["images", "masks"]\n')
    return report_case(run, "config.json", "not a run's options")


def case_report_on_a_config_json_with_a_number_for_a_folder(tmp_path, rgb_run, **_):
    run = run_copy(tmp_path, rgb_run)
    text = (run / "config.json").read_text()
    (run / "config.json").write_text(text.replace('"val_images": null', '"val_images": 5', 1))
    return report_case(run, "config.json", "val_images", "paths or null")


def case_report_on_a_metrics_csv_with_a_word(tmp_path, rgb_run, **_):
    run = run_copy(tmp_path, rgb_run)
    header, first, *rest = (run / "metrics.csv").read_text().splitlines()
    cells = first.split(",")
    cells[1] = "n/a"  # train_loss
    (run / "metrics.csv").write_text("\n".join([header, ",".join(cells), *rest]) + "\n")
    return report_case(run, "metrics.csv", "line 2", "not a row of 7 numbers")


def case_report_on_a_metrics_csv_without_a_column(tmp_path, rgb_run, **_):
    run = run_copy(tmp_path, rgb_run)
    (run / "metrics.csv").write_text("epoch,loss\n1,0.5\n")
    return report_case(run, "metrics.csv", "no column train_loss", "restore the header")


def case_report_on_a_metrics_csv_cut_mid_row(tmp_path, rgb_run, **_):
    run = run_copy(tmp_path, rgb_run)
    text = (run / "metrics.csv").read_text().rstrip("\n")
    (run / "metrics.csv").write_text(text[: text.rindex(",") - 3])
    return report_case(run, "metrics.csv", "line 2", "edited or cut")


CASES = cases_of(globals(), {})


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused(name, tmp_path, rgb_run, monkeypatch, capsys):
    refused(CASES[name], tmp_path, rgb_run, monkeypatch, capsys)


# ---- the same situations done right just work ----


def test_a_report_of_images_named_like_math_is_written(tmp_path, capsys):
    images, masks = make_shapes(tmp_path / "data", count=6, prefix="cell_$x^2$_")
    out = tmp_path / "run"
    args = [a for a in train_args(images, masks, out) if a != "--no-report"]
    code, _text, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "cell_$x^2$_" in (out / "report.html").read_text()
