"""Turning requests into the rows the model reads, within a bounded budget of decoding work.

Decoding an image costs memory and time in proportion to its pixels, so a replica admits images by the pixels
their headers declare (a cheap parse, before anything is decoded): one image at most ``max_image_pixels``, one
batch at most ``max_batch_pixels``, and everything queued or being decoded at most ``pixels_in_flight``. Past
that the call is refused at once as overloaded (the caller may retry), instead of queueing without bound: a flood
of huge images cannot push a replica past its memory limit, and callers sending pixels are not held up by it.

Decoding runs on a small thread pool (Pillow releases the GIL), except for a call's only image when it is small:
a 28x28 PNG decodes in ~0.2 ms, less than handing it to a thread and back costs a lone request, so it is decoded
on the event loop. In a batch, the first item that fails cancels the decodes still queued for the others.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
from prometheus_client import Counter

from digits.errors import DigitsError, InvalidInput, Overloaded, TooLarge
from digits.modelling import imaging, marks
from digits.settings import Settings
from digits.v1 import recognizer_pb2 as pb

Row = npt.NDArray[np.float32]
Reading = imaging.Reading
DECODE_THREADS = 2
# A call's only image is decoded on the event loop up to this many declared pixels (a 128x128 picture; a
# 28x28 digit is 784): its decode costs less than the hand-off to a thread, and blocks the loop for well under
# a millisecond.
INLINE_DECODE_PIXELS = 128 * 128
DECODED = Counter("digits_images_decoded_total", "Images this replica decoded (or tried to), read from their bytes.")


class Decoder:
    def __init__(self, settings: Settings) -> None:
        self._max_bytes = settings.max_image_bytes
        self._max_pixels = settings.max_image_pixels
        self._max_batch_pixels = settings.max_batch_pixels
        self._capacity = settings.decode_pixels_in_flight
        self._in_flight = 0
        self._pool = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="decode")

    async def rows(self, items: Sequence[pb.PredictRequest], *, batch: bool, alone: bool = True) -> list[Reading]:
        """The 784 pixels the model reads for each request, and its marks of ink, in order; errors name the batch
        item. ``alone``: no other image of the same call is being decoded, so a small one may be decoded on the
        loop."""
        with self._reserved(items, batch=batch) as declared:
            images = sum(1 for pixels in declared if pixels)
            if images <= 1:  # nothing to overlap: no tasks
                inline = alone and sum(declared) <= INLINE_DECODE_PIXELS
                return [await self._row(item, index if batch else None, inline=inline)
                        for index, item in enumerate(items)]
            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(self._row(item, index)) for index, item in enumerate(items)]
            except BaseExceptionGroup as failed:
                raise failed.exceptions[0] from None
            return [task.result() for task in tasks]

    async def rows_each(self, items: Sequence[pb.PredictRequest]) -> list[Reading | DigitsError]:
        """Each request's row, or why it has none: the items stand alone (a bad or refused one fails only itself)."""

        alone = sum(item.WhichOneof("input") == "image" for item in items) <= 1

        async def one(item: pb.PredictRequest) -> Reading | DigitsError:
            try:
                return (await self.rows([item], batch=False, alone=alone))[0]
            except DigitsError as error:
                return error

        if alone:
            return [await one(item) for item in items]
        return list(await asyncio.gather(*(one(item) for item in items)))

    @contextlib.contextmanager
    def _reserved(self, items: Sequence[pb.PredictRequest], *, batch: bool) -> Iterator[list[int]]:
        """Admit the items' images by their declared pixels; yields each item's (0 for pixels)."""
        declared = [self._declared(item, index if batch else None) for index, item in enumerate(items)]
        pixels = sum(declared)
        if batch and pixels > self._max_batch_pixels:
            raise TooLarge(f"the batch's images declare {pixels:,} pixels; the limit is {self._max_batch_pixels:,}")
        if pixels and self._in_flight + pixels > self._capacity:
            raise Overloaded(f"this replica is decoding {self._in_flight:,} pixels of images already; retry shortly")
        self._in_flight += pixels
        try:
            yield declared
        finally:
            self._in_flight -= pixels

    def _declared(self, item: pb.PredictRequest, index: int | None) -> int:
        if item.WhichOneof("input") != "image":
            return 0
        with _naming(index):
            return imaging.declared_pixels(item.image, max_bytes=self._max_bytes, max_pixels=self._max_pixels)

    async def _row(self, item: pb.PredictRequest, index: int | None, *, inline: bool = False) -> Reading:
        with _naming(index):
            which = item.WhichOneof("input")
            if which == "image" and inline:
                return self._decode(item.image)
            if which == "image":
                return await asyncio.get_running_loop().run_in_executor(self._pool, self._decode, item.image)
            if which == "pixels":
                return _counted(imaging.pixels_to_image(item.pixels.values))
            if which == "pixel_bytes":
                return _counted(imaging.pixel_bytes_to_image(item.pixel_bytes))
            raise InvalidInput("the request has no input: set `image` (encoded image bytes), `pixels` (784 values) "
                               "or `pixel_bytes` (784 bytes)")

    def _decode(self, data: bytes) -> Reading:
        DECODED.inc()
        return imaging.read_picture(data, max_bytes=self._max_bytes, max_pixels=self._max_pixels)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _counted(row: Row) -> Reading:
    """Pixels sent as they are: their marks of ink are counted on the 28x28 field itself."""
    return Reading(row, marks.digit_sized(row.reshape(28, 28)))


@contextlib.contextmanager
def _naming(index: int | None) -> Iterator[None]:
    """Prefix a refusal with the batch item it is about."""
    try:
        yield
    except (InvalidInput, TooLarge) as error:
        if index is None:
            raise
        raise type(error)(f"item {index}: {error}") from error
