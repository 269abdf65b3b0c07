"""A job's progress for people: a bar redrawn in place on a terminal, with the time elapsed and an estimate of the
time left; plain lines (no carriage returns) anywhere else, so that logs and pipes stay readable."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from digits.client.types import Job

BAR_WIDTH = 30
STAGE_CHARS = 48
PLAIN_STEP = 0.1  # in a pipe, a line per stage or status change, or per 10 % of progress


def duration(seconds: float | None) -> str:
    """``m:ss`` or ``h:mm:ss``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    whole = max(round(seconds), 0)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def remaining(progress: float, elapsed: float, first_progress: float, first_elapsed: float) -> float | None:
    """Seconds left at the pace seen since the first observation (None until there is a pace to go by)."""
    done = progress - first_progress
    spent = elapsed - first_elapsed
    if progress >= 1:
        return 0.0
    if done <= 0 or spent < 0.5:
        return None
    return (1 - progress) * spent / done


def bar(job: Job, elapsed: float, left: float | None, width: int = BAR_WIDTH) -> str:
    filled = round(min(max(job.progress, 0.0), 1.0) * width)
    return (f"[{'#' * filled}{'-' * (width - filled)}] {job.progress * 100:5.1f}%  {duration(elapsed)} elapsed, "
            f"~{duration(left)} left  {job.status}: {job.stage[:STAGE_CHARS]}")


def line(job: Job, elapsed: float, left: float | None) -> str:
    return (f"{job.progress * 100:5.1f}%  {duration(elapsed)} elapsed, ~{duration(left)} left  "
            f"{job.status}: {job.stage}")


class ProgressReport:
    """Call it with each state of a job (``Client.wait(on_progress=...)``), then ``finish()``.

    ``tty`` (default: whether ``out`` is a terminal) chooses the redrawn bar or plain lines.
    """

    def __init__(self, out: TextIO, *, tty: bool | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._out = out
        self._tty = out.isatty() if tty is None else tty
        self._clock = clock
        self._started = clock()
        self._first: tuple[float, float] | None = None  # (elapsed, progress) at the first state seen
        self._shown: tuple[str, str, int] | None = None  # what the last plain line said
        self._width = 0  # of the bar drawn last, to blank what a shorter one leaves

    def __call__(self, job: Job) -> None:
        elapsed = self._clock() - self._started
        if self._first is None:
            self._first = (elapsed, job.progress)
        left = remaining(job.progress, elapsed, self._first[1], self._first[0])
        if self._tty:
            text = bar(job, elapsed, left)
            self._out.write("\r" + text.ljust(self._width))
            self._width = len(text)
        else:
            shown = (job.status, job.stage, int(job.progress / PLAIN_STEP + 1e-9))
            if shown == self._shown:
                return
            self._shown = shown
            self._out.write(line(job, elapsed, left) + "\n")
        self._out.flush()

    def finish(self) -> None:
        """End the bar's line (a terminal only)."""
        if self._tty and self._width:
            self._out.write("\n")
            self._out.flush()
            self._width = 0
