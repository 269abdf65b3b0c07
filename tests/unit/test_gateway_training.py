"""The gateway's Training service on a real, empty Redis with no worker (jobs are enqueued, never run): the spec a
request becomes, who may start jobs that change the active model, the fan-out, listing and cancelling."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis
from pydantic import SecretStr
from rq.job import JobStatus

from digits.errors import InvalidInput, NotFound, Unauthenticated
from digits.settings import Settings
from digits.training import jobs
from digits.v1 import training_pb2 as pb
from services.gateway.training import Training, _params
from tests.unit.test_gateway_auth import ADMIN, TRAINING, FakeContext

SETTINGS = Settings(admin_token=SecretStr(ADMIN), training_token=SecretStr(TRAINING), job_timeout_seconds=600)
AS_ADMIN = FakeContext((("authorization", f"Bearer {ADMIN}"),))
AS_TRAINER = FakeContext((("authorization", f"Bearer {TRAINING}"),))


def call(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_params_json_maps_candidate_names_to_parameter_objects() -> None:
    assert _params("") == {}
    assert _params('{"hist-gb": {"max_iter": 30}}') == {"hist-gb": {"max_iter": 30}}
    with pytest.raises(InvalidInput, match="params_json is not valid JSON"):
        _params("{max_iter: 30}")
    for wrong in ('[{"max_iter": 30}]', '{"hist-gb": 30}', '"hist-gb"'):
        with pytest.raises(InvalidInput, match="params_json must map candidate names to parameter objects"):
            _params(wrong)


def test_a_fraction_asked_for_is_the_fraction_recorded(redis_client: redis.Redis) -> None:
    """A proto float carries 0.2 as 0.2000000029...: recorded as such, no split would ever match an older 0.2."""
    request = pb.RetrainRequest(data="sample", candidates=["svc"], validation_fraction=0.2)
    job = call(Training(redis_client, SETTINGS).Retrain(request, AS_ADMIN))  # type: ignore[arg-type]
    assert json.loads(job.spec_json)["validation_fraction"] == 0.2


def test_a_retrain_request_becomes_a_queued_job_with_its_spec(redis_client: redis.Redis) -> None:
    training = Training(redis_client, SETTINGS)
    request = pb.RetrainRequest(data="sample", seed=7, limit=500, candidates=["svc"], params_json='{"svc": {"C": 3}}',
                                no_final_fit=True)
    job = call(training.Retrain(request, AS_ADMIN))  # type: ignore[arg-type]
    assert job.status == "queued" and job.stage == "queued" and job.progress == 0.0
    spec = json.loads(job.spec_json)
    assert (spec["data"], spec["seed"], spec["limit"], spec["candidates"]) == ("sample", 7, 500, ["svc"])
    assert spec["params"] == {"svc": {"C": 3}}
    assert spec["validation_fraction"] == 0.0  # unset: the data set decides (datasets.split)
    assert spec["final_fit"] is False and spec["may_activate"] is True
    queued = jobs.fetch(job.id, redis_client)
    assert queued.func_name == jobs.RETRAIN_FUNCTION and queued.timeout == 600
    assert redis_client.zrange(jobs.JOBS_KEY, 0, -1) == [job.id.encode()]


def test_a_training_token_starts_jobs_that_never_change_the_active_model(redis_client: redis.Redis) -> None:
    training = Training(redis_client, SETTINGS)
    job = call(training.Retrain(pb.RetrainRequest(timeout_seconds=60), AS_TRAINER))  # type: ignore[arg-type]
    assert json.loads(job.spec_json)["may_activate"] is False
    assert jobs.fetch(job.id, redis_client).timeout == 60


def test_bad_requests_and_missing_tokens_enqueue_nothing(redis_client: redis.Redis) -> None:
    training = Training(redis_client, SETTINGS)
    with pytest.raises(Unauthenticated):
        call(training.Retrain(pb.RetrainRequest(), FakeContext(())))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="params_json"):
        call(training.Retrain(pb.RetrainRequest(params_json="nope"), AS_ADMIN))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="unknown data set 'mnist'"):
        call(training.Retrain(pb.RetrainRequest(data="mnist"), AS_ADMIN))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="limit must be 0"):
        call(training.Retrain(pb.RetrainRequest(limit=10), AS_ADMIN))  # type: ignore[arg-type]
    assert redis_client.zcard(jobs.JOBS_KEY) == 0 and jobs.queue(redis_client).count == 0


def test_a_parallel_job_fans_out_one_job_per_base_candidate_and_waits_on_them(redis_client: redis.Redis) -> None:
    training = Training(redis_client, SETTINGS)
    request = pb.RetrainRequest(candidates=["svc", "hist-gb"], parallel=True)
    fan_in = call(training.Retrain(request, AS_ADMIN))  # type: ignore[arg-type]
    assert fan_in.status == "deferred"
    assert fan_in.stage.startswith("0 of 2 candidates done")
    parts = jobs.fetch(fan_in.id, redis_client).meta["candidate_jobs"]
    assert parts == [jobs.candidate_job_id(fan_in.id, "svc"), jobs.candidate_job_id(fan_in.id, "hist-gb")]
    assert {jobs.fetch(p, redis_client).func_name for p in parts} == {jobs.FIT_CANDIDATE_FUNCTION}
    assert jobs.fetch(fan_in.id, redis_client).func_name == jobs.FAN_IN_FUNCTION
    # Only the fan-in is listed: the parts are its business.
    assert [j.id for j in call(training.ListJobs(pb.ListJobsRequest(), AS_ADMIN)).jobs] == [fan_in.id]  # type: ignore[arg-type]

    cancelled = call(training.CancelJob(pb.GetJobRequest(id=fan_in.id), AS_ADMIN))  # type: ignore[arg-type]
    assert cancelled.status == JobStatus.CANCELED.value
    assert {jobs.fetch(p, redis_client).get_status() for p in parts} == {JobStatus.CANCELED}


def test_jobs_are_listed_newest_first_up_to_the_limit(redis_client: redis.Redis) -> None:
    training = Training(redis_client, SETTINGS)
    ids = [call(training.Retrain(pb.RetrainRequest(seed=s), AS_ADMIN)).id for s in range(3)]  # type: ignore[arg-type]
    listed = call(training.ListJobs(pb.ListJobsRequest(limit=2), AS_ADMIN))  # type: ignore[arg-type]
    assert [j.id for j in listed.jobs] == ids[::-1][:2]
    assert call(training.GetJob(pb.GetJobRequest(id=ids[0]), AS_TRAINER)).id == ids[0]  # type: ignore[arg-type]


def test_a_job_left_as_a_husk_is_not_listed_nor_does_it_hide_the_others(redis_client: redis.Redis) -> None:
    """RQ may leave a job's hash holding only its status after the job expired; listing answered INTERNAL."""
    training = Training(redis_client, SETTINGS)
    kept = call(training.Retrain(pb.RetrainRequest(seed=1), AS_ADMIN)).id  # type: ignore[arg-type]
    redis_client.zadd(jobs.JOBS_KEY, {"husk": time.time() + 1})
    redis_client.hset("rq:job:husk", mapping={"status": "finished"})
    listed = call(training.ListJobs(pb.ListJobsRequest(), AS_ADMIN))  # type: ignore[arg-type]
    assert [j.id for j in listed.jobs] == [kept]
    with pytest.raises(NotFound, match="no job 'husk'"):
        call(training.GetJob(pb.GetJobRequest(id="husk"), AS_ADMIN))  # type: ignore[arg-type]


def test_unknown_jobs_are_not_found_and_reading_jobs_needs_a_token(redis_client: redis.Redis) -> None:
    training = Training(redis_client, SETTINGS)
    with pytest.raises(NotFound, match="no job 'nope'"):
        call(training.GetJob(pb.GetJobRequest(id="nope"), AS_ADMIN))  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        call(training.CancelJob(pb.GetJobRequest(id="nope"), AS_ADMIN))  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated):
        call(training.ListJobs(pb.ListJobsRequest(), FakeContext(())))  # type: ignore[arg-type]



def test_a_cancelled_queued_job_ends_and_watching_it_stops(redis_client: redis.Redis) -> None:
    training = Training(redis_client, SETTINGS)
    job = call(training.Retrain(pb.RetrainRequest(), AS_ADMIN))  # type: ignore[arg-type]
    assert call(training.CancelJob(pb.GetJobRequest(id=job.id), AS_ADMIN)).status == "canceled"  # type: ignore[arg-type]

    async def watch() -> list[str]:
        return [j.status async for j in training.WatchJob(pb.GetJobRequest(id=job.id), AS_ADMIN)]  # type: ignore[arg-type]

    assert call(watch()) == ["canceled"]  # one answer, then the stream ends: the job is over
