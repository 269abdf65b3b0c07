"""digits.client.progress: durations, the time left, and the progress bar on a terminal or in a pipe."""

from __future__ import annotations

import io

import pytest

from digits.client import types
from digits.client.progress import ProgressReport, bar, duration, remaining


def test_durations() -> None:
    assert [duration(s) for s in (0, 5.4, 65, 3599.6, 3661, None)] == ["0:00", "0:05", "1:05", "1:00:00", "1:01:01",
                                                                       "?"]


def test_time_left_follows_the_pace_seen_since_the_first_update() -> None:
    assert remaining(0.0, 10, 0.0, 0) is None  # no progress yet
    assert remaining(0.5, 0.2, 0.0, 0) is None  # too soon to tell
    assert remaining(0.5, 10, 0.0, 0) == pytest.approx(10)
    assert remaining(0.75, 20, 0.5, 10) == pytest.approx(10)  # watched from halfway: its own pace
    assert remaining(1.0, 20, 0.0, 0) == 0


def job_at(progress: float, stage: str = "fitting svc", status: str = "started") -> types.Job:
    return types.Job(id="j", status=status, stage=stage, progress=progress, error="", version="", outcome="",
                     enqueued_at="", started_at="", ended_at="", spec={}, result={})


def test_the_bar_shows_elapsed_time_and_an_estimate() -> None:
    text = bar(job_at(0.5), elapsed=65, left=65, width=10)
    assert text.startswith("[#####-----]  50.0%") and "1:05 elapsed" in text and "~1:05 left" in text
    assert "started: fitting svc" in text


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_on_a_terminal_the_bar_is_redrawn_in_place() -> None:
    out, clock = io.StringIO(), Clock()
    report = ProgressReport(out, tty=True, clock=clock)
    for progress in (0.0, 0.25, 0.5):
        clock.now += 10
        report(job_at(progress))
    report.finish()
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "~0:20 left" in text.split("\r")[-1]  # 25 % per 10 s since the first update, 50 % to go


def test_in_a_pipe_plain_lines_and_no_carriage_return() -> None:
    out, clock = io.StringIO(), Clock()
    report = ProgressReport(out, tty=False, clock=clock)
    for progress, stage in ((0.0, "queued"), (0.01, "loading"), (0.02, "loading"), (0.5, "fitting"),
                            (0.55, "fitting"), (1.0, "done")):
        clock.now += 1
        report(job_at(progress, stage))
    report.finish()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [line.split()[-1] for line in lines] == ["queued", "loading", "fitting", "done"]
    assert all("elapsed" in line and "left" in line for line in lines)


def test_without_a_terminal_the_report_chooses_lines_by_itself() -> None:
    out = io.StringIO()  # isatty() is False
    report = ProgressReport(out)
    report(job_at(0.3))
    report.finish()
    assert "\r" not in out.getvalue() and out.getvalue().endswith("\n")
