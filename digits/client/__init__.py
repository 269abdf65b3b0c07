"""``digits.client``: the Digits gateway's gRPC API from Python, blocking (``Client``) or asyncio (``AsyncClient``).

    from digits.client import Client

    with Client("127.0.0.1:50051") as client:
        answer = client.predict("seven.png")
        print(answer.digit, answer.verdict)            # "DIGIT", "UNSURE" (or runner_up), "NOT_A_DIGIT", "SEVERAL"
        answers = client.predict_many(pixels)          # an (N, 784) array, sent in batches
        job = client.wait(client.retrain(limit=500).id)
        client.correct(answer.prediction_id, 7)        # what it really was (None: not a digit); an admin reviews it

Options left out come from ``DIGITS_*`` variables (``digits.settings``). Every method returns frozen dataclasses
(``digits.client.types``) and raises ``DigitsClientError`` subclasses (``digits.client.errors``).
"""

from digits.client.aio import AsyncClient
from digits.client.calls import ImageInput, RetrainOptions
from digits.client.errors import (
    AccessDeniedError,
    CallCancelledError,
    DeadlineExceededError,
    DigitsClientError,
    FailedPreconditionError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    ServerError,
    TooLargeError,
    UnauthenticatedError,
    UnavailableError,
)
from digits.client.sync import Client
from digits.client.types import (
    Activation,
    Correction,
    CorrectionList,
    Dataset,
    Job,
    Model,
    ModelList,
    Prediction,
    Promotion,
    Replica,
)

__all__ = [
    "AccessDeniedError",
    "Activation",
    "AsyncClient",
    "CallCancelledError",
    "Client",
    "Correction",
    "CorrectionList",
    "Dataset",
    "DeadlineExceededError",
    "DigitsClientError",
    "FailedPreconditionError",
    "ImageInput",
    "IntegrityError",
    "InvalidInputError",
    "Job",
    "Model",
    "ModelList",
    "NotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "Prediction",
    "Promotion",
    "Replica",
    "RetrainOptions",
    "ServerError",
    "TooLargeError",
    "UnauthenticatedError",
    "UnavailableError",
]
