"""The Open Inference Protocol over gRPC, in process against stand-ins: outputs in raw_output_contents (BYTES
length-prefixed) and the verdict's response parameters, typed as the protocol types them."""

from __future__ import annotations

import asyncio
import struct

import numpy as np

from digits.oip import grpc_predict_v2_pb2 as oip
from services.gateway.open_inference.grpc_service import OpenInference
from services.gateway.open_inference.protocol import OpenInferenceModel
from tests.unit.test_gateway_forwarding import FakeContext
from tests.unit.test_gateway_open_inference_protocol import FakeForwarder, FakeRegistry


def infer(firsts: list[int], *outputs: str) -> oip.ModelInferResponse:
    rows = np.zeros((len(firsts), 784), dtype=np.uint8)
    rows[:, 0] = firsts
    request = oip.ModelInferRequest(
        model_name="digits", inputs=[oip.ModelInferRequest.InferInputTensor(name="pixels", datatype="UINT8",
                                                                            shape=[len(firsts), 784])],
        raw_input_contents=[rows.tobytes()],
        outputs=[oip.ModelInferRequest.InferRequestedOutputTensor(name=name) for name in outputs])
    model = OpenInferenceModel(FakeForwarder(), FakeRegistry(), lambda: True, 64)  # type: ignore[arg-type]
    service = OpenInference(model, "9.9.9")
    return asyncio.run(service.ModelInfer(request, FakeContext(None)))  # type: ignore[arg-type]


def test_the_verdict_and_runner_up_travel_as_raw_outputs() -> None:
    answer = infer([2, 0])
    assert [(o.name, o.datatype, list(o.shape)) for o in answer.outputs] == [
        ("digit", "INT64", [2]), ("probabilities", "FP32", [2, 10]), ("verdict", "BYTES", [2]),
        ("runner_up", "INT64", [2])]
    digit, _, verdict, runner_up = answer.raw_output_contents
    assert np.frombuffer(digit, "<i8").tolist() == [2, 0]
    assert verdict == struct.pack("<I", 6) + b"UNSURE" + struct.pack("<I", 0)  # not judged: empty
    assert np.frombuffer(runner_up, "<i8").tolist() == [3, 1]


def test_one_digits_verdict_parameters_are_typed() -> None:
    parameters = infer([4], "verdict").parameters
    assert set(parameters) == {"prediction_ids", "verdict", "marks", "familiarity", "margin"}
    assert parameters["verdict"].WhichOneof("parameter_choice") == "string_param"
    assert parameters["verdict"].string_param == "SEVERAL"
    assert parameters["marks"].WhichOneof("parameter_choice") == "int64_param" and parameters["marks"].int64_param == 2
    assert parameters["familiarity"].WhichOneof("parameter_choice") == "double_param"
    assert parameters["familiarity"].double_param == 0.0 and parameters["margin"].double_param == 0.5


def test_several_digits_verdict_parameters_are_comma_separated_strings() -> None:
    parameters = infer([1, 3, 0]).parameters
    assert {name: p.string_param for name, p in parameters.items() if name != "prediction_ids"} == {
        "verdict": "DIGIT,NOT_A_DIGIT,", "marks": "1,1,1", "familiarity": "-0.75,-0.25,", "margin": "0.125,0.375,"}
    assert parameters["prediction_ids"].string_param.count(",") == 2
