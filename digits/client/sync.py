"""``Client``: the gateway's gRPC API as blocking calls."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, TypeVar, Unpack

import grpc
import numpy as np

from digits.client import calls, types
from digits.client.calls import Call, Connected, ImageInput, RetrainOptions
from digits.client.errors import from_rpc_error

T = TypeVar("T")


class Client(Connected[grpc.Channel]):
    """A connection to a Digits gateway. Every option left out comes from the settings (``DIGITS_GATEWAY``,
    ``DIGITS_TLS_CA_FILE``, ``DIGITS_INSECURE``, ``DIGITS_TOKEN``, ``DIGITS_CLIENT_TIMEOUT_SECONDS``).

    ``insecure=True`` speaks plaintext; a ``tls_ca_file`` speaks TLS verified by those CAs; neither: TLS with the
    system's CAs, except to a loopback address. Failed calls raise ``digits.client.DigitsClientError`` subclasses.
    Use it as a context manager, or ``close()`` it.
    """

    def _open(self, target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, int]]
              ) -> grpc.Channel:
        if credentials is None:
            return grpc.insecure_channel(target, options)
        return grpc.secure_channel(target, credentials, options)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def wait_until_ready(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the gateway to accept a connection (UnavailableError if it does not)."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise self.connection.not_reachable(timeout) from None

    # -- Recognizer ------------------------------------------------------------------------------------------------

    def predict(self, image: ImageInput, *, return_model_input: bool = False) -> types.Prediction:
        """The digit in one image: a file path, encoded image bytes (PNG, JPEG, BMP, GIF, WebP) or a numpy array of
        784 or 28x28 pixels (0-255, light ink on dark, as in MNIST)."""
        return self._call(calls.predict(image, return_model_input=return_model_input))

    def predict_many(self, images: Iterable[ImageInput] | np.ndarray[Any, Any], *,
                     return_model_input: bool = False) -> list[types.Prediction]:
        """The digits in many images, in order: PredictBatch calls of at most the server's batch limit
        (``DIGITS_MAX_BATCH_ITEMS``) each. An array of shape (N, 784) or (N, 28, 28) is N digits. If one image is
        invalid, its batch fails with ``InvalidInputError`` naming the item."""
        batches = calls.predict_batches(images, max_items=self.connection.max_batch_items,
                                        max_bytes=self.connection.max_batch_bytes,
                                        return_model_input=return_model_input)
        return [answer for batch in batches for answer in self._call(batch)]

    # -- Models ----------------------------------------------------------------------------------------------------

    def models(self, limit: int = 0) -> types.ModelList:
        """The versions (newest first), the active one, and what each inference replica serves."""
        return self._call(calls.list_models(limit))

    def model(self, version: str) -> types.Model:
        """One version with its figures and its training report."""
        return self._call(calls.get_model(version))

    def activate(self, version: str, reason: str = "") -> types.Activation:
        return self._call(calls.activate(version, reason))

    def rollback(self, reason: str = "") -> types.Activation:
        """Back to the version the active one replaced."""
        return self._call(calls.rollback(reason))

    def pin(self, version: str) -> types.Model:
        """Retention never prunes a pinned version."""
        return self._call(calls.pin(version, True))

    def unpin(self, version: str) -> types.Model:
        return self._call(calls.pin(version, False))

    def history(self, limit: int = 0) -> list[types.Promotion]:
        """Every activation and rollback, most recent first."""
        return self._call(calls.history(limit))

    # -- Training --------------------------------------------------------------------------------------------------

    def retrain(self, **options: Unpack[RetrainOptions]) -> types.Job:
        """Enqueue a retrain job; ``watch`` or ``wait`` follows it."""
        return self._call(calls.retrain(options))

    def jobs(self, limit: int = 0) -> list[types.Job]:
        return self._call(calls.list_jobs(limit))

    def job(self, job_id: str) -> types.Job:
        return self._call(calls.get_job(job_id))

    def cancel(self, job_id: str) -> types.Job:
        return self._call(calls.cancel_job(job_id))

    def watch(self, job_id: str, timeout: float | None = None) -> Iterator[types.Job]:
        """The job each time it changes, until it ends (or ``timeout`` seconds pass: DeadlineExceededError)."""
        call = calls.watch_job(job_id)
        stream = self._stubs[call.service].WatchJob(call.request, metadata=self.connection.metadata(call),
                                                    timeout=timeout)
        try:
            for reply in stream:
                yield call.convert(reply)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            stream.cancel()

    def wait(self, job_id: str, timeout: float | None = None,
             on_progress: Callable[[types.Job], None] | None = None) -> types.Job:
        """Follow a job to its end and return it as it ended; ``on_progress`` sees every state on the way."""
        last = None
        for last in self.watch(job_id, timeout):
            if on_progress is not None:
                on_progress(last)
        return last if last is not None else self.job(job_id)

    # -- Feedback --------------------------------------------------------------------------------------------------

    def correct(self, prediction_id: str, digit: int | None) -> types.Correction:
        """Say what a prediction really was: ``digit`` 0 to 9, or None for "not a digit". It waits for an admin's
        review (unless the gateway accepts corrections as they come)."""
        return self._call(calls.correct(prediction_id, digit))

    def corrections(self, status: str = "", limit: int = 0) -> types.CorrectionList:
        """The newest corrections (``status``: pending, accepted, rejected; "" for all) and how many there are."""
        return self._call(calls.list_corrections(status, limit))

    def correction(self, prediction_id: str) -> types.Correction:
        """One correction, with the 784 bytes the model saw."""
        return self._call(calls.get_correction(prediction_id))

    def accept(self, prediction_id: str) -> types.Correction:
        """Accept a correction into the `corrections` data set."""
        return self._call(calls.review_correction(prediction_id, True))

    def reject(self, prediction_id: str) -> types.Correction:
        return self._call(calls.review_correction(prediction_id, False))

    def delete_correction(self, prediction_id: str) -> str:
        """Forget a correction, whatever its status (room for new ones)."""
        return self._call(calls.delete_correction(prediction_id))

    def _call(self, call: Call[T]) -> T:
        method = getattr(self._stubs[call.service], call.method)
        try:
            reply = method(call.request, metadata=self.connection.metadata(call), timeout=self.connection.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return call.convert(reply)
