"""digits.client.errors: each gRPC status becomes the exception its caller handles, with the server's retry hint."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from digits.client import errors

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
