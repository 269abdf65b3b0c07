"""Every verdict, end to end, on every surface (issue #23): the same picture gets the same verdict, digit, runner-up
and marks over digits.v1 gRPC through the gateway, HTTP /api/predict, the Open Inference Protocol over gRPC and REST,
digits.client and the `digits predict` CLI.

The pictures are found, not hard-coded: two sample digits far apart (SEVERAL), noise and a checkerboard (the least
familiar must be NOT_A_DIGIT), blends of two sample digits until one is UNSURE, and clean held-out digits (DIGIT).
gRPC says what each is; every other surface must agree with it.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from digits.client import Client, Prediction
from digits.oip import grpc_predict_v2_pb2 as oip
from digits.oip import grpc_predict_v2_pb2_grpc as oip_grpc
from digits.settings import process_environment
from digits.stack.local import LocalStack
from digits.training import nondigits
from digits.v1 import recognizer_pb2 as pb
from digits.v1 import recognizer_pb2_grpc
from tests.integration.digits_data import as_png, held_out

pytestmark = pytest.mark.integration

VERDICTS = ("DIGIT", "UNSURE", "NOT_A_DIGIT", "SEVERAL")
WORDS = {pb.VERDICT_DIGIT: "DIGIT", pb.VERDICT_UNSURE: "UNSURE", pb.VERDICT_NOT_A_DIGIT: "NOT_A_DIGIT",
         pb.VERDICT_SEVERAL: "SEVERAL"}
# Pairs of digits people confuse, blended half and half until one blend is UNSURE: at most this many tries.
CONFUSED = ((4, 9), (3, 5), (7, 9), (1, 7), (3, 8), (5, 6))
MAX_BLENDS = 60
SCORE = 1e-4  # familiarity and margin on two surfaces: the same float32, give or take a batch's rounding


@dataclass(frozen=True)
class Reading:
    """What a surface said about one picture: the fields every surface must agree on."""

    verdict: str | None
    digit: int
    runner_up: int
    marks: int


@dataclass(frozen=True)
class Case:
    """A picture and gRPC's answer for it."""

    png: bytes
    answer: pb.PredictResponse

    @property
    def expected(self) -> Reading:
        a = self.answer
        return Reading(WORDS.get(a.verdict), a.digit, a.runner_up, a.marks)

    def scores(self) -> tuple[float | None, float | None]:
        a = self.answer
        return (a.familiarity if a.HasField("familiarity") else None, a.margin if a.HasField("margin") else None)


def page_png(page: npt.NDArray[np.uint8]) -> bytes:
    out = io.BytesIO()
    Image.fromarray(page).save(out, format="PNG")
    return out.getvalue()


def ask(recognizer: recognizer_pb2_grpc.RecognizerStub, png: bytes) -> pb.PredictResponse:
    answer: pb.PredictResponse = recognizer.Predict(pb.PredictRequest(image=png), timeout=10)
    return answer


def several(recognizer: recognizer_pb2_grpc.RecognizerStub) -> Case:
    """Two held-out digits side by side, far apart, on a drawing-page sized picture."""
    pixels, _ = held_out(20)
    first, second = (pixels[i].reshape(28, 28) for i in (0, 1))
    ink = np.zeros((280, 280), dtype=np.float32)
    for digit, left in ((first, 10), (second, 150)):
        tile = Image.fromarray(digit.astype(np.uint8)).resize((120, 120), Image.Resampling.BILINEAR)
        ink[80:200, left : left + 120] = np.asarray(tile, dtype=np.float32)
    png = page_png((255 - ink).astype(np.uint8))
    case = Case(png, ask(recognizer, png))
    assert case.answer.marks >= 2 and case.answer.verdict == pb.VERDICT_SEVERAL, case.answer
    return case


def not_a_digit(recognizer: recognizer_pb2_grpc.RecognizerStub) -> Case:
    """The least familiar of a checkerboard and a few noise pages, each one mark or none, must be NOT_A_DIGIT."""
    y, x = np.mgrid[0:280, 0:280]
    pages = [np.where(((x // 35) + (y // 35)) % 2 == 0, 0, 255).astype(np.uint8)]
    rng = np.random.default_rng(23)
    pages += [nondigits.render("noise", rng) for _ in range(5)]
    cases = [Case(png, ask(recognizer, png)) for png in map(page_png, pages)]
    single = [c for c in cases if c.answer.marks < 2]
    assert single, f"every candidate counted as several marks: {[c.answer.marks for c in cases]}"
    assert all(c.answer.HasField("familiarity") for c in single), "the served version computes no familiarity"
    case = min(single, key=lambda c: c.answer.familiarity)
    assert case.answer.verdict == pb.VERDICT_NOT_A_DIGIT, case.answer
    return case


def unsure(recognizer: recognizer_pb2_grpc.RecognizerStub) -> Case:
    """A half-and-half blend of two held-out digits people confuse whose answer is UNSURE."""
    pixels, labels = held_out(1000)
    tried = 0
    for a, b in CONFUSED:
        for first, second in zip(pixels[labels == a][:10], pixels[labels == b][:10], strict=False):
            png = as_png(0.5 * first + 0.5 * second)
            answer = ask(recognizer, png)
            tried += 1
            if answer.verdict == pb.VERDICT_UNSURE:
                assert answer.runner_up != answer.digit and answer.HasField("margin"), answer
                return Case(png, answer)
            if tried >= MAX_BLENDS:
                pytest.fail(f"no UNSURE answer among {tried} blends of digits people confuse")
    pytest.fail(f"no UNSURE answer among {tried} blends of digits people confuse")


def digit(recognizer: recognizer_pb2_grpc.RecognizerStub) -> Case:
    """Clean held-out digits read as what they are, DIGIT nearly always; the first of them that is."""
    pixels, labels = held_out(10)
    cases = [Case(as_png(row), ask(recognizer, as_png(row))) for row in pixels]
    clean = [c for c, label in zip(cases, labels, strict=True)
             if c.answer.verdict == pb.VERDICT_DIGIT and c.answer.digit == label]
    assert len(clean) >= 8, [(WORDS.get(c.answer.verdict), c.answer.digit) for c in cases]
    return clean[0]


@pytest.fixture(scope="module")
def cases(recognizer: recognizer_pb2_grpc.RecognizerStub) -> dict[str, Case]:
    """One picture of each verdict, as gRPC through the gateway answered it."""
    found = {"DIGIT": digit(recognizer), "UNSURE": unsure(recognizer), "NOT_A_DIGIT": not_a_digit(recognizer),
             "SEVERAL": several(recognizer)}
    assert {name: case.expected.verdict for name, case in found.items()} == {v: v for v in VERDICTS}
    return found


@pytest.fixture(scope="module")
def files(cases: dict[str, Case], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("verdicts")
    written = {}
    for name, case in cases.items():
        written[name] = folder / f"{name.lower()}.png"
        written[name].write_bytes(case.png)
    return written


@pytest.fixture(scope="module")
def client(stack: LocalStack) -> Iterator[Client]:
    with Client(stack.ports.gateway) as connected:
        yield connected


def assert_scores(case: Case, familiarity: float | None, margin: float | None) -> None:
    expected_familiarity, expected_margin = case.scores()
    assert expected_familiarity is not None and expected_margin is not None  # the stack's version computes both
    assert familiarity == pytest.approx(expected_familiarity, abs=SCORE)
    assert margin == pytest.approx(expected_margin, abs=SCORE)


# -- the answers found ----------------------------------------------------------------------------------------------

def test_each_verdict_is_found_and_its_fields_fit_it(cases: dict[str, Case]) -> None:
    for name, case in cases.items():
        answer = case.answer
        assert answer.runner_up != answer.digit and 0 <= answer.runner_up <= 9, name
        assert answer.digit == int(np.argmax(answer.probabilities)), name  # the digit is answered whatever the verdict
        assert (answer.marks >= 2) == (name == "SEVERAL"), name
    assert cases["DIGIT"].answer.marks == 1 and cases["UNSURE"].answer.marks == 1


def test_the_verdict_does_not_depend_on_the_calls_batch(cases: dict[str, Case],
                                                        recognizer: recognizer_pb2_grpc.RecognizerStub) -> None:
    reply = recognizer.PredictBatch(pb.PredictBatchRequest(requests=[pb.PredictRequest(image=c.png)
                                                                     for c in cases.values()]), timeout=20)
    assert [Reading(WORDS.get(r.verdict), r.digit, r.runner_up, r.marks) for r in reply.responses] == \
        [c.expected for c in cases.values()]


# -- HTTP -----------------------------------------------------------------------------------------------------------

def http_predict(stack: LocalStack, png: bytes) -> dict[str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{stack.ports.gateway_http}/api/predict", data=png,
                                     method="POST", headers={"Content-Type": "image/png"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body


@pytest.mark.parametrize("verdict", VERDICTS)
def test_http_json_agrees_with_grpc(verdict: str, cases: dict[str, Case], stack: LocalStack) -> None:
    case = cases[verdict]
    body = http_predict(stack, case.png)
    assert {"verdict", "runner_up", "familiarity", "margin", "marks"} <= set(body), body
    assert Reading(body["verdict"], body["digit"], body["runner_up"], body["marks"]) == case.expected
    assert body["verdict"] == verdict
    assert_scores(case, body["familiarity"], body["margin"])


# -- the Open Inference Protocol ------------------------------------------------------------------------------------

def length_prefixed(raw: bytes) -> list[bytes]:
    items, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        items.append(raw[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return items


def oip_grpc_infer(stub: oip_grpc.GRPCInferenceServiceStub, pngs: list[bytes]) -> oip.ModelInferResponse:
    tensor = oip.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES", shape=[len(pngs)])
    raw = b"".join(struct.pack("<I", len(png)) + png for png in pngs)
    answer: oip.ModelInferResponse = stub.ModelInfer(
        oip.ModelInferRequest(model_name="digits", inputs=[tensor], raw_input_contents=[raw]), timeout=20)
    return answer


def oip_grpc_outputs(answer: oip.ModelInferResponse) -> dict[str, list[Any]]:
    decoded: dict[str, list[Any]] = {}
    for output, raw in zip(answer.outputs, answer.raw_output_contents, strict=True):
        if output.datatype == "BYTES":
            decoded[output.name] = [e.decode() for e in length_prefixed(raw)]
        elif output.datatype == "INT64":
            decoded[output.name] = np.frombuffer(raw, "<i8").tolist()
        else:
            decoded[output.name] = np.frombuffer(raw, "<f4").reshape(list(output.shape)).tolist()
    return decoded


@pytest.fixture(scope="module")
def oip_stub(stack: LocalStack) -> Iterator[oip_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(stack.ports.gateway) as channel:
        yield oip_grpc.GRPCInferenceServiceStub(channel)


@pytest.mark.parametrize("verdict", VERDICTS)
def test_open_inference_over_grpc_agrees_with_grpc(verdict: str, cases: dict[str, Case],
                                                   oip_stub: oip_grpc.GRPCInferenceServiceStub) -> None:
    case = cases[verdict]
    answer = oip_grpc_infer(oip_stub, [case.png])
    outputs = oip_grpc_outputs(answer)
    assert [o.name for o in answer.outputs] == ["digit", "probabilities", "verdict", "runner_up"]
    assert [o.datatype for o in answer.outputs][2:] == ["BYTES", "INT64"]
    parameters = answer.parameters
    reading = Reading(outputs["verdict"][0], outputs["digit"][0], outputs["runner_up"][0],
                      parameters["marks"].int64_param)
    assert reading == case.expected
    assert parameters["verdict"].string_param == verdict
    assert_scores(case, parameters["familiarity"].double_param, parameters["margin"].double_param)


def rest_infer(stack: LocalStack, document: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """The JSON header of a REST infer and the binary data after it, if any."""
    request = urllib.request.Request(f"http://127.0.0.1:{stack.ports.gateway_http}/v2/models/digits/infer",
                                     data=json.dumps(document).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=20) as response:
        body = response.read()
        length = int(response.headers.get("Inference-Header-Content-Length") or len(body))
    header: dict[str, Any] = json.loads(body[:length])
    return header, body[length:]


def images_input(pngs: list[bytes]) -> dict[str, Any]:
    return {"name": "image", "datatype": "BYTES", "shape": [len(pngs)], "parameters": {"content_type": "base64"},
            "data": [base64.b64encode(png).decode() for png in pngs]}


@pytest.mark.parametrize("verdict", VERDICTS)
def test_open_inference_over_rest_agrees_with_grpc(verdict: str, cases: dict[str, Case], stack: LocalStack) -> None:
    case = cases[verdict]
    header, _ = rest_infer(stack, {"inputs": [images_input([case.png])]})
    outputs = {o["name"]: o for o in header["outputs"]}
    assert outputs["verdict"]["datatype"] == "BYTES" and outputs["verdict"]["shape"] == [1]
    parameters = header["parameters"]
    reading = Reading(outputs["verdict"]["data"][0], outputs["digit"]["data"][0], outputs["runner_up"]["data"][0],
                      parameters["marks"])
    assert reading == case.expected
    assert parameters["verdict"] == verdict
    assert_scores(case, parameters["familiarity"], parameters["margin"])


def test_open_inference_batches_carry_each_digits_verdict_in_order(
    cases: dict[str, Case], stack: LocalStack, oip_stub: oip_grpc.GRPCInferenceServiceStub
) -> None:
    """One call of all four pictures: the verdict tensor row by row, and comma-separated parameters, on both
    transports; the verdict asked for alone, in binary form, over REST."""
    pngs = [c.png for c in cases.values()]
    expected = [c.expected for c in cases.values()]
    words = ",".join(str(r.verdict) for r in expected)
    marks = ",".join(str(r.marks) for r in expected)

    answer = oip_grpc_infer(oip_stub, pngs)
    outputs = oip_grpc_outputs(answer)
    assert list(zip(outputs["verdict"], outputs["digit"], outputs["runner_up"], strict=True)) == \
        [(e.verdict, e.digit, e.runner_up) for e in expected]
    assert answer.parameters["verdict"].string_param == words
    assert answer.parameters["marks"].string_param == marks
    assert len(answer.parameters["margin"].string_param.split(",")) == len(pngs)

    header, binary = rest_infer(stack, {"inputs": [images_input(pngs)],
                                        "outputs": [{"name": "verdict", "parameters": {"binary_data": True}},
                                                    {"name": "runner_up"}]})
    verdict, runner_up = header["outputs"]
    assert verdict["name"] == "verdict" and verdict["parameters"]["binary_data_size"] == len(binary)
    assert [e.decode() for e in length_prefixed(binary)] == list(VERDICTS)
    assert runner_up["data"] == [r.runner_up for r in expected]
    assert header["parameters"]["verdict"] == words and header["parameters"]["marks"] == marks


# -- digits.client and the CLI ---------------------------------------------------------------------------------------

def client_reading(answer: Prediction) -> Reading:
    return Reading(answer.verdict, answer.digit, answer.runner_up, answer.marks)


@pytest.mark.parametrize("verdict", VERDICTS)
def test_the_client_agrees_with_grpc(verdict: str, cases: dict[str, Case], client: Client,
                                     files: dict[str, Path]) -> None:
    case = cases[verdict]
    answer = client.predict(files[verdict])
    assert client_reading(answer) == case.expected and answer.verdict == verdict
    assert_scores(case, answer.familiarity, answer.margin)


def test_the_clients_batches_agree_with_grpc(cases: dict[str, Case], client: Client) -> None:
    answers = client.predict_many([c.png for c in cases.values()])
    assert [client_reading(a) for a in answers] == [c.expected for c in cases.values()]


def cli(stack: LocalStack, *args: str) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "digits.cli", "--gateway", stack.ports.gateway, *args],
                         env=process_environment(), capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_the_cli_agrees_with_grpc_in_json(cases: dict[str, Case], files: dict[str, Path], stack: LocalStack) -> None:
    rows = [json.loads(line) for line in cli(stack, "predict", "--json", *map(str, files.values()))]
    assert [row["file"] for row in rows] == [str(path) for path in files.values()]
    for row, (verdict, case) in zip(rows, cases.items(), strict=True):
        assert Reading(row["verdict"], row["digit"], row["runner_up"], row["marks"]) == case.expected, verdict
        familiarity, margin = case.scores()
        assert familiarity is not None and margin is not None
        assert row["familiarity"] == pytest.approx(familiarity, abs=1e-3)  # rounded to four places
        assert row["margin"] == pytest.approx(margin, abs=1e-3)


def test_the_cli_says_each_verdict_in_words(cases: dict[str, Case], files: dict[str, Path],
                                            stack: LocalStack) -> None:
    lines = dict(zip(cases, cli(stack, "predict", *map(str, files.values())), strict=True))
    said = {name: line.removeprefix(f"{files[name]}: ") for name, line in lines.items()}
    digit, unsure, other, many = (cases[v].answer for v in VERDICTS)
    assert said["DIGIT"].startswith(f"{digit.digit} (confidence "), said
    assert said["UNSURE"].startswith(f"{unsure.digit} or maybe {unsure.runner_up} (unsure, confidence "), said
    assert said["NOT_A_DIGIT"].startswith(f"not a digit (reads most like {other.digit}, confidence "), said
    assert said["SEVERAL"].startswith(f"several digits ({many.marks} marks, confidence "), said
