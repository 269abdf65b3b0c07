"""Losing Redis and losing a trainer worker: serving goes on, nothing registered is lost or half-written."""

from __future__ import annotations

import os
import signal
import time

import grpc
import pytest

from digits.platform.registry import Registry
from digits.stack.local import LocalStack
from digits.v1 import models_pb2, models_pb2_grpc, training_pb2, training_pb2_grpc
from tests.faults.conftest import ADMIN
from tests.faults.load import Load
from tests.stacks import children, redis_version, running_process_groups

OUTAGE_SECONDS = 30


def snapshot(registry: Registry) -> tuple[list[tuple[str, str]], str | None]:
    return [(r.version, r.sha256) for r in registry.list(1000)], registry.active_version()


def test_redis_outage(stack: LocalStack, models: models_pb2_grpc.ModelsStub) -> None:
    registry = stack.registry()
    before = snapshot(registry)
    redis_pid = running_process_groups(stack.run_dir)["redis"]
    with grpc.insecure_channel(stack.ports.gateway) as channel:
        training = training_pb2_grpc.TrainingStub(channel)
        job = training.Retrain(training_pb2.RetrainRequest(candidates=["svc-shift"]), metadata=ADMIN, timeout=10)
        with Load(stack.ports.gateway, clients=16) as load:
            os.kill(redis_pid, signal.SIGSTOP)  # Redis hangs: connections open, nothing answers
            try:
                time.sleep(1)
                for call in (lambda: models.ListModels(models_pb2.ListModelsRequest(), timeout=10),
                             lambda: training.GetJob(training_pb2.GetJobRequest(id=job.id), metadata=ADMIN,
                                                     timeout=10)):
                    started = time.monotonic()
                    with pytest.raises(grpc.RpcError) as error:
                        call()
                    assert error.value.code() == grpc.StatusCode.UNAVAILABLE, error.value.details()
                    assert "Redis" in (error.value.details() or "")
                    assert time.monotonic() - started < 5, "Models/Training calls must fail fast"
                time.sleep(OUTAGE_SECONDS)
            finally:
                os.kill(redis_pid, signal.SIGCONT)
            deadline = time.monotonic() + 30
            while True:  # recovers with no restart
                try:
                    models.ListModels(models_pb2.ListModelsRequest(), timeout=5)
                    break
                except grpc.RpcError:
                    assert time.monotonic() < deadline, "Models did not recover after Redis came back"
                    time.sleep(0.5)
        load.report(f"Redis hung for {OUTAGE_SECONDS}s, 16 clients")
        assert not load.failures(), load.failures()[:5]
        ended = wait_for_end(training, job.id)
        print(f"[redis outage] retrain job in flight ended {ended.status}: {ended.outcome or ended.error}")

    after = snapshot(registry)
    registered = {v for v, _ in after[0]} - {v for v, _ in before[0]}
    assert registered <= ({ended.version} if ended.status == "finished" else set())
    assert set(before[0]) <= set(after[0])

    # Restart Redis from its on-disk data: every version and the active pointer come back.
    time.sleep(1.5)  # appendfsync everysec
    os.killpg(redis_pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while running_process_groups(stack.run_dir).get("redis") in (None, redis_pid):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    restarted = stack.registry()
    deadline = time.monotonic() + 30
    while True:
        try:
            assert snapshot(restarted) == after
            break
        except Exception:
            assert time.monotonic() < deadline, "the registry did not come back intact from disk"
            time.sleep(0.5)
    for version, _ in after[0]:
        restarted.verify(version)
    print(f"[redis restart] {len(after[0])} versions and the active pointer came back from disk, "
          f"redis-server {redis_version(stack)}")


def wait_for_end(training: training_pb2_grpc.TrainingStub, job_id: str, timeout: float = 240) -> training_pb2.Job:
    deadline = time.monotonic() + timeout
    while True:
        try:
            job = training.GetJob(training_pb2.GetJobRequest(id=job_id), metadata=ADMIN, timeout=10)
            if job.status in {"finished", "failed", "stopped", "canceled"}:
                return job
        except grpc.RpcError:
            pass
        assert time.monotonic() < deadline, f"job {job_id} did not end"
        time.sleep(1)


def test_worker_loss(stack: LocalStack) -> None:
    registry = stack.registry()
    before = snapshot(registry)
    with grpc.insecure_channel(stack.ports.gateway) as channel:
        training = training_pb2_grpc.TrainingStub(channel)
        job = training.Retrain(training_pb2.RetrainRequest(candidates=["svc-shift"]), metadata=ADMIN, timeout=10)
        deadline = time.monotonic() + 60
        while training.GetJob(training_pb2.GetJobRequest(id=job.id), metadata=ADMIN, timeout=10).status != "started":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(1)
        worker = running_process_groups(stack.run_dir)["trainer"]
        # RQ runs the job in a work horse it forks into a process group of its own (os.setpgrp): a lost machine
        # takes both, so both go. Killing only the worker's group leaves the horse to finish the job.
        horses = children(worker)
        assert horses, "the worker had forked no work horse: the job was not running"
        os.killpg(worker, signal.SIGKILL)
        for horse in horses:
            os.killpg(horse, signal.SIGKILL)
        ended = wait_for_end(training, job.id, timeout=180)
        print(f"[worker loss] job ended {ended.status}: {ended.error}")
        assert ended.status == "failed" and "worker was lost" in ended.error
        listed = training.ListJobs(training_pb2.ListJobsRequest(), metadata=ADMIN, timeout=10)
        assert any(j.id == job.id and j.status == "failed" for j in listed.jobs)
        assert snapshot(registry) == before

        again = stack.retrain(limit=1000, no_activate=True, timeout=120)
        assert again.status == "finished" and again.version
    assert running_process_groups(stack.run_dir)["trainer"] != worker
