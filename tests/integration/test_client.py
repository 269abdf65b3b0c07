"""digits.client and the CLI built on it, against a real stack that starts with no model: Predict says so, the
bootstrap (`digits retrain --if-no-model`, what the Kubernetes Job runs) trains the first one, once, and then
everything a caller does goes through the client. Retrains use 500 digits to stay quick."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from digits.client import (
    AsyncClient,
    Client,
    InvalidInputError,
    Job,
    NotFoundError,
    UnauthenticatedError,
    UnavailableError,
)
from digits.client.errors import DeadlineExceededError
from digits.platform.healthcheck import is_serving
from digits.settings import ClientSettings, process_environment
from digits.stack.local import RECOGNIZER, LocalStack
from tests.gates import GATE_PASSED, WEAK_KNN
from tests.integration.digits_data import as_png, held_out
from tests.stacks import ADMIN_TOKEN, running_stack

pytestmark = pytest.mark.integration
LIMIT = 500
WEAK_PARAMS = {"knn": WEAK_KNN}  # tests/gates.py: 300 of some 360 training digits as neighbours


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A stack of its own that starts with an empty registry; the bootstrap test gives it its first model."""
    with running_stack(tmp_path_factory.mktemp("fresh"), first_model=False) as local:
        yield local


@pytest.fixture(scope="module")
def client(fresh: LocalStack) -> Iterator[Client]:
    with Client(fresh.ports.gateway, token=ADMIN_TOKEN) as connected:
        yield connected


def cli(stack: LocalStack, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The CLI with its output in a pipe, as a script would run it."""
    env = process_environment() | {"DIGITS_TOKEN": ADMIN_TOKEN}
    return subprocess.run([sys.executable, "-m", "digits.cli", "--gateway", stack.ports.gateway, *args], env=env,
                          capture_output=True, text=True, timeout=300, check=check)


def test_a_gateway_without_a_model_is_ready_and_predict_says_what_to_do(fresh: LocalStack) -> None:
    assert is_serving(fresh.ports.gateway)  # its readiness: it serves its own RPCs
    assert not is_serving(fresh.ports.gateway, RECOGNIZER)  # no replica has a model
    digit = as_png(held_out(1)[0][0])
    deadline = time.monotonic() + 20
    with Client(fresh.ports.gateway, timeout=3) as quick:
        while True:  # the gateway learns within a health poll or two that no model exists anywhere
            try:
                quick.predict(digit)
            except UnavailableError as error:
                assert "no model is active yet" in error.details and "retrain" in error.details
                break
            except DeadlineExceededError:
                assert time.monotonic() < deadline, "Predict waited for a model instead of saying there is none"


def test_the_bootstrap_trains_the_first_model_once_and_the_pipe_gets_plain_progress_lines(fresh: LocalStack) -> None:
    first = cli(fresh, "retrain", "--if-no-model", "--limit", str(LIMIT))
    assert "\r" not in first.stdout, "a progress bar was drawn into a pipe"
    progress = [line for line in first.stdout.splitlines() if "elapsed" in line]
    assert progress and all("left" in line for line in progress), first.stdout
    assert "activated" in first.stdout.splitlines()[-1], first.stdout
    fresh.wait_until_serving(timeout=60)

    again = cli(fresh, "retrain", "--if-no-model", "--json")
    answer = json.loads(again.stdout)
    assert answer["outcome"] == "nothing to do" and answer["active_version"] == fresh.active_version()


def test_predict_one_many_and_pixels(client: Client, fresh: LocalStack, tmp_path: Path) -> None:
    pixels, labels = held_out(10)
    path = tmp_path / "digit.png"
    path.write_bytes(as_png(pixels[0]))
    active = client.models(limit=1).active_version
    one = client.predict(path)
    assert one.version == active and len(one.probabilities) == 10 and one.confidence == max(one.probabilities)
    assert one.verdict in {"DIGIT", "UNSURE", "NOT_A_DIGIT", "SEVERAL"} and one.runner_up != one.digit  # judged
    assert client.predict(as_png(pixels[0])).digit == one.digit
    seen = client.predict(pixels[0].reshape(28, 28), return_model_input=True)
    assert seen.model_input is not None and len(seen.model_input) == 784

    # Ten digits with a batch limit of four: three PredictBatch calls, answered in order, one version.
    with Client(fresh.ports.gateway, settings=ClientSettings(max_batch_items=4)) as small_batches:
        rows = small_batches.predict_many(pixels)
        files = small_batches.predict_many([as_png(p) for p in pixels[:5]])
    assert [r.digit for r in rows] == [client.predict(p).digit for p in pixels]
    assert {r.version for r in rows} == {active} and len(files) == 5
    assert sum(r.digit == y for r, y in zip(rows, labels, strict=True)) >= 6


def test_the_asyncio_client_does_the_same(fresh: LocalStack) -> None:
    pixels, _ = held_out(6)

    async def calls() -> tuple[int, list[int], str, list[Job]]:
        async with AsyncClient(fresh.ports.gateway, token=ADMIN_TOKEN) as client:
            one = await client.predict(as_png(pixels[0]))
            many = await client.predict_many(np.asarray(pixels))
            listed = await client.models()
            with pytest.raises(InvalidInputError):
                await client.predict(b"these bytes are not an image")
            return one.digit, [m.digit for m in many], listed.active_version, await client.jobs()

    one, many, active, jobs = asyncio.run(calls())
    assert many[0] == one and len(many) == 6 and active and jobs


def test_models_list_show_and_history(client: Client) -> None:
    listed = client.models()
    active = next(m for m in listed.models if m.active)
    assert active.version == listed.active_version and active.dataset.source == "sample"
    assert listed.replicas and not listed.replicas_behind
    shown = client.model(active.version)
    assert shown.report and shown.metrics["confusion_matrix"] and shown.accuracy == active.accuracy
    assert client.history()[0].to_version == active.version


def test_a_retrain_watched_to_its_end(client: Client) -> None:
    """A retrain followed to its end; with no_activate its version stays inactive, even though it beats the active
    model on the same digits."""
    before = client.models().active_version
    weak = client.wait(client.retrain(limit=LIMIT, seed=1, no_activate=True, no_final_fit=True, candidates=["knn"],
                                      params=WEAK_PARAMS).id, timeout=300)
    assert weak.status == "finished" and weak.version, weak.error
    client.activate(weak.version, "test: a weak model to beat")
    try:
        started = client.retrain(limit=LIMIT, seed=1, no_activate=True)
        seen: list[Job] = []
        ended = client.wait(started.id, timeout=300, on_progress=seen.append)
        assert ended.status == "finished" and ended.ended and ended.version, ended.error
        print(f"[no_activate] {ended.outcome}")
        passed = GATE_PASSED.search(ended.outcome)
        assert passed and passed[3] == weak.version, f"the gate should have passed against {weak.version}: " \
                                                     f"{ended.outcome}"
        assert client.models().active_version == weak.version, f"{ended.version} was activated"
        assert "not activated" in ended.outcome and not ended.activated
        assert any(0 < j.progress < 1 and j.stage for j in seen), "no progress was seen while the job ran"
        assert client.job(started.id) == ended and any(j.id == started.id for j in client.jobs())
    finally:
        client.activate(before, "test done")


def test_errors_are_typed(client: Client, fresh: LocalStack) -> None:
    with pytest.raises(InvalidInputError) as bad:
        client.predict(b"these bytes are not an image")
    assert bad.value.details and bad.value.retry_after is None
    with pytest.raises(InvalidInputError):
        client.predict(np.zeros(100))  # refused before it is sent
    with pytest.raises(NotFoundError, match="v999"):
        client.model("v999")
    with Client(fresh.ports.gateway, token="not-the-admin-token") as stranger, \
            pytest.raises(UnauthenticatedError):
        stranger.retrain(limit=LIMIT)


def test_the_cli_speaks_json_lines_on_models_and_jobs(fresh: LocalStack) -> None:
    models = [json.loads(line) for line in cli(fresh, "models", "--json").stdout.splitlines()]
    assert len(models) >= 2 and sum(m["active"] for m in models) == 1
    assert all({"version", "kind", "accuracy", "dataset", "metrics"} <= set(m) for m in models)
    jobs = [json.loads(line) for line in cli(fresh, "jobs", "--json").stdout.splitlines()]
    assert jobs and all({"id", "status", "progress", "outcome"} <= set(j) for j in jobs)
    version = models[0]["version"]
    shown = json.loads(cli(fresh, "models", "show", version, "--json").stdout)
    assert shown["version"] == version and shown["report"]
    history = cli(fresh, "models", "history", "--json").stdout.splitlines()
    assert json.loads(history[0])["action"] == "activate"
    assert cli(fresh, "--version").stdout.startswith("digits ")
    refused = cli(fresh, "--token", "wrong-token-wrong-token", "jobs", check=False)
    assert refused.returncode == 1 and refused.stderr.startswith("digits: UNAUTHENTICATED")


def test_the_trainer_liveness_check_sees_its_worker(fresh: LocalStack) -> None:
    trainer = next(p for p in fresh.processes() if p.name == "trainer")
    check = subprocess.run([sys.executable, "-m", "digits.platform.healthcheck", "--worker"], env=dict(trainer.env),
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stderr


def test_tls_with_a_ca_file_from_the_client_and_the_cli(fresh: LocalStack, tmp_path: Path) -> None:
    from tests.faults.conftest import extra_gateway
    from tests.faults.test_access import self_signed

    cert, key = self_signed(tmp_path)
    with extra_gateway(fresh, DIGITS_TLS_CERT_FILE=str(cert), DIGITS_TLS_KEY_FILE=str(key)) as (grpc_port, _):
        target = f"127.0.0.1:{grpc_port}"
        with Client(target, tls_ca_file=cert) as secure:
            secure.wait_until_ready(30)
            assert secure.models().active_version == fresh.active_version()
        shown = subprocess.run([sys.executable, "-m", "digits.cli", "--gateway", target, "--tls-ca", str(cert),
                                "models", "--json"], capture_output=True, text=True, timeout=60, check=True)
        assert any(json.loads(line)["active"] for line in shown.stdout.splitlines())
        with Client(target, insecure=True, timeout=3) as plain, pytest.raises(UnavailableError):
            plain.models()
