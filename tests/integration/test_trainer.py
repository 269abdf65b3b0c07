"""The trainer on the running stack: every candidate in one job, the gate both ways, fan-out over two real
workers, cancel, and determinism."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image
from rq.job import Job

from digits.stack.local import REPO, LocalStack
from digits.training import datasets
from digits.training.candidates import CANDIDATES, DEFAULT
from digits.training.jobs import candidate_job_id
from digits.v1 import models_pb2, models_pb2_grpc, recognizer_pb2_grpc, training_pb2, training_pb2_grpc
from tests.integration.test_registry_flow import retrain, wait_for_version

Metadata = tuple[tuple[str, str], ...]

ALL = list(CANDIDATES)
# Sizes that fit the test suite's time on two cores.
SMALL = {"hist-gb": {"max_iter": 10}, "blend-hist-gb": {"max_iter": 20},
         "random-forest": {"n_estimators": 60}, "extra-trees": {"n_estimators": 60},
         "blend-random-forest": {"n_estimators": 60}}


def active(models: models_pb2_grpc.ModelsStub) -> str:
    return str(models.ListModels(models_pb2.ListModelsRequest(), timeout=10).active_version)


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read()


def test_every_candidate_in_one_job_and_the_report(
    stack: LocalStack, models: models_pb2_grpc.ModelsStub, training: training_pb2_grpc.TrainingStub,
    admin: Metadata,
) -> None:
    job = retrain(training, admin, candidates=ALL, params_json=json.dumps(SMALL), limit=1500, no_activate=True)
    result = json.loads(job.result_json)
    rows = {row["name"]: row for row in result["candidates"]}
    assert set(rows) == set(ALL)
    failed = {name: row["error"] for name, row in rows.items() if "error" in row}
    assert not failed
    assert result["winner"] in rows and job.version

    model = models.GetModel(models_pb2.GetModelRequest(version=job.version), timeout=10)
    report = json.loads(model.report_json)
    assert {row["name"] for row in report["candidates"]} == set(ALL)
    assert report["split"]["validation"] == 300
    metrics = json.loads(model.metrics_json)
    assert metrics["confusions"] and " were read as " in metrics["confusions"][0]

    base = f"http://127.0.0.1:{stack.ports.gateway_http}"
    status, page = get(f"{base}/models/{job.version}")
    assert status == 200
    for name in ALL:
        assert f">{name}" in page.decode()
    for chart in ("confusion.png", "f1.png", "error-reject.png", "familiarity.png"):
        status, png = get(f"{base}/models/{job.version}/{chart}")
        assert status == 200 and png.startswith(b"\x89PNG")
    status, listing = get(f"{base}/models")
    assert status == 200 and f"/models/{job.version}" in listing.decode()

    shown = subprocess.run(
        [sys.executable, "-m", "digits.cli", "--gateway", stack.ports.gateway, "models", "show", job.version],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    assert "blend-svc" in shown and "were read as" in shown


def test_gate_registers_a_worse_model_without_activating_it_and_activates_a_better_one(
    models: models_pb2_grpc.ModelsStub, training: training_pb2_grpc.TrainingStub,
    recognizer: recognizer_pb2_grpc.RecognizerStub, admin: Metadata,
) -> None:
    # A modest model to compare with, activated by hand (the manual lever), whatever earlier tests left active.
    baseline = retrain(training, admin, candidates=["logreg"], no_activate=True)
    models.ActivateModel(models_pb2.ActivateModelRequest(version=baseline.version, reason="gate test"),
                         metadata=admin, timeout=10)
    assert active(models) == baseline.version

    one_tree = {"random-forest": {"n_estimators": 1}}  # one unpruned tree: ~10 points below logreg on MNIST
    worse = retrain(training, admin, candidates=["random-forest"], params_json=json.dumps(one_tree))
    assert worse.version and worse.outcome.startswith(f"registered {worse.version}, not activated"), worse.outcome
    assert active(models) == baseline.version

    better = retrain(training, admin)  # no candidates named: the production recipe
    assert json.loads(better.result_json)["winner"] == DEFAULT[0]
    assert better.outcome.startswith(f"activated {better.version}"), better.outcome
    assert active(models) == better.version
    wait_for_version(recognizer, better.version)


@pytest.fixture
def second_worker(stack: LocalStack) -> Iterator[subprocess.Popen[bytes]]:
    trainer = next(p for p in stack.processes() if p.name == "trainer")
    log = (stack.run_dir / "logs" / "trainer-2.log").open("ab")
    worker = subprocess.Popen(list(trainer.argv), env=dict(trainer.env), cwd=REPO, stdout=log, stderr=log)
    yield worker
    worker.terminate()
    worker.wait(30)
    log.close()


def test_fan_out_fits_candidates_on_two_workers(
    stack: LocalStack, second_worker: subprocess.Popen[bytes], training: training_pb2_grpc.TrainingStub,
    admin: Metadata,
) -> None:
    names = ["svc", "svc-shift", "knn"]
    job = retrain(training, admin, candidates=[*names, "vote-soft"], parallel=True, limit=2000, no_activate=True)
    result = json.loads(job.result_json)
    assert {row["name"] for row in result["candidates"]} == {*names, "vote-soft"}
    assert all("error" not in row for row in result["candidates"])
    parts = [Job.fetch(candidate_job_id(job.id, n), connection=stack.redis_client()) for n in names]
    workers = {part.worker_name for part in parts}
    assert len(workers) == 2, f"candidates ran on {workers}"


def test_cancel_stops_a_running_job_and_registers_nothing(
    models: models_pb2_grpc.ModelsStub, training: training_pb2_grpc.TrainingStub, admin: Metadata,
) -> None:
    versions = {m.version for m in models.ListModels(models_pb2.ListModelsRequest(), timeout=10).models}
    job = training.Retrain(training_pb2.RetrainRequest(candidates=["svc-shift"], params_json='{"svc-shift": '
                           '{"shifts": 8}}'), metadata=admin, timeout=10)
    deadline = time.monotonic() + 60
    while training.GetJob(training_pb2.GetJobRequest(id=job.id), metadata=admin, timeout=10).status != "started":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1.0)
    training.CancelJob(training_pb2.GetJobRequest(id=job.id), metadata=admin, timeout=10)
    deadline = time.monotonic() + 30
    while (ended := training.GetJob(training_pb2.GetJobRequest(id=job.id), metadata=admin, timeout=10)).status \
            not in {"stopped", "failed", "canceled"}:
        assert time.monotonic() < deadline, ended.status
        time.sleep(0.2)
    assert ended.error and not ended.version
    assert {m.version for m in models.ListModels(models_pb2.ListModelsRequest(), timeout=10).models} == versions


def test_same_spec_same_split_same_figures(training: training_pb2_grpc.TrainingStub, admin: Metadata) -> None:
    first, second = (retrain(training, admin, candidates=["svc", "logreg"], limit=1000, seed=5, no_activate=True)
                     for _ in range(2))
    figures = [[(r["name"], r["accuracy"], r["f1_weighted"]) for r in json.loads(j.result_json)["candidates"]]
               for j in (first, second)]
    assert figures[0] == figures[1]
    assert json.loads(first.result_json)["dataset"]["digest"] == json.loads(second.result_json)["dataset"]["digest"]


def test_unknown_candidate_is_refused(training: training_pb2_grpc.TrainingStub, admin: Metadata) -> None:
    with pytest.raises(grpc.RpcError) as error:
        training.Retrain(training_pb2.RetrainRequest(candidates=["svc", "magic"]), metadata=admin, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "magic" in (error.value.details() or "")


def picture(pixels: np.ndarray, kind: str) -> bytes:
    """A sample digit as a person's picture: dark ink on white, three times larger, as PNG or JPEG."""
    image = Image.fromarray(255 - pixels.reshape(28, 28)).resize((84, 84), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format=kind)
    return out.getvalue()


def test_a_retrain_on_the_sample_and_a_folder_of_pictures_lists_both_parts_and_names_the_broken_file(
    stack: LocalStack, models: models_pb2_grpc.ModelsStub, training: training_pb2_grpc.TrainingStub,
    admin: Metadata, tmp_path: Path,
) -> None:
    """People's own digits (docs/training.md "Data sources"): DIR/0 ... DIR/9 of PNG and JPEG pictures plus a
    broken file, combined with the sample; the trainer (a process of its own) reads the folder."""
    sample = datasets.load_sample()
    folder = tmp_path / "mine"
    for digit in range(10):
        (folder / str(digit)).mkdir(parents=True)
        for n, index in enumerate(np.flatnonzero(sample.labels == digit)[-30:]):
            kind = "PNG" if n % 2 else "JPEG"
            (folder / f"{digit}/{n:02d}.{kind.lower()}").write_bytes(picture(sample.pixels[index], kind))
    whole = (folder / "4/01.png").read_bytes()
    (folder / "4/broken.png").write_bytes(whole[: len(whole) // 2])

    data = f"sample+folder:{folder}"
    job = retrain(training, admin, data=data, candidates=["logreg"], limit=1000, no_activate=True,
                  no_final_fit=True)
    result = json.loads(job.result_json)
    model = models.GetModel(models_pb2.GetModelRequest(version=job.version), timeout=10)
    report = json.loads(model.report_json)
    for dataset in (result["dataset"], report["dataset"]):
        assert dataset["source"] == data and dataset["size"] == 5300 and dataset["skipped"] == 1
        assert [(p["source"], p["size"]) for p in dataset["parts"]] == [("sample", 5000), (f"folder:{folder}", 300)]
        (skipped,) = dataset["parts"][1]["skipped_files"]
        assert skipped["path"] == "4/broken.png" and skipped["reason"].startswith("could not read the image")
    assert (model.dataset.source, model.dataset.size) == (data, 5300)
    # A limit caps each part: 1,000 of the sample, all 300 pictures; each part validates on its own 20%.
    assert report["split"]["validation"] == 200 + 60
    assert report["split"]["validated_on"] == (f"each part's own: a stratified 20% of sample (seed 0); "
                                               f"a stratified 20% of folder:{folder} (seed 0)")
    assert stack.registry().get(job.version, with_report=False).split["parts"] == [
        {"size": 5000, "validation_fraction": 0.2, "limit": 1000},
        {"size": 300, "validation_fraction": 0.2, "limit": 0}]

    # A folder with no readable digit fails its job, and says why; the gateway refuses what cannot be data.
    (tmp_path / "empty/3").mkdir(parents=True)
    (tmp_path / "empty/3/note.png").write_text("not a picture")
    empty = f"folder:{tmp_path / 'empty'}"
    started = training.Retrain(training_pb2.RetrainRequest(data=empty, candidates=["logreg"]), metadata=admin,
                               timeout=10)
    failed = list(training.WatchJob(training_pb2.GetJobRequest(id=started.id), metadata=admin, timeout=120))[-1]
    assert failed.status == "failed" and failed.error.startswith(f"{empty}: no readable digit"), failed.error
    assert "3/note.png: could not read the image" in failed.error
    with pytest.raises(grpc.RpcError) as refused:
        training.Retrain(training_pb2.RetrainRequest(data="sample+openml"), metadata=admin, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "same MNIST digits" in str(refused.value.details())
