"""Each error Digits raises on purpose stands for one gRPC status and one HTTP status."""

from __future__ import annotations

import grpc
import pytest

from digits import errors


@pytest.mark.parametrize(("error", "code", "http"), [
    (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT, 400),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, 401),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED, 403),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND, 404),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION, 409),
    (errors.NotServable, grpc.StatusCode.FAILED_PRECONDITION, 409),
    (errors.TooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED, 413),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE, 503),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    (errors.IntegrityError, grpc.StatusCode.DATA_LOSS, 500),
    (errors.DigitsError, grpc.StatusCode.INTERNAL, 500),
])
def test_each_error_has_its_grpc_and_http_status(error: type[errors.DigitsError], code: grpc.StatusCode,
                                                 http: int) -> None:
    assert error("words").code == code
    assert errors.http_status(code) == http


def test_overloaded_is_resource_exhausted_with_a_retry_hint_and_503_over_http() -> None:
    busy = errors.Overloaded("busy")
    assert busy.code == grpc.StatusCode.RESOURCE_EXHAUSTED and busy.retry_after_seconds >= 1
    assert errors.http_status(busy.code, retry_after=str(busy.retry_after_seconds)) == 503
    # Without the hint, RESOURCE_EXHAUSTED means too large: retrying the same request will not help.
    assert errors.http_status(busy.code) == 413
    assert errors.http_status(busy.code, retry_after="") == 413
    # The hint only changes RESOURCE_EXHAUSTED.
    assert errors.http_status(grpc.StatusCode.INVALID_ARGUMENT, retry_after="1") == 400


def test_refused_carries_another_services_code_message_and_hint() -> None:
    refused = errors.Refused(grpc.StatusCode.NOT_FOUND, "no such version", retry_after_seconds=3)
    assert isinstance(refused, errors.DigitsError)
    assert refused.code == grpc.StatusCode.NOT_FOUND and str(refused) == "no such version"
    assert refused.retry_after_seconds == 3
    plain = errors.Refused(grpc.StatusCode.INVALID_ARGUMENT, "bad")
    assert plain.retry_after_seconds is None and errors.InvalidInput("bad").retry_after_seconds is None
    # Setting the code on one instance leaves the class (and every other error) alone.
    assert errors.DigitsError.code == grpc.StatusCode.INTERNAL


def test_a_rate_limited_caller_gets_429_where_an_overloaded_service_gets_503() -> None:
    limited = errors.RateLimited("too many", retry_after_seconds=7)
    assert limited.code == grpc.StatusCode.RESOURCE_EXHAUSTED and limited.retry_after_seconds == 7
    assert errors.http_status_of(limited) == 429
    assert errors.http_status_of(errors.Overloaded("busy")) == 503
    assert errors.http_status_of(errors.TooLarge("big")) == 413
    assert errors.RateLimited("too many", retry_after_seconds=0).retry_after_seconds == 1  # never "retry now"


def test_already_exists_is_a_conflict() -> None:
    assert errors.AlreadyExists("twice").code == grpc.StatusCode.ALREADY_EXISTS
    assert errors.http_status_of(errors.AlreadyExists("twice")) == 409
