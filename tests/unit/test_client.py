"""digits.client's pure logic: status codes to exceptions, images to batches, options to a connection, progress."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from pydantic import SecretStr

from digits import jobs
from digits.client import calls, errors, types
from digits.client.calls import Connection, is_loopback
from digits.client.progress import ProgressReport, bar, duration, remaining
from digits.settings import DEV_ADMIN_TOKEN, Settings
from digits.v1 import models_pb2, recognizer_pb2, training_pb2

Code = grpc.StatusCode


@pytest.mark.parametrize(("code", "metadata", "expected"), [
    (Code.INVALID_ARGUMENT, (), errors.InvalidInputError),
    (Code.OUT_OF_RANGE, (), errors.InvalidInputError),
    (Code.RESOURCE_EXHAUSTED, (), errors.TooLargeError),
    (Code.RESOURCE_EXHAUSTED, (("retry-after", "1"),), errors.OverloadedError),
    (Code.UNAVAILABLE, (), errors.UnavailableError),
    (Code.DEADLINE_EXCEEDED, (), errors.DeadlineExceededError),
    (Code.NOT_FOUND, (), errors.NotFoundError),
    (Code.UNAUTHENTICATED, (), errors.UnauthenticatedError),
    (Code.PERMISSION_DENIED, (), errors.PermissionDeniedError),
    (Code.FAILED_PRECONDITION, (), errors.FailedPreconditionError),
    (Code.DATA_LOSS, (), errors.IntegrityError),
    (Code.CANCELLED, (), errors.CallCancelledError),
    (Code.INTERNAL, (), errors.ServerError),
    (Code.UNIMPLEMENTED, (), errors.ServerError),
])
def test_each_status_becomes_the_exception_its_caller_handles(
    code: grpc.StatusCode, metadata: tuple[tuple[str, str], ...], expected: type[errors.DigitsClientError]
) -> None:
    error = errors.from_status(code, "what went wrong", metadata)
    assert type(error) is expected
    assert isinstance(error, errors.DigitsClientError)
    assert error.code == code and error.details == "what went wrong"
    assert str(error) == f"{code.name}: what went wrong"


def test_the_families_callers_catch_at_once() -> None:
    assert issubclass(errors.TooLargeError, errors.InvalidInputError)  # send less: the same call never passes
    assert issubclass(errors.OverloadedError, errors.UnavailableError)  # come back later
    assert issubclass(errors.UnauthenticatedError, errors.AccessDeniedError)
    assert issubclass(errors.PermissionDeniedError, errors.AccessDeniedError)
    assert issubclass(errors.InvalidInputError, ValueError) and issubclass(errors.NotFoundError, LookupError)
    assert issubclass(errors.DeadlineExceededError, TimeoutError)


@pytest.mark.parametrize(("metadata", "seconds"), [
    ((("retry-after", "2"),), 2.0), ((("retry-after", b"0.5"),), 0.5), ((("other", "x"), ("retry-after", "1")), 1.0),
    ((("retry-after", "soon"),), None), ((), None),
])
def test_the_retry_after_hint_is_read_from_the_trailing_metadata(
    metadata: tuple[tuple[str, Any], ...], seconds: float | None
) -> None:
    assert errors.from_status(Code.UNAVAILABLE, "busy", metadata).retry_after == seconds


class FailedCall(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, str], ...] = ()) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:  # type: ignore[override]
        return self._trailing


def test_a_failed_call_is_mapped_with_its_hint() -> None:
    error = errors.from_rpc_error(FailedCall(Code.RESOURCE_EXHAUSTED, "at the limit", (("retry-after", "3"),)))
    assert isinstance(error, errors.OverloadedError) and error.retry_after == 3.0
    assert isinstance(errors.from_rpc_error(grpc.RpcError("bare")), errors.ServerError)
    assert errors.from_status(Code.UNAVAILABLE, None).details == "unavailable"


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


def settings(**fields: Any) -> Settings:
    return Settings(**fields)


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
    for call in (calls.activate("v2"), calls.rollback(), calls.pin("v2", True), calls.retrain({}),
                 calls.list_jobs(), calls.get_job("j"), calls.cancel_job("j"), calls.watch_job("j")):
        assert connection.metadata(call) == (("authorization", "Bearer secret-token"),), call.method


def test_retrain_options_become_the_request() -> None:
    call = calls.retrain({"limit": 500, "candidates": ["svc", "knn"], "params": {"knn": {"k": 3}},
                          "no_activate": True})
    request = call.request
    assert isinstance(request, training_pb2.RetrainRequest)
    assert (request.limit, list(request.candidates), request.no_activate) == (500, ["svc", "knn"], True)
    assert json.loads(request.params_json) == {"knn": {"k": 3}}


def test_replies_become_plain_dataclasses() -> None:
    reply = models_pb2.Model(version="v3", kind="svc", params_json='{"C": 5}', metrics_json='{"accuracy": 0.9}',
                             dataset=models_pb2.Dataset(source="sample", size=5000, digest="ab"), active=True,
                             report_json="")
    model = types.model(reply)
    assert (model.version, model.params, model.metrics, model.report, model.dataset.size) == \
        ("v3", {"C": 5}, {"accuracy": 0.9}, {}, 5000)
    answer = types.prediction(recognizer_pb2.PredictResponse(digit=7, confidence=0.5, probabilities=[0.1] * 10,
                                                             version="v3"))
    assert answer.digit == 7 and answer.model_input is None and len(answer.probabilities) == 10
    job = types.job(training_pb2.Job(id="j", status="finished", outcome="activated: better", result_json='{"a": 1}'))
    assert job.ended and job.activated and job.result == {"a": 1} and job.spec == {}


def test_the_client_knows_which_job_states_are_final() -> None:
    assert {s.value for s in jobs.TERMINAL} == types.JOB_ENDED


def test_durations() -> None:
    assert [duration(s) for s in (0, 5.4, 65, 3599.6, 3661, None)] == ["0:00", "0:05", "1:05", "1:00:00", "1:01:01",
                                                                       "?"]


def test_time_left_follows_the_pace_seen_since_the_first_update() -> None:
    assert remaining(0.0, 10, 0.0, 0) is None  # no progress yet
    assert remaining(0.5, 0.2, 0.0, 0) is None  # too soon to tell
    assert remaining(0.5, 10, 0.0, 0) == pytest.approx(10)
    assert remaining(0.75, 20, 0.5, 10) == pytest.approx(10)  # watched from halfway: its own pace
    assert remaining(1.0, 20, 0.0, 0) == 0


def job_at(progress: float, stage: str = "fitting svc", status: str = "started") -> types.Job:
    return types.Job(id="j", status=status, stage=stage, progress=progress, error="", version="", outcome="",
                     enqueued_at="", started_at="", ended_at="", spec={}, result={})


def test_the_bar_shows_elapsed_time_and_an_estimate() -> None:
    text = bar(job_at(0.5), elapsed=65, left=65, width=10)
    assert text.startswith("[#####-----]  50.0%") and "1:05 elapsed" in text and "~1:05 left" in text
    assert "started: fitting svc" in text


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_on_a_terminal_the_bar_is_redrawn_in_place() -> None:
    out, clock = io.StringIO(), Clock()
    report = ProgressReport(out, tty=True, clock=clock)
    for progress in (0.0, 0.25, 0.5):
        clock.now += 10
        report(job_at(progress))
    report.finish()
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "~0:20 left" in text.split("\r")[-1]  # 25 % per 10 s since the first update, 50 % to go


def test_in_a_pipe_plain_lines_and_no_carriage_return() -> None:
    out, clock = io.StringIO(), Clock()
    report = ProgressReport(out, tty=False, clock=clock)
    for progress, stage in ((0.0, "queued"), (0.01, "loading"), (0.02, "loading"), (0.5, "fitting"),
                            (0.55, "fitting"), (1.0, "done")):
        clock.now += 1
        report(job_at(progress, stage))
    report.finish()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [line.split()[-1] for line in lines] == ["queued", "loading", "fitting", "done"]
    assert all("elapsed" in line and "left" in line for line in lines)


def test_without_a_terminal_the_report_chooses_lines_by_itself() -> None:
    out = io.StringIO()  # isatty() is False
    report = ProgressReport(out)
    report(job_at(0.3))
    report.finish()
    assert "\r" not in out.getvalue() and out.getvalue().endswith("\n")


def test_the_cli_refuses_options_it_cannot_use_before_calling(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from digits import cli

    assert cli.main(["--tls-ca", str(tmp_path / "missing.pem"), "models"]) == 2
    assert "missing.pem" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # plaintext and TLS at once
        cli.main(["--insecure", "--tls-ca", str(tmp_path / "ca.pem"), "models"])
    with pytest.raises(SystemExit) as shown:
        cli.main(["--version"])
    assert shown.value.code == 0 and capsys.readouterr().out.startswith("digits ")
