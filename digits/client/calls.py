"""What the sync and the asyncio client share: how to connect, and each call as data (``Call``) — its method, its
request and how its reply becomes a dataclass — so that the two clients only differ in how they wait.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeAlias, TypedDict, TypeVar

import grpc
import numpy as np
from google.protobuf.message import Message

from digits.client import types
from digits.client.errors import InvalidInputError, UnavailableError
from digits.mnist import N_PIXELS, SHAPE
from digits.settings import ClientSettings, get_client_settings
from digits.v1 import (
    feedback_pb2,
    feedback_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    recognizer_pb2,
    recognizer_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
)

T = TypeVar("T")
ChannelT = TypeVar("ChannelT", grpc.Channel, grpc.aio.Channel)
# Replies can be large (a model's report, a batch of 1,024 answers); requests are bounded by the server.
MAX_RECEIVE_BYTES = 64 * 1024 * 1024
# What a PredictBatch message holds besides its images (field tags and lengths), per item.
_ITEM_OVERHEAD_BYTES = 16

# A file path, encoded image bytes, or one digit's pixels (784 values or 28x28, 0-255, light ink on dark).
ImageInput: TypeAlias = "str | os.PathLike[str] | bytes | bytearray | memoryview | np.ndarray[Any, Any]"
Service = Literal["recognizer", "models", "training", "feedback"]


class RetrainOptions(TypedDict, total=False):
    """A retrain's options; every one may be left out (the server's default). docs/training.md has the details."""

    data: str  # "sample", "idx:DIR", "openml", "folder:DIR" or several joined by "+"; "" = the trainer's DIGITS_DATA
    seed: int
    validation_fraction: float  # 0 = the data's own: MNIST's classic last 10,000, else 0.2
    limit: int  # train on at most this many digits (of each part of a combination); 0 = all
    no_activate: bool  # register the winner, leave the active model as it is
    timeout_seconds: int  # the job's timeout; 0 = DIGITS_JOB_TIMEOUT_SECONDS
    candidates: Sequence[str]  # e.g. ["svc", "hist-gb", "vote-soft"]; empty = the production recipe
    params: dict[str, dict[str, Any]]  # per-candidate parameters: {"hist-gb": {"max_iter": 30}}
    top_n: int
    min_gain: float
    parallel: bool  # one job per candidate, over every worker
    no_final_fit: bool  # register the split's fit instead of refitting the winner on every digit (quicker)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One unary call: ``service.method(request)``, its reply turned into ``T`` by ``convert``."""

    service: Service
    method: str
    request: Message
    convert: Callable[[Any], T]
    needs_token: bool = False


@dataclass(frozen=True)
class Connection:
    """Where the gateway is and how to talk to it: every option given, else from the settings (``DIGITS_*``)."""

    target: str
    tls: bool
    root_certificates: bytes | None
    token: str | None
    timeout: float
    max_batch_items: int
    max_batch_bytes: int

    @classmethod
    def resolve(cls, target: str | None = None, *, tls_ca_file: str | os.PathLike[str] | None = None,
                insecure: bool | None = None, token: str | None = None, timeout: float | None = None,
                settings: ClientSettings | None = None) -> Connection:
        settings = settings or get_client_settings()
        target = target or settings.gateway
        # A choice made here wins over the settings': insecure=True leaves DIGITS_TLS_CA_FILE aside, a CA file
        # DIGITS_INSECURE. The same level saying both is a contradiction.
        ca_file = tls_ca_file if tls_ca_file is not None else (None if insecure else settings.tls_ca_file)
        if insecure is None and tls_ca_file is None:
            insecure = settings.insecure
        if insecure and ca_file is not None:
            raise ValueError("insecure (plaintext) and a TLS CA file contradict each other: choose one")
        # Plaintext only when asked, or to this machine: a token never crosses a network in the clear by default.
        tls = not insecure if insecure is not None else (ca_file is not None or not is_loopback(target))
        if token is None:
            secret = settings.token if settings.token is not None else settings.admin_token
            token = secret.get_secret_value() or None
        return cls(
            target=target, tls=tls, root_certificates=Path(ca_file).read_bytes() if ca_file is not None else None,
            token=token, timeout=timeout if timeout is not None else settings.client_timeout_seconds,
            max_batch_items=settings.max_batch_items, max_batch_bytes=settings.max_message_bytes,
        )

    def credentials(self) -> grpc.ChannelCredentials | None:
        """The TLS credentials (None: plaintext)."""
        return grpc.ssl_channel_credentials(root_certificates=self.root_certificates) if self.tls else None

    @property
    def options(self) -> list[tuple[str, int]]:
        return [("grpc.max_send_message_length", self.max_batch_bytes),
                ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)]

    def metadata(self, call: Call[Any]) -> tuple[tuple[str, str], ...]:
        """The bearer token, on the calls that need one only."""
        return (("authorization", f"Bearer {self.token}"),) if call.needs_token and self.token else ()

    def not_reachable(self, waited: float) -> UnavailableError:
        return UnavailableError(f"the gateway at {self.target} did not accept a connection within {waited:g} s",
                                grpc.StatusCode.UNAVAILABLE)


class Connected(Generic[ChannelT]):
    """What both clients hold: the resolved ``connection``, a channel (sync or asyncio) and the stubs on it."""

    def __init__(self, target: str | None = None, *, tls_ca_file: str | os.PathLike[str] | None = None,
                 insecure: bool | None = None, token: str | None = None, timeout: float | None = None,
                 settings: ClientSettings | None = None) -> None:
        self.connection = Connection.resolve(target, tls_ca_file=tls_ca_file, insecure=insecure, token=token,
                                             timeout=timeout, settings=settings)
        self._channel: ChannelT = self._open(self.connection.target, self.connection.credentials(),
                                             self.connection.options)
        self._stubs: dict[Service, Any] = {
            "recognizer": recognizer_pb2_grpc.RecognizerStub(self._channel),
            "models": models_pb2_grpc.ModelsStub(self._channel),
            "training": training_pb2_grpc.TrainingStub(self._channel),
            "feedback": feedback_pb2_grpc.FeedbackStub(self._channel),
        }

    def _open(self, target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, int]]
              ) -> ChannelT:
        raise NotImplementedError


def is_loopback(target: str) -> bool:
    """Whether a gRPC target names this machine (127.0.0.0/8, ::1, localhost, a unix socket)."""
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    address = target.split("///", 1)[-1] if "///" in target else target
    address = address.removeprefix("ipv4:").removeprefix("ipv6:").removeprefix("dns:")
    hosts = [_host(part) for part in address.split(",")]
    return bool(hosts) and all(_loopback_host(h) for h in hosts)


def _host(address: str) -> str:
    if address.startswith("["):  # [::1]:50051
        return address[1:].partition("]")[0]
    if address.count(":") > 1:  # a bare IPv6 address
        return address
    return address.rpartition(":")[0] if ":" in address else address


def _loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- Recognizer ------------------------------------------------------------------------------------------------

def predict(image: ImageInput, *, return_model_input: bool = False) -> Call[types.Prediction]:
    request = predict_request(image)
    request.return_model_input = return_model_input
    return Call("recognizer", "Predict", request, types.prediction)


def predict_batches(images: Iterable[ImageInput] | np.ndarray[Any, Any], *, max_items: int, max_bytes: int,
                    return_model_input: bool = False) -> Iterator[Call[list[types.Prediction]]]:
    """PredictBatch calls of at most ``max_items`` images and about ``max_bytes`` each, in the images' order.

    A numpy array of shape (N, 784) or (N, 28, 28) is N digits; an image larger than ``max_bytes`` goes alone
    (the server says it is too large).
    """
    batch: list[recognizer_pb2.PredictRequest] = []
    size = 0
    for item in _items(images):
        request = predict_request(item)
        request.return_model_input = return_model_input
        item_size = request.ByteSize() + _ITEM_OVERHEAD_BYTES
        if batch and (len(batch) >= max_items or size + item_size > max_bytes):
            yield _batch_call(batch)
            batch, size = [], 0
        batch.append(request)
        size += item_size
    if batch:
        yield _batch_call(batch)


def _batch_call(batch: list[recognizer_pb2.PredictRequest]) -> Call[list[types.Prediction]]:
    return Call("recognizer", "PredictBatch", recognizer_pb2.PredictBatchRequest(requests=batch), types.predictions)


def _items(images: Iterable[ImageInput] | np.ndarray[Any, Any]) -> Iterable[ImageInput]:
    if isinstance(images, np.ndarray):
        if images.ndim == 1 or images.shape == SHAPE:
            raise InvalidInputError(f"an array of shape {images.shape} is one digit: use predict(), not "
                                    "predict_many()")
        return list(pixel_rows(images))
    if isinstance(images, str | bytes | bytearray | memoryview | os.PathLike):
        raise InvalidInputError("predict_many() takes many images (a list, or an array of N digits); "
                                "predict() takes one")
    return images


def predict_request(image: ImageInput) -> recognizer_pb2.PredictRequest:
    """A PredictRequest for a file path, encoded image bytes, or one digit's pixels."""
    if isinstance(image, np.ndarray):
        rows = pixel_rows(image)
        if len(rows) != 1:
            raise InvalidInputError(f"an array of shape {image.shape} holds {len(rows)} digits: use predict_many()")
        return recognizer_pb2.PredictRequest(pixels=recognizer_pb2.Pixels(values=rows[0].tolist()))
    if isinstance(image, bytes | bytearray | memoryview):
        return recognizer_pb2.PredictRequest(image=bytes(image))
    if isinstance(image, str | os.PathLike):
        return recognizer_pb2.PredictRequest(image=Path(image).read_bytes())
    raise InvalidInputError(f"cannot read a digit from a {type(image).__name__}: give a file path, image bytes "
                            "or a numpy array of pixels")


def pixel_rows(pixels: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Digits as rows of 784 float32 values: from (784,), (28, 28), (N, 784) or (N, 28, 28)."""
    shape = pixels.shape
    if shape in ((N_PIXELS,), SHAPE):
        return pixels.reshape(1, N_PIXELS).astype(np.float32)
    if (len(shape) == 2 and shape[1] == N_PIXELS) or (len(shape) == 3 and shape[1:] == SHAPE):
        return pixels.reshape(shape[0], N_PIXELS).astype(np.float32)
    raise InvalidInputError(f"pixels must have shape (784,), (28, 28), (N, 784) or (N, 28, 28), not {shape}")


# -- Models ----------------------------------------------------------------------------------------------------

def list_models(limit: int = 0) -> Call[types.ModelList]:
    return Call("models", "ListModels", models_pb2.ListModelsRequest(limit=limit), types.model_list)


def get_model(version: str) -> Call[types.Model]:
    return Call("models", "GetModel", models_pb2.GetModelRequest(version=version), types.model)


def activate(version: str, reason: str = "") -> Call[types.Activation]:
    return Call("models", "ActivateModel", models_pb2.ActivateModelRequest(version=version, reason=reason),
                types.activation, needs_token=True)


def rollback(reason: str = "") -> Call[types.Activation]:
    return Call("models", "Rollback", models_pb2.RollbackRequest(reason=reason), types.activation, needs_token=True)


def pin(version: str, pinned: bool) -> Call[types.Model]:
    return Call("models", "PinModel", models_pb2.PinModelRequest(version=version, pinned=pinned), types.model,
                needs_token=True)


def history(limit: int = 0) -> Call[list[types.Promotion]]:
    return Call("models", "ListPromotions", models_pb2.ListPromotionsRequest(limit=limit), types.promotions)


# -- Training --------------------------------------------------------------------------------------------------

def retrain(options: RetrainOptions) -> Call[types.Job]:
    fields: dict[str, Any] = {k: v for k, v in options.items() if k != "params"}
    fields["candidates"] = list(options.get("candidates", ()))
    if options.get("params"):
        fields["params_json"] = json.dumps(options["params"])
    return Call("training", "Retrain", training_pb2.RetrainRequest(**fields), types.job, needs_token=True)


def list_jobs(limit: int = 0) -> Call[list[types.Job]]:
    return Call("training", "ListJobs", training_pb2.ListJobsRequest(limit=limit), types.jobs, needs_token=True)


def get_job(job_id: str) -> Call[types.Job]:
    return Call("training", "GetJob", training_pb2.GetJobRequest(id=job_id), types.job, needs_token=True)


def cancel_job(job_id: str) -> Call[types.Job]:
    return Call("training", "CancelJob", training_pb2.GetJobRequest(id=job_id), types.job, needs_token=True)


def watch_job(job_id: str) -> Call[types.Job]:
    """A server stream: each reply is one state of the job, the last one its end."""
    return Call("training", "WatchJob", training_pb2.GetJobRequest(id=job_id), types.job, needs_token=True)


# -- Feedback ----------------------------------------------------------------------------------------------------

def correct(prediction_id: str, digit: int | None) -> Call[types.Correction]:
    """Says what prediction ``prediction_id`` really was: ``digit`` 0 to 9, or None for "not a digit". Anyone holding
    the id may; no token is sent."""
    if digit is None:
        request = feedback_pb2.CorrectRequest(prediction_id=prediction_id, not_a_digit=True)
    elif isinstance(digit, int) and not isinstance(digit, bool) and 0 <= digit <= 9:
        request = feedback_pb2.CorrectRequest(prediction_id=prediction_id, digit=digit)
    else:
        raise InvalidInputError(f"the true digit is a whole number from 0 to 9 (or None: not a digit), not {digit!r}")
    return Call("feedback", "Correct", request, types.correction)


def list_corrections(status: str = "", limit: int = 0) -> Call[types.CorrectionList]:
    return Call("feedback", "ListCorrections", feedback_pb2.ListCorrectionsRequest(status=status, limit=limit),
                types.correction_list, needs_token=True)


def get_correction(prediction_id: str) -> Call[types.Correction]:
    return Call("feedback", "GetCorrection", feedback_pb2.GetCorrectionRequest(prediction_id=prediction_id),
                types.correction, needs_token=True)


def review_correction(prediction_id: str, accept: bool) -> Call[types.Correction]:
    return Call("feedback", "ReviewCorrection",
                feedback_pb2.ReviewCorrectionRequest(prediction_id=prediction_id, accept=accept), types.correction,
                needs_token=True)


def delete_correction(prediction_id: str) -> Call[str]:
    return Call("feedback", "DeleteCorrection", feedback_pb2.GetCorrectionRequest(prediction_id=prediction_id),
                types.deleted, needs_token=True)
