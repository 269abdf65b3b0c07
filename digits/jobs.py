"""Retraining jobs as RQ sees them: the queue, the job spec, progress in job meta, and a plain view of a job.

The gateway enqueues by function path, so it never imports the training code (or scikit-learn).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from rq.job import Job, JobStatus

from digits.candidates import DEFAULT as DEFAULT_CANDIDATES
from digits.candidates import Candidate, resolve
from digits.errors import InvalidInput

QUEUE = "training"
RETRAIN_FUNCTION = "services.trainer.retrain.run"
FIT_CANDIDATE_FUNCTION = "services.trainer.retrain.fit_candidate"
FAN_IN_FUNCTION = "services.trainer.retrain.select_and_promote"


def candidate_job_id(group: str, name: str) -> str:
    """A fan-out job's id: the fan-in job's id (the group) and the candidate's name."""
    return f"{group}_{name}"
JOBS_KEY = "digits:jobs"  # sorted set of retrain job ids by enqueue time, for listing
TERMINAL = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED}

_DATA_SPEC = re.compile(r"^(sample|openml|idx:.+)$")


@dataclass(frozen=True)
class RetrainSpec:
    data: str = ""  # "" = the trainer's DIGITS_DATA
    seed: int = 0
    validation_fraction: float = 0.2
    holdout_fraction: float = 0.1
    no_activate: bool = False
    limit: int = 0  # 0 = every digit
    candidates: tuple[str, ...] = DEFAULT_CANDIDATES
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-candidate overrides
    top_n: int = 0  # 0 = each ensemble's own default
    min_gain: float = 0.0  # accuracy the winner must add over the active model
    parallel: bool = False  # one RQ job per base candidate, then a fan-in job

    def __post_init__(self) -> None:
        object.__setattr__(self, "candidates", tuple(self.candidates))
        self.resolved()  # refuse unknown candidates and parameters before anything is enqueued
        if not 0.0 <= self.min_gain < 1.0:
            raise InvalidInput(f"min_gain is an accuracy difference from 0 to 1, got {self.min_gain}")
        if not 0 <= self.top_n <= 20:
            raise InvalidInput(f"top_n must be from 1 to 20 (0 = default), got {self.top_n}")
        if not 0.05 <= self.holdout_fraction <= 0.5:
            raise InvalidInput(f"holdout_fraction must be from 0.05 to 0.5, got {self.holdout_fraction}")
        if self.data and not _DATA_SPEC.match(self.data):
            raise InvalidInput(f"unknown data set {self.data!r}: use 'sample', 'idx:DIR' or 'openml'")
        if not 0.05 <= self.validation_fraction <= 0.5:
            raise InvalidInput(f"validation_fraction must be from 0.05 to 0.5, got {self.validation_fraction}")
        if self.limit < 0 or (0 < self.limit < 200):
            raise InvalidInput(f"limit must be 0 (all) or at least 200 digits, got {self.limit}")
        if not 0 <= self.seed < 2**32:
            raise InvalidInput(f"seed must be from 0 to 2**32-1, got {self.seed}")

    def resolved(self) -> list[Candidate]:
        """The candidates to fit, with this job's parameters."""
        chosen = resolve(self.candidates, self.params)
        if self.top_n:
            chosen = [c.with_params({"top_n": self.top_n}) if c.kind != "base" else c for c in chosen]
        return chosen

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["candidates"] = list(self.candidates)
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RetrainSpec:
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})


class Progress:
    """Writes a running job's stage and fraction done into its meta, where GetJob and WatchJob read them."""

    def __init__(self, job: Job | None) -> None:
        self._job = job

    def __call__(self, stage: str, fraction: float, **extra: Any) -> None:
        if self._job is None:
            return
        self._job.meta.update({"stage": stage, "progress": round(fraction, 4), **extra})
        self._job.save_meta()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class JobView:
    id: str
    status: str
    stage: str
    progress: float
    error: str
    version: str
    outcome: str
    enqueued_at: str
    started_at: str
    ended_at: str
    spec: dict[str, Any]
    result: dict[str, Any]

    @property
    def ended(self) -> bool:
        return self.status in {s.value for s in TERMINAL}


def view(job: Job) -> JobView:
    status = job.get_status(refresh=True)
    meta = job.get_meta(refresh=True)
    if status == JobStatus.DEFERRED and meta.get("candidate_jobs"):
        meta = {**meta, **_fan_out_progress(job, meta["candidate_jobs"])}
    result = job.return_value() if status == JobStatus.FINISHED else None
    result = result if isinstance(result, dict) else {}
    spec = job.args[0] if job.args and isinstance(job.args[0], dict) else {}
    return JobView(
        id=job.id,
        status=status.value if status else "unknown",
        stage=str(meta.get("stage", "queued")),
        progress=float(meta.get("progress", 1.0 if status == JobStatus.FINISHED else 0.0)),
        error=_failure_reason(job, status),
        version=str(result.get("version", "")),
        outcome=str(result.get("outcome", "")),
        enqueued_at=_iso(job.enqueued_at),
        started_at=_iso(job.started_at),
        ended_at=_iso(job.ended_at),
        spec=spec,
        result=result,
    )


def _fan_out_progress(job: Job, ids: list[str]) -> dict[str, Any]:
    """A waiting fan-in job's progress is its candidate jobs' progress."""
    parts = [p for p in Job.fetch_many(ids, connection=job.connection) if p is not None]
    ended = sum(p.get_status() in TERMINAL for p in parts)
    running = [str(p.meta.get("candidate", "")) for p in parts if p.get_status() == JobStatus.STARTED]
    stage = f"{ended} of {len(ids)} candidates done" + (f"; fitting {', '.join(running)}" if running else "")
    return {"stage": stage, "progress": 0.8 * ended / max(len(ids), 1)}


def _failure_reason(job: Job, status: JobStatus | None) -> str:
    if status == JobStatus.STOPPED:
        return "stopped before it finished (cancelled, or its worker was lost); nothing was registered"
    if status == JobStatus.CANCELED:
        return "cancelled before it started"
    if status != JobStatus.FAILED:
        return ""
    latest = job.latest_result()
    text = (latest.exc_string if latest is not None else None) or job.exc_info or ""
    if "AbandonedJobError" in text:
        return "its worker was lost (killed or crashed) before it finished; nothing was registered"
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "failed (no reason recorded; see the trainer's log)"


def _iso(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else ""


def to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
