"""The Open Inference Protocol, checked with a client nobody here wrote: tritonclient, unmodified, in its
own venv (.venv-triton, made by `make test`). Its answers must match digits.v1 Predict on the same digits."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest

from digits.oip import grpc_predict_v2_pb2 as oip
from digits.oip import grpc_predict_v2_pb2_grpc as oip_grpc
from digits.stack.local import REPO, LocalStack
from digits.v1 import recognizer_pb2 as pb
from digits.v1 import recognizer_pb2_grpc
from tests.integration.digits_data import as_png, held_out

TRITON_PYTHON = REPO / ".venv-triton" / "bin" / "python"
BATCH = 32


def test_tritonclient_agrees_with_digits_v1(
    stack: LocalStack, recognizer: recognizer_pb2_grpc.RecognizerStub, tmp_path: Path
) -> None:
    """tritonclient's gRPC and HTTP clients (binary tensors and JSON) read digits as digits.v1 Predict does."""
    pixels, labels = held_out(BATCH)
    np.save(tmp_path / "pixels.npy", pixels)
    (tmp_path / "images").mkdir()
    for i, row in enumerate(pixels):
        (tmp_path / "images" / f"{i:03d}.png").write_bytes(as_png(row))

    out = subprocess.run(
        [str(TRITON_PYTHON), str(REPO / "tests" / "conformance" / "triton_client.py"), stack.ports.gateway,
         f"127.0.0.1:{stack.ports.gateway_http}", str(tmp_path / "pixels.npy"), str(tmp_path / "images")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 0, out.stderr
    by_pixels = [recognizer.Predict(pb.PredictRequest(pixels=pb.Pixels(values=r.tolist())), timeout=10) for r in pixels]
    by_image = [recognizer.Predict(pb.PredictRequest(image=as_png(r)), timeout=10) for r in pixels]
    for transport, got in json.loads(out.stdout).items():
        assert got["live"] and got["ready"] and got["model_ready"], transport
        assert got["metadata"]["name"] == "digits" and got["metadata"]["versions"], transport
        assert {i["name"] for i in got["metadata"]["inputs"]} == {"image", "pixels"}, transport
        assert got["pixels"]["digit"] == [r.digit for r in by_pixels], transport
        assert got["image"]["digit"] == [r.digit for r in by_image], transport
        assert np.allclose(got["pixels"]["probabilities"], [list(r.probabilities) for r in by_pixels], atol=1e-6)
        words = [pb.Verdict.Name(r.verdict).removeprefix("VERDICT_") for r in by_pixels]
        assert got["pixels"]["verdict"] == words and "DIGIT" in words, transport
        assert got["pixels"]["verdict_parameter"] == ",".join(words), transport
        assert got["pixels"]["runner_up"] == [r.runner_up for r in by_pixels], transport
        assert got["requested_outputs"] == ["digit"], transport  # outputs asked for are the ones returned
        assert np.mean(np.array(got["pixels"]["digit"]) == labels) >= 0.9


@pytest.fixture
def oip_stub(channel: grpc.Channel) -> oip_grpc.GRPCInferenceServiceStub:
    return oip_grpc.GRPCInferenceServiceStub(channel)


def pixels_input(rows: np.ndarray, datatype: str = "UINT8", shape: list[int] | None = None) -> oip.ModelInferRequest:
    tensor = oip.ModelInferRequest.InferInputTensor(name="pixels", datatype=datatype,
                                                    shape=shape or [len(rows), 784])
    raw = rows.astype(np.uint8 if datatype == "UINT8" else "<f4").tobytes()
    return oip.ModelInferRequest(model_name="digits", inputs=[tensor], raw_input_contents=[raw])


def test_uint8_28x28_and_typed_contents_answer_alike(oip_stub: oip_grpc.GRPCInferenceServiceStub) -> None:
    pixels, _ = held_out(4)
    raw = oip_stub.ModelInfer(pixels_input(np.rint(pixels), "UINT8", [4, 28, 28]), timeout=10)
    typed = oip_stub.ModelInfer(oip.ModelInferRequest(model_name="digits", inputs=[
        oip.ModelInferRequest.InferInputTensor(name="pixels", datatype="FP32", shape=[4, 784],
                                               contents=oip.InferTensorContents(fp32_contents=np.rint(pixels).ravel()))
    ]), timeout=10)
    assert np.frombuffer(raw.raw_output_contents[0], "<i8").tolist() == \
        np.frombuffer(typed.raw_output_contents[0], "<i8").tolist()
    assert [o.name for o in raw.outputs] == ["digit", "probabilities", "verdict", "runner_up"]


@pytest.mark.parametrize(
    ("request_", "code", "word"),
    [
        (oip.ModelInferRequest(model_name="nope"), grpc.StatusCode.NOT_FOUND, "digits"),
        (pixels_input(np.zeros((2, 784)), shape=[2, 783]), grpc.StatusCode.INVALID_ARGUMENT, "shape"),
        (pixels_input(np.zeros((1, 784)), datatype="FP32", shape=[2, 784]), grpc.StatusCode.INVALID_ARGUMENT,
         "needs 1568"),
        (pixels_input(np.full((1, 784), np.nan), datatype="FP32"), grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
        (oip.ModelInferRequest(model_name="digits", model_version="v999", inputs=[
            oip.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES", shape=[1])]),
         grpc.StatusCode.NOT_FOUND, "v999"),
    ],
    ids=["unknown model", "wrong shape", "short raw", "nan", "unknown version"],
)
def test_errors_carry_the_digits_v1_codes(
    oip_stub: oip_grpc.GRPCInferenceServiceStub, request_: oip.ModelInferRequest, code: grpc.StatusCode, word: str
) -> None:
    with pytest.raises(grpc.RpcError) as error:
        oip_stub.ModelInfer(request_, timeout=10)
    assert error.value.code() == code, error.value.details()
    assert word in (error.value.details() or "")


def test_requested_outputs_are_the_ones_returned_over_grpc(oip_stub: oip_grpc.GRPCInferenceServiceStub) -> None:
    pixels, _ = held_out(2)
    request = pixels_input(np.rint(pixels))
    request.outputs.add(name="probabilities")
    answer = oip_stub.ModelInfer(request, timeout=10)
    assert [o.name for o in answer.outputs] == ["probabilities"] and len(answer.raw_output_contents) == 1
    request.outputs.add(name="confidence")
    with pytest.raises(grpc.RpcError) as error:
        oip_stub.ModelInfer(request, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "confidence" in (error.value.details() or "")


def rest(stack: LocalStack, method: str, path: str, body: object = None) -> tuple[int, dict[str, object]]:
    url = f"http://127.0.0.1:{stack.ports.gateway_http}{path}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_rest_protocol_json_tensors_health_and_errors(stack: LocalStack) -> None:
    pixels, _ = held_out(3)
    assert rest(stack, "GET", "/v2/health/live") == (200, {"live": True})
    assert rest(stack, "GET", "/v2/health/ready") == (200, {"ready": True})
    assert rest(stack, "GET", "/v2/models/digits/versions/v999/ready") == (400, {"ready": False})
    status, meta = rest(stack, "GET", "/v2/models/digits")
    assert status == 200 and meta["name"] == "digits"
    nested = np.rint(pixels).reshape(3, 28, 28).astype(int).tolist()
    status, answer = rest(stack, "POST", "/v2/models/digits/infer", {
        "id": "abc", "inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [3, 28, 28], "data": nested}],
        "outputs": [{"name": "digit"}]})
    assert status == 200 and answer["id"] == "abc", answer
    outputs = answer["outputs"]
    assert isinstance(outputs, list) and [o["name"] for o in outputs] == ["digit"] and len(outputs[0]["data"]) == 3
    for body, code, word in [
        ({"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 784], "data": [300] * 784}]}, 400,
         "0 to 255"),
        ({"inputs": []}, 400, "exactly one input"),
        ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["bm90IGFuIGltYWdl"],
                      "parameters": {"content_type": "base64"}}]}, 400, "image"),
    ]:
        status, error = rest(stack, "POST", "/v2/models/digits/infer", body)
        assert status == code and word in str(error["error"]), error
    assert rest(stack, "POST", "/v2/models/nope/infer", {"inputs": []})[0] == 404
    status, document = rest(stack, "GET", "/openapi.json")
    assert status == 200 and str(document["openapi"]).startswith("3.1")
