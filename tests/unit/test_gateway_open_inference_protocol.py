"""The Open Inference Protocol's transport-free core (pure logic): tensors read from raw bytes or typed numbers,
the inputs' datatypes and shapes, the requests each digit becomes, requested outputs and the version check —
against a stand-in forwarder and registry."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from digits.errors import InvalidInput, NotFound, TooLarge
from digits.v1 import recognizer_pb2 as pb
from services.gateway.open_inference.protocol import (
    InputTensor,
    OpenInferenceModel,
    OutputTensor,
    length_prefixed,
    numbers_from_list,
    numbers_from_raw,
)

# The stand-in's verdict by the request's first pixel, modulo 5: 0 is an answer nobody judged.
FAKE_VERDICTS = (pb.VERDICT_UNSPECIFIED, pb.VERDICT_DIGIT, pb.VERDICT_UNSURE, pb.VERDICT_NOT_A_DIGIT,
                 pb.VERDICT_SEVERAL)


def fake_answer(first: int, answered: int) -> pb.PredictResponse:
    """digit = ``first`` % 10; the verdict FAKE_VERDICTS[first % 5], runner-up the next digit, two marks for SEVERAL
    (else one); judged answers have familiarity first/4 - 1 and margin first/8, exact in float32."""
    probabilities = [0.0] * 10
    probabilities[first % 10] = 1.0
    verdict = FAKE_VERDICTS[first % 5]
    answer = pb.PredictResponse(digit=first % 10, probabilities=probabilities, version="v7",
                                prediction_id=f"{answered:032x}", verdict=verdict, runner_up=(first + 1) % 10,
                                marks=2 if verdict == pb.VERDICT_SEVERAL else 1)
    if verdict != pb.VERDICT_UNSPECIFIED:
        answer.familiarity = first / 4 - 1
        answer.margin = first / 8
    return answer


class FakeForwarder:
    """predict_many as the gateway's forwarder answers it: digit = the request's first pixel (0 for an image), its
    verdict as ``fake_answer`` says, and prediction ids 000...1, 000...2, ... in the order of the answers."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[pb.PredictRequest], float | None]] = []
        self.admitted_sizes: list[int] = []
        self.answered = 0

    async def predict_many(self, requests: Sequence[pb.PredictRequest],
                           timeout: float | None = None) -> list[pb.PredictResponse]:
        self.calls.append((list(requests), timeout))
        answers = []
        for request in requests:
            first = request.pixel_bytes[0] if request.pixel_bytes else (
                int(request.pixels.values[0]) if request.pixels.values else 0)
            self.answered += 1
            answers.append(fake_answer(first, self.answered))
        return answers

    @contextlib.contextmanager
    def admitted(self, size: int) -> Iterator[None]:
        self.admitted_sizes.append(size)
        yield


class FakeRegistry:
    def __init__(self, active: str | None = "v7", versions: Sequence[str] = ("v7", "v6")) -> None:
        self.active = active
        self.versions = list(versions)

    def active_version(self) -> str | None:
        return self.active

    def list(self, limit: int = 50) -> list[Any]:
        return [type("Record", (), {"version": v})() for v in self.versions[:limit]]


def model(max_items: int = 64, active: str | None = "v7",
          serving: bool = True) -> tuple[OpenInferenceModel, FakeForwarder]:
    forwarder = FakeForwarder()
    return OpenInferenceModel(forwarder, FakeRegistry(active), lambda: serving, max_items), forwarder  # type: ignore[arg-type]


def pixels(datatype: str, shape: tuple[int, ...], firsts: Sequence[int]) -> InputTensor:
    rows = np.zeros((len(firsts), 784), dtype=np.uint8 if datatype == "UINT8" else np.float32)
    rows[:, 0] = firsts
    return InputTensor("pixels", datatype, shape, numbers=rows.ravel())


def infer(digits_model: OpenInferenceModel, inputs: Sequence[InputTensor], requested: Sequence[str] = (),
          version: str = "", timeout: float | None = None) -> Any:
    return asyncio.run(digits_model.infer(inputs, requested, version, timeout))


# -- reading tensors ----------------------------------------------------------------------------------------------

def test_length_prefixed_bytes_are_split_into_their_elements() -> None:
    raw = struct.pack("<I", 3) + b"abc" + struct.pack("<I", 0) + struct.pack("<I", 2) + b"xy"
    assert length_prefixed(raw) == [b"abc", b"", b"xy"]
    assert length_prefixed(b"") == []


def test_truncated_length_prefixed_bytes_are_refused_with_where() -> None:
    with pytest.raises(InvalidInput, match="truncated inside a length prefix"):
        length_prefixed(struct.pack("<I", 1) + b"a" + b"\x01\x00")
    with pytest.raises(InvalidInput, match="shorter than its length prefixes say"):
        length_prefixed(struct.pack("<I", 10) + b"abc")


def test_raw_numbers_are_little_endian_uint8_or_fp32() -> None:
    assert numbers_from_raw("UINT8", bytes([0, 7, 255])).tolist() == [0, 7, 255]
    values = numbers_from_raw("FP32", struct.pack("<2f", 1.5, 255.0))
    assert values.dtype == np.float32 and values.tolist() == [1.5, 255.0]


def test_raw_numbers_of_another_type_or_a_partial_element_are_refused() -> None:
    with pytest.raises(InvalidInput, match="must be UINT8 or FP32, not INT32"):
        numbers_from_raw("INT32", bytes(8))
    with pytest.raises(InvalidInput, match="holds 6 bytes, not a whole number of elements"):
        numbers_from_raw("FP32", bytes(6))


def test_listed_numbers_take_the_tensors_datatype() -> None:
    as_uint8 = numbers_from_list("UINT8", [[0, 1], [254.0, 255]])
    assert as_uint8.dtype == np.uint8 and as_uint8.tolist() == [0, 1, 254, 255]
    as_fp32 = numbers_from_list("FP32", [0.5, -3, 300])
    assert as_fp32.dtype == np.float32 and as_fp32.tolist() == [0.5, -3.0, 300.0]


@pytest.mark.parametrize("values", [[256], [-1], [1.5], [float("nan")], [float("inf")]])
def test_uint8_numbers_outside_0_to_255_or_not_whole_are_refused(values: list[float]) -> None:
    with pytest.raises(InvalidInput, match="whole numbers from 0 to 255"):
        numbers_from_list("UINT8", values)


def test_listed_values_that_are_not_numbers_are_refused() -> None:
    with pytest.raises(InvalidInput, match="FP32 data must be numbers"):
        numbers_from_list("FP32", ["seven"])
    with pytest.raises(InvalidInput, match="must be numbers"):
        numbers_from_list("FP32", [[1, 2], [3]])  # ragged


def test_outputs_are_little_endian_row_major_without_padding() -> None:
    output = OutputTensor("digit", "INT64", np.array([1, 258], dtype=">i8"))
    assert output.raw() == struct.pack("<2q", 1, 258)
    assert output.shape == [2]
    assert OutputTensor("probabilities", "FP32", np.zeros((3, 10), dtype="<f4")).shape == [3, 10]
    words = OutputTensor("verdict", "BYTES", np.array([b"DIGIT", b""], dtype=np.object_))
    assert words.raw() == struct.pack("<I", 5) + b"DIGIT" + struct.pack("<I", 0) and words.shape == [2]
    assert words.data() == ["DIGIT", ""] and OutputTensor("digit", "INT64", np.array([3])).data() == [3]


# -- inputs -------------------------------------------------------------------------------------------------------

def test_uint8_pixels_travel_as_784_bytes_a_digit() -> None:
    digits_model, forwarder = model()
    answer = infer(digits_model, [pixels("UINT8", (3, 784), [1, 2, 3])])
    (requests, _), = forwarder.calls
    assert [len(r.pixel_bytes) for r in requests] == [784] * 3 and not requests[0].pixels.values
    assert answer.version == "v7"
    assert answer.outputs[0].array.tolist() == [1, 2, 3]


def test_fp32_pixels_of_shape_n_28_28_travel_as_values() -> None:
    digits_model, forwarder = model()
    answer = infer(digits_model, [pixels("FP32", (2, 28, 28), [4, 5])])
    (requests, _), = forwarder.calls
    assert [len(r.pixels.values) for r in requests] == [784, 784] and not requests[0].pixel_bytes
    assert answer.outputs[0].array.tolist() == [4, 5]


def test_uint8_pixels_read_from_json_are_sent_as_bytes_too() -> None:
    digits_model, forwarder = model()
    row = [9] + [0] * 783
    infer(digits_model, [InputTensor("pixels", "UINT8", (1, 784), numbers=numbers_from_list("UINT8", row))])
    (requests, _), = forwarder.calls
    assert requests[0].pixel_bytes == bytes(row)


@pytest.mark.parametrize("shape", [(784,), (2, 784), (1, 783), (1, 28, 27), (1, 784, 1), (-1, 784)])
def test_pixels_of_another_shape_are_refused_naming_the_expected_one(shape: tuple[int, ...]) -> None:
    digits_model, _ = model()
    tensor = pixels("FP32", shape, [1])
    with pytest.raises(InvalidInput, match=r"shape|holds"):
        infer(digits_model, [tensor])


def test_a_shape_error_says_what_was_expected() -> None:
    digits_model, _ = model()
    with pytest.raises(InvalidInput, match=r"input 'pixels' has shape \[1, 783\]; expected \[N,784\]"):
        infer(digits_model, [pixels("FP32", (1, 783), [1])])
    with pytest.raises(InvalidInput, match=r"'pixels' holds 784 values; shape \[2, 784\] needs 1568"):
        infer(digits_model, [pixels("FP32", (2, 784), [1])])
    # One digit without its batch dimension: both accepted forms are named.
    with pytest.raises(InvalidInput, match=r"has shape \[784\]; expected \[N,784\] or \[N,28,28\]"):
        infer(digits_model, [pixels("FP32", (784,), [1])])


def test_pixels_of_another_datatype_are_refused() -> None:
    digits_model, _ = model()
    with pytest.raises(InvalidInput, match="input 'pixels' must be UINT8 or FP32, not INT64"):
        infer(digits_model, [InputTensor("pixels", "INT64", (1, 784), numbers=np.zeros(784))])
    with pytest.raises(InvalidInput, match="not BYTES"):
        infer(digits_model, [InputTensor("pixels", "BYTES", (1,), elements=[b"png"])])


def test_images_are_bytes_one_per_digit() -> None:
    digits_model, forwarder = model()
    answer = infer(digits_model, [InputTensor("image", "BYTES", (2,), elements=[b"first", b"second"])])
    (requests, _), = forwarder.calls
    assert [r.image for r in requests] == [b"first", b"second"]
    assert answer.outputs[0].shape == [2]


def test_images_must_be_bytes_of_shape_n_matching_their_count() -> None:
    digits_model, _ = model()
    with pytest.raises(InvalidInput, match="input 'image' must be BYTES, not FP32"):
        infer(digits_model, [InputTensor("image", "FP32", (1,), numbers=np.zeros(1))])
    with pytest.raises(InvalidInput, match=r"input 'image' has shape \[1, 1\]; expected \[N\]"):
        infer(digits_model, [InputTensor("image", "BYTES", (1, 1), elements=[b"x"])])
    with pytest.raises(InvalidInput, match=r"has shape \[3\] but holds 2 images"):
        infer(digits_model, [InputTensor("image", "BYTES", (3,), elements=[b"x", b"y"])])


def test_exactly_one_known_input_is_required() -> None:
    digits_model, forwarder = model()
    with pytest.raises(InvalidInput, match="send exactly one input, 'image' or 'pixels'; got 0"):
        infer(digits_model, [])
    two = [pixels("FP32", (1, 784), [1]), pixels("FP32", (1, 784), [2])]
    with pytest.raises(InvalidInput, match="got 2"):
        infer(digits_model, two)
    with pytest.raises(InvalidInput, match="unknown input 'picture'"):
        infer(digits_model, [InputTensor("picture", "BYTES", (1,), elements=[b"x"])])
    assert forwarder.calls == []  # nothing forwarded for a refused request


def test_an_empty_input_is_refused_and_too_many_digits_are_too_large() -> None:
    digits_model, forwarder = model(max_items=2)
    with pytest.raises(InvalidInput, match="the input holds no digits"):
        infer(digits_model, [InputTensor("image", "BYTES", (0,), elements=[])])
    with pytest.raises(TooLarge, match="3 digits in one call; the limit is 2"):
        infer(digits_model, [pixels("UINT8", (3, 784), [1, 2, 3])])
    infer(digits_model, [pixels("UINT8", (2, 784), [1, 2])])  # at the limit: answered
    assert len(forwarder.calls) == 1


# -- outputs, versions, the call ----------------------------------------------------------------------------------

def test_every_output_by_default_digit_probabilities_verdict_runner_up() -> None:
    digits_model, _ = model()
    answer = infer(digits_model, [pixels("UINT8", (2, 784), [3, 8])])
    assert [(o.name, o.datatype, o.shape) for o in answer.outputs] == [
        ("digit", "INT64", [2]), ("probabilities", "FP32", [2, 10]), ("verdict", "BYTES", [2]),
        ("runner_up", "INT64", [2])]
    digit, probabilities, verdict, runner_up = answer.outputs
    assert digit.array.dtype == np.dtype("<i8") and probabilities.array.dtype == np.dtype("<f4")
    assert probabilities.array.argmax(axis=1).tolist() == [3, 8]
    assert verdict.data() == ["NOT_A_DIGIT", "NOT_A_DIGIT"] and runner_up.array.tolist() == [4, 9]


def test_the_verdict_is_a_plain_word_per_row_and_empty_when_not_judged() -> None:
    digits_model, _ = model()
    answer = infer(digits_model, [pixels("UINT8", (5, 784), [0, 1, 2, 3, 4])], requested=["verdict"])
    (verdict,) = answer.outputs
    assert verdict.data() == ["", "DIGIT", "UNSURE", "NOT_A_DIGIT", "SEVERAL"]
    assert verdict.raw() == b"".join(struct.pack("<I", len(w)) + w for w in
                                     [b"", b"DIGIT", b"UNSURE", b"NOT_A_DIGIT", b"SEVERAL"])
    assert length_prefixed(verdict.raw()) == [w.encode() for w in verdict.data()]  # what a client reads back


def test_one_digits_verdict_is_in_the_parameters_typed() -> None:
    digits_model, _ = model()
    unsure = infer(digits_model, [pixels("UINT8", (1, 784), [2])], requested=["digit"])
    assert unsure.parameters == {"verdict": "UNSURE", "marks": 1, "familiarity": -0.5, "margin": 0.25}
    several = infer(digits_model, [pixels("UINT8", (1, 784), [4])]).parameters
    assert several["verdict"] == "SEVERAL" and several["marks"] == 2 and several["familiarity"] == 0.0
    # Not judged, no scores: only the marks.
    assert infer(digits_model, [pixels("UINT8", (1, 784), [5])]).parameters == {"marks": 1}


def test_several_digits_verdicts_are_comma_separated_in_order_empty_where_unset() -> None:
    digits_model, _ = model()
    answer = infer(digits_model, [pixels("UINT8", (3, 784), [1, 0, 4])])
    assert answer.parameters == {"verdict": "DIGIT,,SEVERAL", "marks": "1,1,2", "familiarity": "-0.75,,0.0",
                                 "margin": "0.125,,0.5"}
    assert answer.joined_ids.count(",") == 2  # one entry per digit, as the prediction ids
    scores = infer(digits_model, [pixels("UINT8", (2, 784), [6, 7])]).parameters
    assert scores["familiarity"] == "0.5,0.75" and scores["margin"] == "0.75,0.875"  # float32, shortest
    nobody_judged = infer(digits_model, [pixels("UINT8", (2, 784), [0, 5])])
    assert nobody_judged.parameters == {"marks": "1,1"}  # a name no digit has a value for is left out


def test_requested_outputs_are_returned_alone_and_in_the_requested_order() -> None:
    digits_model, _ = model()
    only = infer(digits_model, [pixels("UINT8", (1, 784), [5])], requested=["probabilities"])
    assert [o.name for o in only.outputs] == ["probabilities"]
    both = infer(digits_model, [pixels("UINT8", (1, 784), [5])], requested=["probabilities", "digit"])
    assert [o.name for o in both.outputs] == ["probabilities", "digit"]
    verdicts = infer(digits_model, [pixels("UINT8", (1, 784), [2])], requested=["runner_up", "verdict"])
    assert [(o.name, o.data()) for o in verdicts.outputs] == [("runner_up", [3]), ("verdict", ["UNSURE"])]


def test_an_unknown_output_is_refused_before_anything_is_forwarded() -> None:
    digits_model, forwarder = model()
    with pytest.raises(InvalidInput, match="unknown output 'label', 'scores': the outputs are 'digit', "
                                           "'probabilities', 'verdict', 'runner_up'"):
        infer(digits_model, [pixels("UINT8", (1, 784), [5])], requested=["digit", "label", "scores"])
    assert forwarder.calls == []


def test_only_the_active_version_may_be_named() -> None:
    digits_model, forwarder = model(active="v7")
    assert infer(digits_model, [pixels("UINT8", (1, 784), [5])], version="v7").version == "v7"
    with pytest.raises(NotFound, match=r"version v6 of digits is not the one being served \(active: v7\)"):
        infer(digits_model, [pixels("UINT8", (1, 784), [5])], version="v6")
    nothing_active, _ = model(active=None)
    with pytest.raises(NotFound, match=r"\(active: none\)"):
        infer(nothing_active, [pixels("UINT8", (1, 784), [5])], version="v6")
    assert len(forwarder.calls) == 1


def test_the_callers_timeout_is_passed_on() -> None:
    digits_model, forwarder = model()
    infer(digits_model, [pixels("UINT8", (1, 784), [5])], timeout=2.5)
    infer(digits_model, [pixels("UINT8", (1, 784), [5])])
    assert [timeout for _, timeout in forwarder.calls] == [2.5, None]


def test_model_name_readiness_versions_and_admission() -> None:
    OpenInferenceModel.check_name("digits")
    with pytest.raises(NotFound, match="no model named 'mnist'; this server serves 'digits'"):
        OpenInferenceModel.check_name("mnist")

    digits_model, forwarder = model(active="v7")
    assert asyncio.run(digits_model.ready()) and asyncio.run(digits_model.ready("v7"))
    assert not asyncio.run(digits_model.ready("v6"))
    assert not asyncio.run(model(active=None)[0].ready())
    assert not asyncio.run(model(serving=False)[0].ready())

    assert asyncio.run(digits_model.versions()) == ["v7", "v6"]
    assert asyncio.run(digits_model.versions("v6")) == ["v7", "v6"]
    with pytest.raises(NotFound, match="model digits has no version 'v1'"):
        asyncio.run(digits_model.versions("v1"))

    with digits_model.admitted(1234):
        pass
    assert forwarder.admitted_sizes == [1234]
