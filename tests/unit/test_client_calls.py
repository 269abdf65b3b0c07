"""digits.client.calls: images to batched requests, options to a connection, and the token only where needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from digits.client import calls, errors
from digits.client.calls import Connection, is_loopback
from digits.settings import DEV_ADMIN_TOKEN, ClientSettings
from digits.v1 import feedback_pb2, training_pb2


def png_bytes(size: int) -> bytes:
    return b"\x89PNG" + bytes(size)


def test_many_images_go_in_batches_of_at_most_the_server_limit_in_order(tmp_path: Path) -> None:
    path = tmp_path / "one.png"
    path.write_bytes(png_bytes(10))
    images: list[calls.ImageInput] = [*(png_bytes(i) for i in range(9)), str(path), path]
    batches = list(calls.predict_batches(images, max_items=4, max_bytes=1_000_000))
    sizes = [len(b.request.requests) for b in batches]  # type: ignore[attr-defined]
    assert sizes == [4, 4, 3]
    assert all(b.method == "PredictBatch" and not b.needs_token for b in batches)
    sent = [r.image for b in batches for r in b.request.requests]  # type: ignore[attr-defined]
    assert sent == [png_bytes(i) for i in range(9)] + [png_bytes(10)] * 2


def test_batches_also_stay_under_the_message_size_and_a_huge_image_goes_alone() -> None:
    images = [png_bytes(400), png_bytes(400), png_bytes(5000), png_bytes(400)]
    batches = list(calls.predict_batches(images, max_items=100, max_bytes=1000))
    assert [len(b.request.requests) for b in batches] == [2, 1, 1]  # type: ignore[attr-defined]


def test_pixel_arrays_are_rows_of_784_and_batched() -> None:
    digits = (np.arange(5 * 28 * 28) % 256).astype(np.uint8).reshape(5, 28, 28)
    batches = list(calls.predict_batches(digits, max_items=2, max_bytes=10_000_000))
    assert [len(b.request.requests) for b in batches] == [2, 2, 1]  # type: ignore[attr-defined]
    first = batches[0].request.requests[0]  # type: ignore[attr-defined]
    assert first.WhichOneof("input") == "pixels" and list(first.pixels.values) == digits[0].ravel().tolist()
    assert calls.pixel_rows(digits.reshape(5, 784)).shape == (5, 784)
    assert calls.pixel_rows(digits[0]).shape == calls.pixel_rows(digits[0].ravel()).shape == (1, 784)
    single = calls.predict(digits[0].ravel(), return_model_input=True)
    assert single.method == "Predict" and single.request.return_model_input  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", [np.zeros(783), np.zeros((3, 27, 28)), np.zeros((2, 2, 2, 2))])
def test_pixels_of_the_wrong_shape_are_refused_before_sending(bad: np.ndarray[Any, Any]) -> None:
    with pytest.raises(errors.InvalidInputError, match="shape"):
        calls.predict_request(bad)


def test_one_image_and_many_are_not_confused() -> None:
    with pytest.raises(errors.InvalidInputError, match="predict_many"):
        calls.predict_request(np.zeros((3, 784)))
    with pytest.raises(errors.InvalidInputError, match="predict\\(\\)"):
        list(calls.predict_batches(np.zeros(784), max_items=4, max_bytes=10_000))
    with pytest.raises(errors.InvalidInputError, match="many images"):
        list(calls.predict_batches(b"one image", max_items=4, max_bytes=10_000))  # type: ignore[arg-type]
    with pytest.raises(errors.InvalidInputError, match="int"):
        calls.predict_request(7)  # type: ignore[arg-type]


def settings(**fields: Any) -> ClientSettings:
    return ClientSettings(**fields)


@pytest.mark.parametrize(("target", "loopback"), [
    ("127.0.0.1:50051", True), ("localhost:50051", True), ("[::1]:50051", True), ("::1", True),
    ("ipv4:127.0.0.1:50051,127.0.0.2:50052", True), ("dns:///localhost:50051", True), ("unix:/run/digits.sock", True),
    ("gateway.digits.svc:50051", False), ("10.0.0.7:50051", False), ("ipv4:127.0.0.1:1,10.0.0.1:2", False),
    ("dns:///digits.example.com:443", False),
])
def test_loopback_targets(target: str, loopback: bool) -> None:
    assert is_loopback(target) is loopback


def test_plaintext_only_when_asked_or_to_this_machine(tmp_path: Path) -> None:
    assert not Connection.resolve("127.0.0.1:50051", settings=settings()).tls
    assert Connection.resolve("gateway:50051", settings=settings()).tls
    assert not Connection.resolve("gateway:50051", insecure=True, settings=settings()).tls
    assert not Connection.resolve("gateway:50051", settings=settings(insecure=True)).tls
    assert Connection.resolve("127.0.0.1:50051", insecure=False, settings=settings()).tls
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    verified = Connection.resolve("127.0.0.1:50051", settings=settings(tls_ca_file=ca))
    assert verified.tls and verified.root_certificates == ca.read_bytes()
    with pytest.raises(ValueError, match="contradict"):
        Connection.resolve("gateway:50051", tls_ca_file=ca, insecure=True, settings=settings())
    with pytest.raises(ValueError, match="contradict"):
        Connection.resolve("gateway:50051", settings=settings(tls_ca_file=ca, insecure=True))
    # What the caller says wins over the settings.
    assert not Connection.resolve("gateway:50051", insecure=True, settings=settings(tls_ca_file=ca)).tls
    given_ca = Connection.resolve("gateway:50051", tls_ca_file=ca, settings=settings(insecure=True))
    assert given_ca.tls and given_ca.root_certificates
    with_tls = Connection.resolve("127.0.0.1:1", insecure=False, settings=settings(tls_ca_file=ca))
    assert with_tls.tls and with_tls.root_certificates  # --tls still verifies with DIGITS_TLS_CA_FILE


def test_options_come_from_the_settings_unless_given() -> None:
    resolved = Connection.resolve(settings=settings(gateway="10.1.1.1:9", client_timeout_seconds=7.5,
                                                    token=SecretStr("t" * 30), max_batch_items=64))
    assert (resolved.target, resolved.timeout, resolved.token, resolved.max_batch_items) == \
        ("10.1.1.1:9", 7.5, "t" * 30, 64)
    assert Connection.resolve(settings=settings()).token == DEV_ADMIN_TOKEN  # DIGITS_ADMIN_TOKEN's default
    given = Connection.resolve("x:1", token="mine", timeout=2, settings=settings(token=SecretStr("t" * 30)))
    assert (given.target, given.token, given.timeout) == ("x:1", "mine", 2)


def test_the_token_goes_only_with_the_calls_that_need_it() -> None:
    connection = Connection.resolve(token="secret-token", settings=settings())
    assert connection.metadata(calls.list_models()) == ()
    assert connection.metadata(calls.predict(b"png")) == ()
    assert connection.metadata(calls.correct("a" * 32, 3)) == ()  # anyone may correct: no token travels
    for call in (calls.activate("v2"), calls.rollback(), calls.pin("v2", True), calls.retrain({}),
                 calls.list_jobs(), calls.get_job("j"), calls.cancel_job("j"), calls.watch_job("j"),
                 calls.list_corrections(), calls.get_correction("a" * 32), calls.review_correction("a" * 32, True),
                 calls.delete_correction("a" * 32)):
        assert connection.metadata(call) == (("authorization", "Bearer secret-token"),), call.method


def test_a_correction_names_a_digit_or_not_a_digit() -> None:
    seven = calls.correct("a" * 32, 7).request
    zero = calls.correct("a" * 32, 0).request
    nothing = calls.correct("a" * 32, None).request
    assert isinstance(seven, feedback_pb2.CorrectRequest) and seven.digit == 7
    assert isinstance(zero, feedback_pb2.CorrectRequest) and zero.WhichOneof("truth") == "digit"
    assert isinstance(nothing, feedback_pb2.CorrectRequest) and nothing.not_a_digit
    for bad in (10, -1, True, "7"):
        with pytest.raises(errors.InvalidInputError, match="0 to 9"):
            calls.correct("a" * 32, bad)  # type: ignore[arg-type]
    review = calls.review_correction("b" * 32, False)
    assert review.service == "feedback" and review.method == "ReviewCorrection"


def test_retrain_options_become_the_request() -> None:
    call = calls.retrain({"limit": 500, "candidates": ["svc", "knn"], "params": {"knn": {"k": 3}},
                          "no_activate": True})
    request = call.request
    assert isinstance(request, training_pb2.RetrainRequest)
    assert (request.limit, list(request.candidates), request.no_activate) == (500, ["svc", "knn"], True)
    assert json.loads(request.params_json) == {"knn": {"k": 3}}
