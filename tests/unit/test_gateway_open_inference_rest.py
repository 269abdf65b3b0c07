"""The Open Inference Protocol over REST (pure logic, then in-process over aiohttp's test client against stand-ins):
the JSON header and binary tensor data, JSON tensors (flat, nested, UTF-8 and base64 BYTES), requested outputs
in JSON or binary form, health answers and the ``{"error": ...}`` form with its status."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from digits.errors import InvalidInput
from services.gateway.http import _json_errors
from services.gateway.open_inference import rest
from services.gateway.open_inference.protocol import Answer, OpenInferenceModel, OutputTensor
from services.gateway.open_inference.rest import HEADER_LENGTH, _inputs, _requested, _response, _split
from tests.unit.test_gateway_open_inference_protocol import FakeForwarder, FakeRegistry

ROW = [6] + [0] * 783


# -- the inference header and binary data -------------------------------------------------------------------------

def test_without_a_header_length_the_whole_body_is_json() -> None:
    document, binary = _split(b'{"inputs": []}', None)
    assert document == {"inputs": []} and binary == b""


def test_the_header_length_splits_json_from_binary_data() -> None:
    header = b'{"inputs": []}'
    document, binary = _split(header + b"\x00\x01binary", str(len(header)))
    assert document == {"inputs": []} and binary == b"\x00\x01binary"


@pytest.mark.parametrize(("body", "length", "message"), [
    (b"{}", "two", "Inference-Header-Content-Length must be a whole number of bytes, got 'two'"),
    (b"{}", "3", "Inference-Header-Content-Length is 3, but the body holds 2 bytes"),
    (b"{}", "-1", "is -1"),
    (b"{inputs", None, "the inference request is not valid JSON"),
    (b"[1, 2]", None, "must be a JSON object"),
    (b"[" * 100_000, None, "not valid JSON"),  # too deep for the parser: refused, not a crash
])
def test_a_header_that_cannot_be_read_is_refused(body: bytes, length: str | None, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        _split(body, length)


def test_binary_inputs_take_their_bytes_in_order() -> None:
    images = struct.pack("<I", 2) + b"ab" + struct.pack("<I", 1) + b"c"
    fp32 = np.arange(784, dtype="<f4").tobytes()
    document = {"inputs": [
        {"name": "image", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(images)}},
        {"name": "pixels", "datatype": "FP32", "shape": [1, 784], "parameters": {"binary_data_size": len(fp32)}},
    ]}
    image, pixels = _inputs(document, images + fp32)
    assert image.elements == [b"ab", b"c"] and image.shape == (2,)
    assert pixels.numbers is not None and pixels.numbers.tolist() == list(range(784)) and pixels.shape == (1, 784)


@pytest.mark.parametrize("size", [5, -1, True, "4"])
def test_a_binary_size_beyond_the_bytes_left_or_not_a_count_is_refused(size: object) -> None:
    document = {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 4],
                            "parameters": {"binary_data_size": size}}]}
    with pytest.raises(InvalidInput, match=r"binary_data_size .*; 4 binary bytes are left"):
        _inputs(document, bytes(4))


def test_json_data_may_be_flat_or_nested_row_major() -> None:
    nested = [[ROW[i * 28:(i + 1) * 28] for i in range(28)]]
    document = {"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 28, 28], "data": nested}]}
    (tensor,) = _inputs(document, b"")
    assert tensor.numbers is not None and tensor.numbers.dtype == np.uint8 and tensor.numbers.tolist() == ROW


def test_bytes_elements_are_utf8_or_base64_when_marked() -> None:
    plain = {"name": "image", "datatype": "BYTES", "shape": [1], "data": ["héllo"]}
    marked = {"name": "image", "datatype": "BYTES", "shape": [2], "data": [base64.b64encode(b"\x89PNG").decode(), ""],
              "parameters": {"content_type": "base64"}}
    assert _inputs({"inputs": [plain]}, b"")[0].elements == ["héllo".encode()]
    assert _inputs({"inputs": [marked]}, b"")[0].elements == [b"\x89PNG", b""]


@pytest.mark.parametrize(("entry", "message"), [
    ({"name": "image", "datatype": "BYTES", "shape": [1], "data": ["not base64!"],
      "parameters": {"content_type": "base64"}}, "marked base64 is not base64"),
    ({"name": "image", "datatype": "BYTES", "shape": [1], "data": [1]}, "BYTES input 'image' holds strings"),
    ({"name": "pixels", "datatype": "FP32", "shape": [1], "data": ["1"]}, "FP32 input 'pixels' must hold numbers"),
    ({"name": "pixels", "datatype": "FP32", "shape": [1], "data": [True]}, "must hold numbers"),
    ({"name": "pixels", "datatype": "FP32", "shape": [1]}, "needs 'data' \\(a list\\) or binary data"),
    ({"name": "pixels", "datatype": "FP32", "shape": [1], "data": 3}, "needs 'data'"),
    ({"name": "pixels", "datatype": "FP32", "data": [1]}, "input 'pixels' needs a 'shape'"),
    ({"name": "pixels", "datatype": "FP32", "shape": [1.0], "data": [1]}, "needs a 'shape'"),
    ({"name": "pixels", "datatype": "FP32", "shape": [True], "data": [1]}, "needs a 'shape'"),
    ({"datatype": "FP32", "shape": [1], "data": [1]}, "string 'name' and 'datatype'"),
    ({"name": "pixels", "shape": [1], "data": [1]}, "string 'name' and 'datatype'"),
    ({"name": "pixels", "datatype": "FP32", "shape": [1], "data": [1], "parameters": [1]},
     "parameters must be a JSON object"),
])
def test_malformed_json_tensors_are_refused_saying_what_is_wrong(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        _inputs({"inputs": [entry]}, b"")


@pytest.mark.parametrize("inputs", [None, {}, [1], "pixels"])
def test_inputs_must_be_a_list_of_objects(inputs: object) -> None:
    with pytest.raises(InvalidInput, match='"inputs" must be a list of tensors'):
        _inputs({"inputs": inputs}, b"")


def test_requested_outputs_keep_their_order_and_binary_choice() -> None:
    document = {"outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}, {"name": "digit"}]}
    assert list(_requested(document).items()) == [("probabilities", True), ("digit", None)]
    assert _requested({}) == {}
    for bad in ({"outputs": {"name": "digit"}}, {"outputs": [{"name": 1}]}, {"outputs": ["digit"]}):
        with pytest.raises(InvalidInput, match='"outputs" must be a list of'):
            _requested(bad)


# -- the response -------------------------------------------------------------------------------------------------

IDS = ["a" * 32, "b" * 32]


def answer() -> Answer:
    return Answer("v3", [OutputTensor("digit", "INT64", np.array([4, 2], dtype="<i8")),
                         OutputTensor("probabilities", "FP32", np.full((2, 10), 0.1, dtype="<f4"))], IDS)


def verdicts() -> Answer:
    return Answer("v3", [OutputTensor("verdict", "BYTES", np.array([b"UNSURE", b""], dtype=np.object_)),
                         OutputTensor("runner_up", "INT64", np.array([9, 1], dtype="<i8"))], IDS,
                  {"verdict": "UNSURE,", "marks": "1,1", "margin": "0.01,"})


def test_the_verdict_is_strings_in_json_length_prefixed_in_binary_and_in_the_parameters() -> None:
    as_json = json.loads(_response({}, verdicts(), {}, binary_default=False).body)  # type: ignore[arg-type]
    verdict, runner_up = as_json["outputs"]
    assert verdict == {"name": "verdict", "datatype": "BYTES", "shape": [2], "data": ["UNSURE", ""]}
    assert runner_up["data"] == [9, 1]
    assert as_json["parameters"] == {"prediction_ids": ",".join(IDS), "verdict": "UNSURE,", "marks": "1,1",
                                     "margin": "0.01,"}
    binary = _response({}, verdicts(), {"verdict": True}, binary_default=False)
    assert isinstance(binary.body, bytes)
    length = int(binary.headers[HEADER_LENGTH])
    header = json.loads(binary.body[:length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 4 + 6 + 4}
    assert binary.body[length:] == struct.pack("<I", 6) + b"UNSURE" + struct.pack("<I", 0)


def test_a_json_response_has_flat_data_the_version_the_callers_id_and_the_prediction_ids() -> None:
    response = _response({"id": "req-1"}, answer(), {}, binary_default=False)
    assert response.content_type == "application/json" and HEADER_LENGTH not in response.headers
    assert isinstance(response.body, bytes)
    body = json.loads(response.body)
    assert body["model_name"] == "digits" and body["model_version"] == "v3" and body["id"] == "req-1"
    assert body["parameters"] == {"prediction_ids": ",".join(IDS)}  # the caller's id echoed, ours beside it
    digit, probabilities = body["outputs"]
    assert digit == {"name": "digit", "datatype": "INT64", "shape": [2], "data": [4, 2]}
    assert probabilities["shape"] == [2, 10] and len(probabilities["data"]) == 20
    # A request without an id of its own gets the prediction ids as the response's id.
    for request in ({}, {"id": ""}):
        assert json.loads(_response(request, answer(), {}, binary_default=False).body)["id"] == ",".join(IDS)  # type: ignore[arg-type]


def test_outputs_asked_for_as_binary_follow_the_json_header() -> None:
    response = _response({}, answer(), {"digit": True, "probabilities": None}, binary_default=False)
    assert response.content_type == "application/octet-stream" and isinstance(response.body, bytes)
    length = int(response.headers[HEADER_LENGTH])
    header, blob = json.loads(response.body[:length]), response.body[length:]
    digit, probabilities = header["outputs"]
    assert digit["parameters"] == {"binary_data_size": 16} and "data" not in digit
    assert "data" in probabilities and "parameters" not in probabilities
    assert blob == struct.pack("<2q", 4, 2)


def test_binary_data_output_makes_binary_the_default_an_output_may_still_decline() -> None:
    response = _response({}, answer(), {"digit": False}, binary_default=True)
    assert isinstance(response.body, bytes)
    length = int(response.headers[HEADER_LENGTH])
    digit, probabilities = json.loads(response.body[:length])["outputs"]
    assert digit["data"] == [4, 2]
    assert probabilities["parameters"] == {"binary_data_size": 80}
    assert np.frombuffer(response.body[length:], dtype="<f4").tolist() == pytest.approx([0.1] * 20)


# -- the routes, in process ---------------------------------------------------------------------------------------

def with_client(test: Callable[[TestClient[web.Request, web.Application]], Awaitable[None]],
                active: str | None = "v7", serving: bool = True) -> None:
    """Run ``test`` against the protocol's routes behind the gateway's error middleware, with stand-ins."""
    async def run() -> None:
        model = OpenInferenceModel(FakeForwarder(), FakeRegistry(active), lambda: serving, 64)  # type: ignore[arg-type]
        app = web.Application(middlewares=[_json_errors])
        rest.add_routes(app, model, "9.9.9", max_body=1_000_000)
        async with TestClient(TestServer(app)) as client:
            await test(client)

    asyncio.run(run())


def test_infer_over_http_json_in_json_out() -> None:
    async def check(client: TestClient[web.Request, web.Application]) -> None:
        body = {"id": "a", "inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 784], "data": ROW}],
                "outputs": [{"name": "digit"}]}
        response = await client.post("/v2/models/digits/infer", json=body)
        assert response.status == 200
        assert await response.json() == {"model_name": "digits", "model_version": "v7", "id": "a",
                                         "parameters": {"prediction_ids": f"{1:032x}", "verdict": "DIGIT",
                                                        "marks": 1, "familiarity": 0.5, "margin": 0.75},
                                         "outputs": [{"name": "digit", "datatype": "INT64", "shape": [1],
                                                      "data": [6]}]}
        body["outputs"] = [{"name": "verdict"}, {"name": "runner_up"}]
        verdict, runner_up = (await (await client.post("/v2/models/digits/infer", json=body)).json())["outputs"]
        assert verdict == {"name": "verdict", "datatype": "BYTES", "shape": [1], "data": ["DIGIT"]}
        assert runner_up == {"name": "runner_up", "datatype": "INT64", "shape": [1], "data": [7]}

    with_client(check)


def test_infer_over_http_binary_in_binary_out() -> None:
    async def check(client: TestClient[web.Request, web.Application]) -> None:
        header = json.dumps({"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 28, 28],
                                         "parameters": {"binary_data_size": 784}}],
                             "parameters": {"binary_data_output": True}}).encode()
        response = await client.post("/v2/models/digits/versions/v7/infer", data=header + bytes(ROW),
                                     headers={HEADER_LENGTH: str(len(header))})
        assert response.status == 200
        raw = await response.read()
        length = int(response.headers[HEADER_LENGTH])
        header = json.loads(raw[:length])
        assert [o["name"] for o in header["outputs"]] == ["digit", "probabilities", "verdict", "runner_up"]
        assert struct.unpack_from("<q", raw, length) == (6,)
        verdict = length + 8 + 40  # after the digit (INT64) and the ten probabilities (FP32)
        assert raw[verdict:] == struct.pack("<I", 5) + b"DIGIT" + struct.pack("<q", 7)
        assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [8, 40, 9, 8]

    with_client(check)


def test_errors_are_json_with_the_status_that_fits() -> None:
    async def check(client: TestClient[web.Request, web.Application]) -> None:
        cases = [
            ("/v2/models/mnist/infer", b"{}", 404, "no model named 'mnist'"),
            ("/v2/models/digits/infer", b"not json", 400, "not valid JSON"),
            ("/v2/models/digits/versions/v6/infer",
             json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}).encode(),
             404, "not the one being served"),
            ("/v2/models/digits/infer",
             json.dumps({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [65, 784],
                                     "data": [0.0] * (65 * 784)}]}).encode(),
             413, "65 digits in one call; the limit is 64"),
        ]
        for path, body, status, message in cases:
            response = await client.post(path, data=body)
            assert response.status == status, path
            error = await response.json()
            assert list(error) == ["error"] and message in error["error"]

    with_client(check)


def test_metadata_and_health_answer_200_for_true_400_for_false() -> None:
    async def ready(client: TestClient[web.Request, web.Application]) -> None:
        assert (await (await client.get("/v2")).json()) == {
            "name": "digits", "version": "9.9.9", "extensions": ["binary_tensor_data"]}
        live = await client.get("/v2/health/live")
        assert live.status == 200 and await live.json() == {"live": True}
        assert (await client.get("/v2/health/ready")).status == 200
        assert (await client.get("/v2/models/digits/versions/v7/ready")).status == 200
        stale = await client.get("/v2/models/digits/versions/v6/ready")
        assert stale.status == 400 and await stale.json() == {"ready": False}
        metadata = await (await client.get("/v2/models/digits")).json()
        assert metadata["versions"] == ["v7", "v6"] and metadata["platform"] == "scikit-learn"
        assert [i["name"] for i in metadata["inputs"]] == ["image", "pixels"]
        assert [(o["name"], o["datatype"]) for o in metadata["outputs"]] == [
            ("digit", "INT64"), ("probabilities", "FP32"), ("verdict", "BYTES"), ("runner_up", "INT64")]
        assert (await client.get("/v2/models/digits/versions/v1")).status == 404

    async def not_ready(client: TestClient[web.Request, web.Application]) -> None:
        response = await client.get("/v2/health/ready")
        assert response.status == 400 and await response.json() == {"ready": False}
        assert (await client.get("/v2/health/live")).status == 200

    with_client(ready)
    with_client(not_ready, active=None)
