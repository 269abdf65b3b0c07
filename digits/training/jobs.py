"""Retraining jobs as RQ sees them: the queue, the job spec, progress in job meta, and a plain view of a job.

The gateway enqueues by function path, so it never imports the training code (or scikit-learn).

Nothing read from the queue is run as code unless it is one of Digits' own job functions: every side (enqueue,
worker, fetch, stop) uses RQ's JSON serializer, never pickle, and ``TrustedJob`` refuses any other function,
callbacks and webhooks. A job planted in Redis with a pickled payload fails with that reason; nothing of it runs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from redis import Redis
from rq import Queue
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from digits.errors import InvalidInput
from digits.training.candidates import DEFAULT as DEFAULT_CANDIDATES
from digits.training.candidates import Candidate, resolve
from digits.training.sources import parse as parse_data

QUEUE = "training"
RETRAIN_FUNCTION = "services.trainer.retrain.run"
FIT_CANDIDATE_FUNCTION = "services.trainer.retrain.fit_candidate"
FAN_IN_FUNCTION = "services.trainer.retrain.select_and_promote"


FUNCTIONS = frozenset({RETRAIN_FUNCTION, FIT_CANDIDATE_FUNCTION, FAN_IN_FUNCTION})
SERIALIZER = JSONSerializer
RESULT_TTL_SECONDS = 30 * 24 * 3600  # finished and failed retrain jobs stay listed for a month
PART_TTL_SECONDS = 24 * 3600  # a fan-out's candidate jobs, read only by their fan-in


class UntrustedJob(Exception):
    """A job that is not one Digits enqueued: it is refused, and nothing of it runs."""


class TrustedJob(Job):
    """RQ's job, restricted to what Digits enqueues: a JSON payload naming one of its own job functions."""

    def _deserialize_data(self) -> None:
        try:
            super()._deserialize_data()  # type: ignore[no-untyped-call]
        except DeserializationError:
            raise DeserializationError(
                f"job {self.id}: its payload is not JSON (a pickled job?); Digits runs only JSON jobs, so it was "
                "not run") from None

    @property
    def func(self) -> Any:
        name = self.func_name
        if name not in FUNCTIONS or self.instance is not None:
            raise UntrustedJob(f"job {self.id} names {name!r}, which is not one of Digits' job functions "
                               f"({', '.join(sorted(FUNCTIONS))}); it was not run")
        if self._success_callback_name or self._failure_callback_name or self._stopped_callback_name or self.webhooks:
            raise UntrustedJob(f"job {self.id} carries callbacks or webhooks, which Digits never sets; it was not run")
        return super().func

    # Callbacks and webhooks would import and call whatever a job record names: never.
    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None

    def send_webhooks(self, status: str | JobStatus, *, exc_string: str | None = None) -> None:
        return None


def queue(connection: Redis) -> Queue:
    return Queue(QUEUE, connection=connection, serializer=SERIALIZER, job_class=TrustedJob)


def fetch(job_id: str, connection: Redis) -> TrustedJob:
    job = TrustedJob.fetch(job_id, connection=connection, serializer=SERIALIZER)
    assert isinstance(job, TrustedJob)
    return job


def fetch_many(job_ids: list[str], connection: Redis) -> list[TrustedJob]:
    """The jobs that still exist, in order. RQ's own fetch_many fails the whole list on one husk (a hash RQ left
    holding only a status after the job itself expired); then each is fetched alone and the husks are skipped."""
    try:
        found = TrustedJob.fetch_many(job_ids, connection=connection, serializer=SERIALIZER)
    except NoSuchJobError:
        found = [_fetch_or_none(job_id, connection) for job_id in job_ids]
    return [j for j in found if isinstance(j, TrustedJob)]


def _fetch_or_none(job_id: str, connection: Redis) -> TrustedJob | None:
    try:
        return fetch(job_id, connection)
    except NoSuchJobError:
        return None


def candidate_job_id(group: str, name: str) -> str:
    """A fan-out job's id: the fan-in job's id (the group) and the candidate's name."""
    return f"{group}_{name}"


JOBS_KEY = "digits:jobs"  # sorted set of retrain job ids by enqueue time, for listing
TERMINAL = {JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED}


@dataclass(frozen=True)
class RetrainSpec:
    data: str = ""  # "" = the trainer's DIGITS_DATA; else sources.parse's words, e.g. "sample+folder:DIR"
    seed: int = 0
    validation_fraction: float = 0.0  # 0 = the data's own (datasets.split)
    holdout_fraction: float = 0.1
    no_activate: bool = False
    limit: int = 0  # 0 = every digit
    candidates: tuple[str, ...] = DEFAULT_CANDIDATES
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-candidate overrides
    top_n: int = 0  # 0 = each ensemble's own default
    min_gain: float = 0.0  # accuracy the winner must add over the active model
    parallel: bool = False  # one RQ job per base candidate, then a fan-in job
    # False when a training-scope token started the job: such jobs never change the active model.
    may_activate: bool = True
    # Refit the winner on every digit of the job before registering it (base candidates; the split's figures stay).
    final_fit: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "candidates", tuple(self.candidates))
        self.resolved()  # refuse unknown candidates and parameters before anything is enqueued
        if not 0.0 <= self.min_gain < 1.0:
            raise InvalidInput(f"min_gain is an accuracy difference from 0 to 1, got {self.min_gain}")
        if not 0 <= self.top_n <= 20:
            raise InvalidInput(f"top_n must be from 1 to 20 (0 = default), got {self.top_n}")
        if not 0.05 <= self.holdout_fraction <= 0.5:
            raise InvalidInput(f"holdout_fraction must be from 0.05 to 0.5, got {self.holdout_fraction}")
        if self.data:
            parse_data(self.data)  # the trainer reads the files; the gateway only checks the words
        if self.validation_fraction and not 0.05 <= self.validation_fraction <= 0.5:
            raise InvalidInput(f"validation_fraction must be 0 (the data's own) or from 0.05 to 0.5, "
                               f"got {self.validation_fraction}")
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
        spec=_spec_of(job),
        result=result,
    )


def _spec_of(job: Job) -> dict[str, Any]:
    try:
        args = job.args
    except DeserializationError:
        return {}  # a job Digits did not enqueue; its failure reason says so
    return args[0] if args and isinstance(args[0], dict) else {}


def _fan_out_progress(job: Job, ids: list[str]) -> dict[str, Any]:
    """A waiting fan-in job's progress is its candidate jobs' progress."""
    parts = fetch_many(ids, job.connection)
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
    if not lines:
        return "failed (no reason recorded; see the trainer's log)"
    # "package.module.SomeError: what happened" -> "what happened" when the exception is ours to word.
    kind, _, words = lines[-1].partition(": ")
    return words if words and kind.rsplit(".", 1)[-1] in _WORDED_ERRORS else lines[-1]


_WORDED_ERRORS = {"UntrustedJob", "DeserializationError", "RuntimeError", "InvalidInput"}


def _iso(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else ""


def to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
