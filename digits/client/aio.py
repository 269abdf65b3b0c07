"""``AsyncClient``: the gateway's gRPC API for asyncio; the same calls as ``Client``, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar, Unpack

import grpc
import numpy as np

from digits.client import calls, types
from digits.client.calls import Call, Connected, ImageInput, RetrainOptions
from digits.client.errors import from_rpc_error

T = TypeVar("T")


class AsyncClient(Connected[grpc.aio.Channel]):
    """``Client`` for asyncio: the same options, methods and errors; each call is a coroutine and ``watch`` an
    async iterator. Use it as an async context manager, or ``await close()``."""

    def _open(self, target: str, credentials: grpc.ChannelCredentials | None, options: list[tuple[str, int]]
              ) -> grpc.aio.Channel:
        if credentials is None:
            return grpc.aio.insecure_channel(target, options)
        return grpc.aio.secure_channel(target, credentials, options)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def wait_until_ready(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except TimeoutError:
            raise self.connection.not_reachable(timeout) from None

    async def predict(self, image: ImageInput, *, return_model_input: bool = False) -> types.Prediction:
        return await self._call(calls.predict(image, return_model_input=return_model_input))

    async def predict_many(self, images: Iterable[ImageInput] | np.ndarray[Any, Any], *,
                           return_model_input: bool = False) -> list[types.Prediction]:
        batches = calls.predict_batches(images, max_items=self.connection.max_batch_items,
                                        max_bytes=self.connection.max_batch_bytes,
                                        return_model_input=return_model_input)
        return [answer for batch in batches for answer in await self._call(batch)]

    async def models(self, limit: int = 0) -> types.ModelList:
        return await self._call(calls.list_models(limit))

    async def model(self, version: str) -> types.Model:
        return await self._call(calls.get_model(version))

    async def activate(self, version: str, reason: str = "") -> types.Activation:
        return await self._call(calls.activate(version, reason))

    async def rollback(self, reason: str = "") -> types.Activation:
        return await self._call(calls.rollback(reason))

    async def pin(self, version: str) -> types.Model:
        return await self._call(calls.pin(version, True))

    async def unpin(self, version: str) -> types.Model:
        return await self._call(calls.pin(version, False))

    async def history(self, limit: int = 0) -> list[types.Promotion]:
        return await self._call(calls.history(limit))

    async def retrain(self, **options: Unpack[RetrainOptions]) -> types.Job:
        return await self._call(calls.retrain(options))

    async def jobs(self, limit: int = 0) -> list[types.Job]:
        return await self._call(calls.list_jobs(limit))

    async def job(self, job_id: str) -> types.Job:
        return await self._call(calls.get_job(job_id))

    async def cancel(self, job_id: str) -> types.Job:
        return await self._call(calls.cancel_job(job_id))

    async def watch(self, job_id: str, timeout: float | None = None) -> AsyncIterator[types.Job]:
        call = calls.watch_job(job_id)
        stream = self._stubs[call.service].WatchJob(call.request, metadata=self.connection.metadata(call),
                                                    timeout=timeout)
        try:
            async for reply in stream:
                yield call.convert(reply)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        finally:
            stream.cancel()

    async def wait(self, job_id: str, timeout: float | None = None,
                   on_progress: Callable[[types.Job], None] | None = None) -> types.Job:
        last = None
        async for last in self.watch(job_id, timeout):
            if on_progress is not None:
                on_progress(last)
        return last if last is not None else await self.job(job_id)

    async def correct(self, prediction_id: str, digit: int | None) -> types.Correction:
        return await self._call(calls.correct(prediction_id, digit))

    async def corrections(self, status: str = "", limit: int = 0) -> types.CorrectionList:
        return await self._call(calls.list_corrections(status, limit))

    async def correction(self, prediction_id: str) -> types.Correction:
        return await self._call(calls.get_correction(prediction_id))

    async def accept(self, prediction_id: str) -> types.Correction:
        return await self._call(calls.review_correction(prediction_id, True))

    async def reject(self, prediction_id: str) -> types.Correction:
        return await self._call(calls.review_correction(prediction_id, False))

    async def delete_correction(self, prediction_id: str) -> str:
        return await self._call(calls.delete_correction(prediction_id))

    async def _call(self, call: Call[T]) -> T:
        method = getattr(self._stubs[call.service], call.method)
        try:
            reply = await method(call.request, metadata=self.connection.metadata(call), timeout=self.connection.timeout)
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error) from None
        return call.convert(reply)
