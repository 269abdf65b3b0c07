"""Retrain jobs as RQ sees them (pure logic and a real Redis): the spec's checks, the failure reasons in words,
and TrustedJob, which runs nothing but Digits' own job functions."""

from __future__ import annotations

import pickle

import pytest
import redis
from rq import Callback, Queue, SimpleWorker
from rq.job import Job, JobStatus

from digits.errors import InvalidInput
from digits.training import jobs
from digits.training.jobs import RetrainSpec


@pytest.mark.parametrize(
    "fields", [{"data": "ftp://x"}, {"data": "sample+openml"}, {"data": "folder:"},
               {"validation_fraction": 0.9}, {"validation_fraction": 0.01},
               {"validation_fraction": -0.1}, {"limit": 10}, {"seed": -1}, {"min_gain": 1.5},
               {"top_n": 50}, {"candidates": ("no-such-recipe",)}, {"params": {"svc": {"no_such": 1}}}]
)
def test_retrain_spec_is_validated(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        RetrainSpec(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("data", ["sample", "idx:/data/mnist", "openml", "folder:/data/mine",
                                  "sample+folder:/data/mine", "idx:/m+folder:/a+folder:/b"])
def test_every_data_source_and_combination_is_accepted(data: str) -> None:
    assert RetrainSpec(data=data).data == data  # the gateway checks the words; only the trainer reads the files


def test_a_spec_survives_json() -> None:
    spec = RetrainSpec(seed=3, limit=1000, candidates=("logreg", "knn"), may_activate=False)
    assert RetrainSpec.from_dict(spec.to_dict()) == spec
    assert RetrainSpec().validation_fraction == 0.0  # the default: the data's own validation digits


def run_one(redis_client: redis.Redis, job: Job) -> Job:
    Queue(jobs.QUEUE, connection=redis_client).enqueue_job(job)
    SimpleWorker([jobs.queue(redis_client)], connection=redis_client, serializer=jobs.SERIALIZER,
                 job_class=jobs.TrustedJob).work(burst=True)
    return jobs.fetch(job.id, redis_client)


def _explode() -> None:
    raise AssertionError("unpickled: a planted payload would have run code here")


class RunsOnUnpickling:
    def __reduce__(self) -> tuple[object, tuple[()]]:
        return _explode, ()


@pytest.mark.parametrize(("payload", "reason"), [
    (pickle.dumps(RunsOnUnpickling()), "not JSON"),
    (b'["os.system", null, ["true"], {}]', "not one of Digits' job functions"),
    (b'["digits.training.jobs.view", null, [], {}]', "not one of Digits' job functions"),
])
def test_a_job_digits_did_not_enqueue_runs_nothing(redis_client: redis.Redis, payload: bytes, reason: str) -> None:
    job = Job.create("os.system", args=("true",), connection=redis_client)
    job.data = payload
    ended = run_one(redis_client, job)
    assert ended.get_status() == JobStatus.FAILED
    view = jobs.view(ended)
    assert reason in view.error and view.spec == {}


def test_callbacks_are_never_run(redis_client: redis.Redis) -> None:
    job = Job.create(jobs.RETRAIN_FUNCTION, args=({"candidates": ["logreg"]},), connection=redis_client,
                     serializer=jobs.SERIALIZER, on_success=Callback("os.getcwd"))
    ended = run_one(redis_client, job)
    assert ended.get_status() == JobStatus.FAILED and "callbacks" in jobs.view(ended).error


@pytest.mark.parametrize(("status", "text", "reason"), [
    (JobStatus.STOPPED, "", "stopped before it finished"),
    (JobStatus.CANCELED, "", "cancelled before it started"),
    (JobStatus.FAILED, "Traceback...\nrq.timeouts.JobTimeoutException: Task exceeded maximum timeout value (60 s)",
     "rq.timeouts.JobTimeoutException: Task exceeded maximum timeout value (60 s)"),
    (JobStatus.FAILED, "Traceback...\nRuntimeError: every candidate failed (svc: boom)",
     "every candidate failed (svc: boom)"),
    (JobStatus.FAILED, "rq.exceptions.AbandonedJobError: ...", "its worker was lost"),
    (JobStatus.FINISHED, "", ""),
])
def test_failure_reasons_are_worded(status: JobStatus, text: str, reason: str) -> None:
    class Ended:
        exc_info = text

        def latest_result(self) -> None:
            return None

    worded = jobs._failure_reason(Ended(), status)  # type: ignore[arg-type]
    assert worded.startswith(reason) and (worded == "") == (reason == "")
