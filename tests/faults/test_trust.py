"""Trust on an operator's path: every activated model serves on every replica (one started later too), a failed
load is retried, nothing in Redis runs as code, each Redis user has least privilege, a training token never
promotes, weak secrets are refused outside local mode, and old blobs are pruned. Each case prints its figures."""

from __future__ import annotations

import pickle
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
from rq import Queue
from rq.job import Job

from digits.client import Job as TrainingJob
from digits.platform.healthcheck import is_serving
from digits.platform.registry import ACTIVE_KEY, blob_key
from digits.stack import secrets
from digits.stack.local import REPO, LocalStack
from digits.training import datasets, jobs
from digits.v1 import models_pb2, models_pb2_grpc, recognizer_pb2, recognizer_pb2_grpc, training_pb2
from services.trainer.comparison import compare, winner
from services.trainer.retrain import JobSetup, promote
from tests.faults.conftest import ADMIN, TRAINING_TOKEN, extra_replica
from tests.gates import GATE_PASSED, WEAK_KNN
from tests.integration.digits_data import held_out
from tests.payloads import RunsOnUnpickling
from tests.stacks import redis_version

RECOGNIZER = "digits.v1.Recognizer"
WEAK = {"candidates": ["knn"], "params": {"knn": WEAK_KNN}, "no_final_fit": True}  # tests/gates.py


def train(stack: LocalStack, **fields: Any) -> TrainingJob:
    job = stack.retrain(no_activate=True, timeout=300, **fields)
    assert job.status == "finished", job.error
    return job


def answering_versions(target: str, calls: int = 16) -> set[str]:
    pixels, _ = held_out(1)
    request = recognizer_pb2.PredictRequest(pixels=recognizer_pb2.Pixels(values=pixels[0].tolist()))
    with grpc.insecure_channel(target) as channel:
        stub = recognizer_pb2_grpc.RecognizerStub(channel)
        return {stub.Predict(request, timeout=10).version for _ in range(calls)}


def listing(models: models_pb2_grpc.ModelsStub) -> models_pb2.ListModelsResponse:
    return models.ListModels(models_pb2.ListModelsRequest(), timeout=10)


def wait_for(check: object, what: str, timeout: float = 30) -> float:
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - started < timeout, what
        time.sleep(0.2)
    return time.monotonic() - started


def all_replicas_serve(models: models_pb2_grpc.ModelsStub, version: str, count: int) -> bool:
    replicas = listing(models).replicas
    return len(replicas) >= count and all(r.version == version and r.state == "serving" for r in replicas)


def activate(models: models_pb2_grpc.ModelsStub, version: str, reason: str) -> None:
    models.ActivateModel(models_pb2.ActivateModelRequest(version=version, reason=reason), metadata=ADMIN, timeout=30)


def weak_model_activated(stack: LocalStack, models: models_pb2_grpc.ModelsStub, **split: int) -> str:
    """The weak recipe trained on ``split`` (limit, seed) and activated by an admin: its version."""
    version = train(stack, **WEAK, **split).version
    activate(models, version, "fault test: a weak model that any real recipe beats")
    assert listing(models).active_version == version
    return version


def registered_ensemble(stack: LocalStack, ensemble: str) -> tuple[str, str]:
    """``ensemble`` of a job on 1,000 sample digits (knn, logreg and the ensemble), fitted by the trainer's own
    comparison and registered by its own promotion step with the stack's signing key, not activated: (its version,
    the job's winner). A job registers only its winner, and whether the ensemble wins depends on the seed; here
    the promotion is given the ensemble alone, so the ensemble is what is registered, whichever candidate wins."""
    spec = jobs.RetrainSpec(data="sample", limit=1000, candidates=("knn", "logreg", ensemble), no_activate=True)
    data = datasets.load_sample()
    split = datasets.split(data, seed=spec.seed, validation_fraction=spec.validation_fraction,
                           holdout_fraction=spec.holdout_fraction, limit=spec.limit)
    fitted = compare(spec.resolved(), split, spec.seed, lambda index, candidate: None)
    chosen = next(f for f in fitted if f.candidate.name == ensemble)
    assert chosen.ok, f"{ensemble} failed: {chosen.error}"
    best = winner(fitted)
    assert best is not None
    setup = JobSetup(spec, f"fault-test-{ensemble}", jobs.Progress(None), stack.registry(signing=True), data, split)
    result = promote(setup, [chosen])
    assert result["winner"] == ensemble and "not activated" in result["outcome"], result["outcome"]
    return str(result["version"]), best.candidate.name


@pytest.mark.parametrize("ensemble", ["vote-soft", "blend-logreg"])
def test_an_activated_ensemble_is_served_by_every_replica_and_a_new_one(
    stack: LocalStack, models: models_pb2_grpc.ModelsStub, ensemble: str
) -> None:
    """An ensemble version, once activated, is what every replica serves, and what a replica started later
    loads: registered deliberately (registered_ensemble), not only when it happens to win its job."""
    before = listing(models).active_version
    version, job_winner = registered_ensemble(stack, ensemble)
    shown = models.GetModel(models_pb2.GetModelRequest(version=version), timeout=10)
    assert shown.kind == ensemble, f"{version} is a {shown.kind}, not the {ensemble} ensemble"
    activate(models, version, "fault test")
    try:
        replicas = len(stack.ports.inference)
        swap = wait_for(lambda: all_replicas_serve(models, version, replicas), "replicas did not swap")
        assert answering_versions(stack.ports.gateway) == {version}
        with extra_replica(stack) as port:
            ready = wait_for(lambda: is_serving(f"127.0.0.1:{port}", RECOGNIZER), "a new replica never got ready", 60)
            assert answering_versions(f"127.0.0.1:{port}") == {version}
            wait_for(lambda: all_replicas_serve(models, version, replicas + 1), "the new replica did not report")
        print(f"[{ensemble} served] {version} (accuracy {shown.accuracy:.4f}; its job's winner: {job_winner}) on "
              f"{replicas} replicas {swap:.1f}s after activation; a replica started afterwards was ready in "
              f"{ready:.1f}s")
    finally:
        activate(models, before, "fault test done")


def test_a_failed_load_is_retried_and_shown_beside_the_active_pointer(
    stack: LocalStack, models: models_pb2_grpc.ModelsStub
) -> None:
    before = listing(models).active_version
    version = train(stack, limit=1000).version
    admin = stack.redis_client()
    blob = admin.get(blob_key(version))
    assert isinstance(blob, bytes)
    admin.set(blob_key(version), blob[:1000])  # a transient fault: the blob reads short for a while
    assert stack.registry().activate(version, expected=before, why="fault test: blob damaged")
    try:
        failing = wait_for(lambda: all(r.state == "failing" and r.version == before and "bytes" in r.error
                                       for r in listing(models).replicas), "replicas did not report failing")
        assert answering_versions(stack.ports.gateway) == {before}  # the old model keeps answering
        shown = subprocess.run([sys.executable, "-m", "digits.cli", "--gateway", stack.ports.gateway, "models"],
                               capture_output=True, text=True, timeout=30, check=True)
        assert f"do not serve the active version {version}" in shown.stderr
        admin.set(blob_key(version), blob)  # the fault passes: no restart, no new activation
        recovered = wait_for(lambda: all_replicas_serve(models, version, len(stack.ports.inference)),
                             "replicas stayed on the old model after the blob came back", 90)
        print(f"[failed load] replicas reported failing after {failing:.1f}s and served {version} "
              f"{recovered:.1f}s after its blob came back")
    finally:
        stack.registry().activate(before, expected=version, why="fault test done")


def plant(stack: LocalStack, payload: bytes) -> str:
    """A job in the training queue, as anyone who can write to Redis could plant one: RQ's own job record, with
    ``payload`` as its serialized call."""
    client = stack.redis_client()
    job = Job.create("os.system", args=("true",), connection=client, id=f"planted-{uuid.uuid4()}")
    job.data = payload
    Queue("training", connection=client).enqueue_job(job)
    client.zadd("digits:jobs", {job.id: time.time()})  # so that the gateway lists it too
    return job.id


def test_a_planted_job_runs_no_code_anywhere(stack: LocalStack, tmp_path: Path) -> None:
    payloads = {
        "pickled payload that runs code as it is unpickled": pickle.dumps(RunsOnUnpickling(tmp_path / "a")),
        "pickled call of os.system": pickle.dumps(("os.system", None, (f"touch {tmp_path / 'b'}",), {})),
        "JSON call of os.system": b'["os.system", null, ["touch %s"], {}]' % str(tmp_path / "c").encode(),
    }
    planted = {what: plant(stack, payload) for what, payload in payloads.items()}
    with grpc.insecure_channel(stack.ports.gateway) as channel:
        from digits.v1 import training_pb2_grpc

        training = training_pb2_grpc.TrainingStub(channel)

        def ended() -> bool:
            views = [training.GetJob(training_pb2.GetJobRequest(id=i), metadata=ADMIN, timeout=10) for i in
                     planted.values()]
            return all(v.status == "failed" for v in views)

        wait_for(ended, "the trainer did not refuse the planted jobs", 60)
        listed = training.ListJobs(training_pb2.ListJobsRequest(), metadata=ADMIN, timeout=10)
        for what, job_id in planted.items():
            job = training.GetJob(training_pb2.GetJobRequest(id=job_id), metadata=ADMIN, timeout=10)
            print(f"[planted job: {what}] {job.status}: {job.error}")
            assert "not JSON" in job.error or "not one of Digits' job functions" in job.error
        assert set(planted.values()) <= {j.id for j in listed.jobs}
    assert not list(tmp_path.iterdir()), "a planted job ran code"


def test_redis_users_have_least_privilege(stack: LocalStack) -> None:
    """A client without credentials can run nothing (NOAUTH); each ACL user is refused, by the ACL (NOPERM), what
    its service has no business doing; a wrong password is refused as authentication."""
    anonymous = redis.Redis(port=stack.ports.redis)
    anonymous_attempts: list[tuple[str, tuple[str, ...]]] = [("ping", ()), ("set", (ACTIVE_KEY, "v666")),
                                                             ("get", (ACTIVE_KEY,))]
    for anonymous_command, anonymous_args in anonymous_attempts:
        # NOAUTH, or (a client that opens with HELLO) "HELLO must be called with the client already authenticated"
        with pytest.raises(redis.exceptions.AuthenticationError, match=r"NOAUTH|already authenticated"):
            getattr(anonymous, anonymous_command)(*anonymous_args)
    refusals = []
    attempts = [
        (stack.redis_client("inference"), "set", (ACTIVE_KEY, "v666")),
        (stack.redis_client("inference"), "delete", (blob_key("v1"),)),
        (stack.redis_client("inference"), "rpush", ("rq:queue:training", "planted")),
        (stack.redis_client("gateway"), "flushall", ()),
        (stack.redis_client("gateway"), "config_set", ("appendonly", "no")),
        (stack.redis_client("trainer"), "acl_setuser", ("intruder",)),
        (stack.redis_client("trainer"), "set", ("elsewhere", "x")),
    ]
    for client, command, args in attempts:
        with pytest.raises(redis.exceptions.NoPermissionError):
            getattr(client, command)(*args)
        refusals.append(command)
    assert stack.redis_client("inference").get(ACTIVE_KEY)  # reading the registry is what it is for
    for user, password in (("admin", "guessed"), ("default", "")):  # default is disabled: nobody logs in as it
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=stack.ports.redis, username=user, password=password).ping()
    print(f"[redis ACL] 3 commands without credentials refused (NOAUTH); {len(refusals)} writes and admin commands "
          f"refused with NOPERM for users without the right; a wrong password and the disabled default user refused "
          f"as authentication; against redis-server {redis_version(stack)}")


def test_a_training_token_never_changes_the_active_model(stack: LocalStack, models: models_pb2_grpc.ModelsStub) -> None:
    """A job started with a training token registers its winner and never activates it, even when the gate would
    have: the active model is a weak one, judged on the job's own digits, which the job's winner beats."""
    before = listing(models).active_version
    weak = weak_model_activated(stack, models, limit=1000)
    try:
        with grpc.insecure_channel(stack.ports.gateway) as channel:
            from digits.v1 import training_pb2_grpc

            training = training_pb2_grpc.TrainingStub(channel)
            token = (("authorization", f"Bearer {TRAINING_TOKEN}"),)
            started = training.Retrain(training_pb2.RetrainRequest(limit=1000), metadata=token, timeout=10)
            *_, job = training.WatchJob(training_pb2.GetJobRequest(id=started.id), metadata=token, timeout=300)
            assert job.status == "finished", job.error
            for call in (lambda: models.ActivateModel(models_pb2.ActivateModelRequest(version=job.version),
                                                      metadata=token, timeout=10),
                         lambda: models.Rollback(models_pb2.RollbackRequest(), metadata=token, timeout=10),
                         lambda: models.PinModel(models_pb2.PinModelRequest(version=job.version, pinned=True),
                                                 metadata=token, timeout=10)):
                with pytest.raises(grpc.RpcError) as error:
                    call()
                assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
        print(f"[training token] job {job.id[:8]}: {job.outcome}")
        passed = GATE_PASSED.search(job.outcome)
        assert passed and passed[3] == weak, f"the gate should have passed against {weak}: {job.outcome}"
        assert listing(models).active_version == weak, f"{job.version} was activated"
        assert "training token" in job.outcome and "not activated" in job.outcome
    finally:
        activate(models, before, "fault test done")


@pytest.mark.parametrize(("service", "weaken", "complaint"), [
    ("gateway", {"DIGITS_ADMIN_TOKEN": "digits-dev-admin-token"}, "DIGITS_ADMIN_TOKEN is the development value"),
    ("gateway", {"DIGITS_ADMIN_TOKEN": "change-me-to-a-long-random-admin-token"}, "looks like a placeholder"),
    ("gateway", {"DIGITS_ADMIN_TOKEN": "short"}, "shorter than"),
    ("inference", {"DIGITS_REDIS_PASSWORD": ""}, "DIGITS_REDIS_PASSWORD is empty"),
    ("trainer", {"DIGITS_REGISTRY_SIGNING_KEY": ""}, "DIGITS_REGISTRY_SIGNING_KEY is unset"),
])
def test_weak_secrets_are_refused_outside_local_mode(stack: LocalStack, service: str, weaken: dict[str, str],
                                                     complaint: str) -> None:
    spec = next(p for p in stack.processes() if p.name in (service, f"{service}-1"))
    strong = {"DIGITS_ADMIN_TOKEN": secrets.generate()[secrets.ADMIN_TOKEN], "DIGITS_ENVIRONMENT": "production"}
    env = {**spec.env, **strong, **weaken, "INFERENCE_PORT": "1", "GATEWAY_GRPC_PORT": "1", "GATEWAY_HTTP_PORT": "1"}
    started = subprocess.run(list(spec.argv), env=env, cwd=REPO, capture_output=True, text=True, timeout=60,
                             check=False)
    assert started.returncode != 0 and complaint in started.stderr, started.stderr[-2000:]


def test_retention_prunes_old_blobs_and_keeps_what_can_serve_again(
    stack: LocalStack, models: models_pb2_grpc.ModelsStub
) -> None:
    keep = int(stack.env["DIGITS_REGISTRY_KEEP"])
    active = listing(models).active_version
    pinned = train(stack, limit=300, candidates=["logreg", "knn"]).version
    models.PinModel(models_pb2.PinModelRequest(version=pinned, pinned=True), metadata=ADMIN, timeout=10)
    fresh = [train(stack, limit=300, candidates=["logreg", "knn"]).version for _ in range(keep + 2)]
    registry = stack.registry()
    records = {r.version: r for r in registry.list(1000)}
    kept = {v for v, r in records.items() if not r.pruned_at}
    assert {active, pinned, *fresh[-keep:]} <= kept
    assert {v for v, r in records.items() if r.pruned_at}, "nothing was pruned"
    for version, record in records.items():
        assert bool(stack.redis_client().exists(blob_key(version))) == (not record.pruned_at)
    history = models.ListPromotions(models_pb2.ListPromotionsRequest(limit=5), timeout=10).promotions
    assert history and history[0].to_version == active
    policy = stack.redis_client().config_get("maxmemory*")
    models.PinModel(models_pb2.PinModelRequest(version=pinned, pinned=False), metadata=ADMIN, timeout=10)
    print(f"[retention] keep={keep}: {len(records)} versions, {len(kept)} with blobs; Redis used "
          f"{stack.redis_client().info('memory')['used_memory_human']}, {policy}")
    assert policy["maxmemory-policy"] == "noeviction" and int(policy["maxmemory"] or 0) > 0
