"""The running gateway never loads scikit-learn or scipy (and so none of the training recipes, which import them):
after it has served every kind of call it serves, its process maps no compiled module of either library. The import
contracts (`lint-imports`, pyproject.toml) say the same of the source; this checks the process."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from digits.stack.local import LocalStack
from digits.v1 import models_pb2, models_pb2_grpc, recognizer_pb2, recognizer_pb2_grpc, training_pb2, training_pb2_grpc
from tests.integration.digits_data import as_png, held_out
from tests.stacks import running_process_groups

Metadata = tuple[tuple[str, str], ...]
NEVER_LOADED = ("/sklearn/", "/scipy/", "/scipy.libs/", "/scikit_learn.libs/")


def exercise(stack: LocalStack, recognizer: recognizer_pb2_grpc.RecognizerStub, models: models_pb2_grpc.ModelsStub,
             training: training_pb2_grpc.TrainingStub, admin: Metadata) -> None:
    """One call of each kind the gateway serves: predictions, the registry, a refused retrain, the pages."""
    pixels, _ = held_out(1)
    recognizer.Predict(recognizer_pb2.PredictRequest(image=as_png(pixels[0])), timeout=10)
    listed = models.ListModels(models_pb2.ListModelsRequest(), timeout=10)
    models.GetModel(models_pb2.GetModelRequest(version=listed.active_version), timeout=10)
    with pytest.raises(grpc.RpcError) as refused:
        training.Retrain(training_pb2.RetrainRequest(candidates=["no-such-recipe"]), metadata=admin, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    training.ListJobs(training_pb2.ListJobsRequest(), metadata=admin, timeout=10)
    base = f"http://127.0.0.1:{stack.ports.gateway_http}"
    for path in ("/", "/models", f"/models/{listed.active_version}", "/openapi.json", "/metrics", "/v2/models/digits"):
        with urllib.request.urlopen(base + path, timeout=30) as page:
            assert page.status == 200, path
    request = urllib.request.Request(base + "/api/predict", data=as_png(pixels[0]),
                                     headers={"Content-Type": "image/png"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 200


def test_the_running_gateway_never_loads_scikit_learn_or_scipy(
    stack: LocalStack, recognizer: recognizer_pb2_grpc.RecognizerStub, models: models_pb2_grpc.ModelsStub,
    training: training_pb2_grpc.TrainingStub, admin: Metadata,
) -> None:
    exercise(stack, recognizer, models, training, admin)
    processes = running_process_groups(stack.run_dir)
    gateway_maps = Path(f"/proc/{processes['gateway']}/maps").read_text()
    loaded = sorted({line.split()[-1] for line in gateway_maps.splitlines() if any(p in line for p in NEVER_LOADED)})
    assert not loaded, f"the gateway loaded {loaded}"
    # The check can see them: an inference replica loads both.
    replica_maps = Path(f"/proc/{processes['inference-1']}/maps").read_text()
    assert "/sklearn/" in replica_maps and "/scipy/" in replica_maps
