"""The errors Digits raises on purpose, each tied to the gRPC status code a client should see.

Every service maps these to status codes in one place (``digits.platform.rpc``); code that raises them only says what
went wrong, in words a person understands.
"""

from __future__ import annotations

import grpc

# The HTTP status that stands for each gRPC code, for the gateway's JSON endpoints.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,  # too large; an overloaded service says so with Retry-After (503)
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


# Trailing metadata that marks a RESOURCE_EXHAUSTED as "busy, come back" rather than "too large".
RETRY_AFTER_KEY = "retry-after"


def http_status(code: grpc.StatusCode, retry_after: str | None = None) -> int:
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_after:
        return 503
    return HTTP_STATUS.get(code, 500)


def http_status_of(error: DigitsError) -> int:
    """The HTTP status of an error raised here: its own where it has one (a per-caller rate limit is 429, where
    gRPC has no code of its own for it), else its code's."""
    if error.http is not None:
        return error.http
    retry_after = error.retry_after_seconds
    return http_status(error.code, str(retry_after) if retry_after is not None else None)


class DigitsError(Exception):
    """An error whose message is meant for the caller; ``retry_after_seconds`` is set where the same call may pass
    later (the service was busy, the request was fine)."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    retry_after_seconds: int | None = None
    http: int | None = None  # the HTTP status, where the code's (HTTP_STATUS) is not the right one


class InvalidInput(DigitsError):
    """The request cannot be answered as sent: wrong shape, not an image, no digit in it."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class TooLarge(DigitsError):
    """The request is bigger than the limits allow (bytes, pixels, batch size)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Overloaded(DigitsError):
    """The service is at its limit right now (calls, bytes or pixels in flight); the same call may pass later.

    gRPC clients see RESOURCE_EXHAUSTED with ``retry-after`` (seconds) in the trailing metadata; HTTP clients see
    503 with a Retry-After header.
    """

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    retry_after_seconds = 1


class RateLimited(DigitsError):
    """This caller sent more than its share (corrections per minute); the same call passes after
    ``retry_after_seconds``.

    gRPC clients see RESOURCE_EXHAUSTED with ``retry-after``, as for an overloaded service; HTTP clients see 429 Too
    Many Requests with a Retry-After header, not 503: the service is fine, this caller should slow down.
    """

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http = 429

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = max(1, retry_after_seconds)


class NotFound(DigitsError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DigitsError):
    """What the call would create is there already, and differs (a prediction corrected otherwise before)."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(DigitsError):
    """The system is not in a state that allows the call (for example: nothing to roll back to)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class NotServable(DigitsError):
    """A registered model that inference cannot load or serve: it is never activated, never served."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(DigitsError):
    """A dependency (Redis, inference, a loaded model) is not there right now; retrying may help."""

    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(DigitsError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(DigitsError):
    code = grpc.StatusCode.PERMISSION_DENIED


class DeadlineExceeded(DigitsError):
    """The caller's deadline passed before an answer came."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Refused(DigitsError):
    """A refusal that came from another service as a code and a message (one item of a ``PredictEach``)."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after_seconds: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_seconds = retry_after_seconds or None


class IntegrityError(DigitsError):
    """A stored model failed its signature or digest check; it is never unpickled."""

    code = grpc.StatusCode.DATA_LOSS
