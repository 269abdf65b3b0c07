"""The Training service: retrain jobs on the RQ queue, watched and cancelled through the gateway."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator

from redis import Redis
from rq.command import send_stop_job_command
from rq.exceptions import NoSuchJobError
from rq.job import Dependency, Job, JobStatus
from rq.registry import StartedJobRegistry

from digits.errors import InvalidInput, NotFound
from digits.platform.rpc import Context
from digits.settings import Settings
from digits.training import jobs
from digits.v1 import training_pb2 as pb
from digits.v1 import training_pb2_grpc as pb_grpc
from services.gateway.auth import require_scope
from services.gateway.blocking import off_loop

log = logging.getLogger(__name__)

WATCH_POLL_SECONDS = 0.25


class Training(pb_grpc.TrainingServicer):
    def __init__(self, connection: Redis, settings: Settings) -> None:
        self._redis = connection
        self._queue = jobs.queue(connection)
        self._settings = settings

    async def Retrain(self, request: pb.RetrainRequest, context: Context) -> pb.Job:
        scopes = require_scope(context, self._settings, "training")
        spec = jobs.RetrainSpec(
            # A proto float: 0.2 arrives as 0.2000000029..., which no recorded split's 0.2 would equal.
            data=request.data, seed=request.seed, validation_fraction=round(request.validation_fraction, 6),
            no_activate=request.no_activate, limit=request.limit, candidates=tuple(request.candidates),
            params=_params(request.params_json), top_n=request.top_n, min_gain=request.min_gain,
            parallel=request.parallel, final_fit=not request.no_final_fit,
            # Only a token that may change the active model starts jobs that may change it.
            may_activate="models" in scopes,
        )
        timeout = request.timeout_seconds or self._settings.job_timeout_seconds
        enqueue = self._enqueue_fan_out if spec.parallel else self._enqueue
        job = await off_loop(enqueue, spec, timeout)
        log.info("retrain enqueued", extra={"job": job.id, "spec": spec.to_dict()})
        return to_proto(await off_loop(jobs.view, job))

    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.Job:
        require_scope(context, self._settings, "training")
        return to_proto(await off_loop(self._view, request.id))

    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        require_scope(context, self._settings, "training")
        views = await off_loop(self._recent, min(request.limit or 20, 200))
        return pb.ListJobsResponse(jobs=[to_proto(v) for v in views])

    async def WatchJob(self, request: pb.GetJobRequest, context: Context) -> AsyncIterator[pb.Job]:
        require_scope(context, self._settings, "training")
        last = None
        while True:
            current = to_proto(await off_loop(self._view, request.id))
            if current != last:
                yield current
                last = current
            if current.status in {s.value for s in jobs.TERMINAL}:
                return
            await asyncio.sleep(WATCH_POLL_SECONDS)

    async def CancelJob(self, request: pb.GetJobRequest, context: Context) -> pb.Job:
        require_scope(context, self._settings, "training")
        await off_loop(self._cancel, request.id)
        log.info("retrain cancelled", extra={"job": request.id})
        return to_proto(await off_loop(self._view, request.id))

    # -- blocking helpers (run off the event loop) --------------------------------------------------

    def _enqueue(self, spec: jobs.RetrainSpec, timeout: int) -> Job:
        job = self._queue.enqueue(
            jobs.RETRAIN_FUNCTION, spec.to_dict(), job_timeout=timeout,
            result_ttl=jobs.RESULT_TTL_SECONDS, failure_ttl=jobs.RESULT_TTL_SECONDS, description="retrain",
        )
        self._redis.zadd(jobs.JOBS_KEY, {job.id: time.time()})
        return job

    def _enqueue_fan_out(self, spec: jobs.RetrainSpec, timeout: int) -> Job:
        """One job per base candidate, and a fan-in job that runs when they have all ended, failed or not."""
        group = str(uuid.uuid4())
        bases = [c.name for c in spec.resolved() if c.kind == "base"]
        fits = [
            self._queue.enqueue(jobs.FIT_CANDIDATE_FUNCTION, spec.to_dict(), name, group,
                                job_id=jobs.candidate_job_id(group, name), job_timeout=timeout,
                                result_ttl=jobs.PART_TTL_SECONDS, failure_ttl=jobs.PART_TTL_SECONDS,
                                description=f"fit {name}")
            for name in bases
        ]
        fan_in = self._queue.enqueue(
            jobs.FAN_IN_FUNCTION, spec.to_dict(), group, job_id=group, job_timeout=timeout,
            depends_on=Dependency(jobs=fits, allow_failure=True), result_ttl=jobs.RESULT_TTL_SECONDS,
            failure_ttl=jobs.RESULT_TTL_SECONDS, description="retrain (fan-in)",
            meta={"stage": f"waiting for {len(fits)} candidate jobs", "candidate_jobs": [f.id for f in fits]},
        )
        self._redis.zadd(jobs.JOBS_KEY, {fan_in.id: time.time()})
        return fan_in

    def _fetch(self, job_id: str) -> Job:
        try:
            return jobs.fetch(job_id, self._redis)
        except NoSuchJobError:
            raise NotFound(f"no job {job_id!r}") from None

    def _view(self, job_id: str) -> jobs.JobView:
        self._fail_abandoned()
        return jobs.view(self._fetch(job_id))

    def _fail_abandoned(self) -> None:
        """Jobs whose worker died (its heartbeat expired) move to failed now, not at the next worker's cleanup."""
        StartedJobRegistry(jobs.QUEUE, connection=self._redis, job_class=jobs.TrustedJob,
                           serializer=jobs.SERIALIZER).cleanup()

    def _recent(self, limit: int) -> list[jobs.JobView]:
        self._fail_abandoned()
        newest = self._redis.zrevrange(jobs.JOBS_KEY, 0, limit - 1)
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in newest]
        return [jobs.view(job) for job in jobs.fetch_many(ids, self._redis)]

    def _cancel(self, job_id: str) -> None:
        job = self._fetch(job_id)
        for part in [job_id, *job.meta.get("candidate_jobs", [])]:
            self._cancel_one(self._fetch(part))

    def _cancel_one(self, job: Job) -> None:
        status = job.get_status()
        if status == JobStatus.STARTED:
            send_stop_job_command(self._redis, job.id, serializer=jobs.SERIALIZER)
        elif status not in jobs.TERMINAL:
            job.cancel()


def _params(text: str) -> dict[str, dict[str, object]]:
    if not text:
        return {}
    try:
        params = json.loads(text)
    except ValueError as error:
        raise InvalidInput(f"params_json is not valid JSON: {error}") from None
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        raise InvalidInput('params_json must map candidate names to parameter objects: {"hist-gb": {"max_iter": 30}}')
    return params


def to_proto(job: jobs.JobView) -> pb.Job:
    return pb.Job(
        id=job.id, status=job.status, stage=job.stage, progress=job.progress, error=job.error,
        version=job.version, outcome=job.outcome, enqueued_at=job.enqueued_at, started_at=job.started_at,
        ended_at=job.ended_at, spec_json=jobs.to_json(job.spec), result_json=jobs.to_json(job.result),
    )
