"""What a failed call raises: one base class, and a subclass for each kind of failure a caller handles differently.

The gateway's status codes (docs/architecture.md, "Predict") map to these in one place, ``from_status``:

| status | raised | what the caller does |
|---|---|---|
| INVALID_ARGUMENT, OUT_OF_RANGE | ``InvalidInputError`` | fix the input; retrying the same call cannot help |
| RESOURCE_EXHAUSTED without ``retry-after`` | ``TooLargeError`` (an ``InvalidInputError``) | send less |
| RESOURCE_EXHAUSTED with ``retry-after`` | ``OverloadedError`` (an ``UnavailableError``) | wait ``retry_after`` s |
| UNAVAILABLE | ``UnavailableError`` | retry later (no model yet, Redis or inference away) |
| DEADLINE_EXCEEDED | ``DeadlineExceededError`` | retry with a longer timeout, or later |
| NOT_FOUND | ``NotFoundError`` | the version or job does not exist |
| UNAUTHENTICATED | ``UnauthenticatedError`` (an ``AccessDeniedError``) | send a valid token |
| PERMISSION_DENIED | ``PermissionDeniedError`` (an ``AccessDeniedError``) | use a token with the scope |
| FAILED_PRECONDITION, ABORTED, ALREADY_EXISTS | ``FailedPreconditionError`` | the registry's state refuses it |
| DATA_LOSS | ``IntegrityError`` | a stored model failed its signature or digest |
| CANCELLED | ``CallCancelledError`` | the call was cancelled |
| anything else | ``ServerError`` | report it; the server logged the details |
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc

from digits.errors import RETRY_AFTER_KEY


class DigitsClientError(Exception):
    """A call to the gateway failed. ``code`` is the gRPC status (None for what the client refused itself),
    ``details`` the server's words, ``retry_after`` the seconds the server asked to wait before trying again."""

    def __init__(self, details: str, code: grpc.StatusCode | None = None, retry_after: float | None = None) -> None:
        super().__init__(details)
        self.details = details
        self.code = code
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}" if self.code is not None else self.details


class InvalidInputError(DigitsClientError, ValueError):
    """The request cannot be answered as sent: not an image, no digit in it, wrong shape."""


class TooLargeError(InvalidInputError):
    """Bigger than the server's limits (bytes, pixels, items in a batch)."""


class NotFoundError(DigitsClientError, LookupError):
    """No such model version or job."""


class AccessDeniedError(DigitsClientError):
    """The token is missing, wrong, or lacks the scope the call needs."""


class UnauthenticatedError(AccessDeniedError):
    """No token, or one the gateway does not know."""


class PermissionDeniedError(AccessDeniedError):
    """A valid token without the scope this call needs (e.g. the training token for a `Models` write)."""


class UnavailableError(DigitsClientError):
    """Not possible right now (no model active yet, inference or Redis away, the gateway unreachable): retry later,
    after ``retry_after`` seconds when the server said."""


class OverloadedError(UnavailableError):
    """The service is at its limit of calls or bytes in flight; the same call may pass after ``retry_after`` s."""


class DeadlineExceededError(DigitsClientError, TimeoutError):
    """No answer within the call's deadline."""


class FailedPreconditionError(DigitsClientError):
    """The registry's state refuses the call (nothing to roll back to, a pruned or unservable version)."""


class IntegrityError(DigitsClientError):
    """A stored model failed its signature or digest check."""


class CallCancelledError(DigitsClientError):
    """The call was cancelled before it ended."""


class ServerError(DigitsClientError):
    """Anything else: an internal error (the server logged the details) or a call it does not implement."""


_BY_CODE: dict[grpc.StatusCode, type[DigitsClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInputError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidInputError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.ABORTED: FailedPreconditionError,
    grpc.StatusCode.ALREADY_EXISTS: FailedPreconditionError,
    grpc.StatusCode.DATA_LOSS: IntegrityError,
    grpc.StatusCode.CANCELLED: CallCancelledError,
}


def from_status(code: grpc.StatusCode, details: str | None, trailing_metadata: Iterable[Any] | None = ()
                ) -> DigitsClientError:
    """The exception for a call that ended with ``code``; ``trailing_metadata`` holds (key, value) pairs."""
    retry_after = _retry_after(trailing_metadata or ())
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        kind: type[DigitsClientError] = OverloadedError if retry_after is not None else TooLargeError
    else:
        kind = _BY_CODE.get(code, ServerError)
    return kind(details or code.name.lower().replace("_", " "), code, retry_after)


def from_rpc_error(error: grpc.RpcError) -> DigitsClientError:
    """The exception for a failed call of either grpc API (a sync ``grpc.Call`` or a ``grpc.aio.AioRpcError``)."""
    if not callable(getattr(error, "code", None)):  # an RpcError that is no call (grpc raises few of those)
        return ServerError(str(error) or type(error).__name__, grpc.StatusCode.UNKNOWN)
    return from_status(error.code(), error.details(), error.trailing_metadata())


def _retry_after(metadata: Iterable[Any]) -> float | None:
    for key, value in metadata:
        if key == RETRY_AFTER_KEY:
            try:
                seconds = float(value.decode() if isinstance(value, bytes) else value)
            except ValueError:
                return None
            return max(seconds, 0.0)
    return None
