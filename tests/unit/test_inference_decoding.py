"""Decoding requests into rows within a budget: limits by declared pixels, errors naming the item, reservations
released whatever happens."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image, ImageDraw

from digits.errors import DigitsError, InvalidInput, Overloaded, TooLarge
from digits.modelling.imaging import Reading
from digits.settings import Settings
from digits.v1 import recognizer_pb2 as pb
from services.inference.decoding import Decoder

SIDE = 100  # each test image declares 100 x 100 = 10,000 pixels


def _png(side: int = SIDE) -> bytes:
    image = Image.new("L", (side, side), 255)
    ImageDraw.Draw(image).line([(side // 2, side // 5), (side // 2, 4 * side // 5)], fill=0, width=side // 10)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def image(side: int = SIDE) -> pb.PredictRequest:
    return pb.PredictRequest(image=_png(side))


def pixels(value: float = 0.0) -> pb.PredictRequest:
    return pb.PredictRequest(pixels=pb.Pixels(values=[value] * 784))


def pixel_bytes(value: int = 0) -> pb.PredictRequest:
    return pb.PredictRequest(pixel_bytes=bytes([value]) * 784)


@pytest.fixture
def decoder() -> Iterator[Decoder]:
    settings = Settings(max_image_pixels=40_000, max_batch_pixels=30_000, decode_pixels_in_flight=50_000)
    made = Decoder(settings)
    yield made
    made.close()


def test_every_kind_of_input_becomes_its_784_pixels_in_order(decoder: Decoder) -> None:
    readings = asyncio.run(decoder.rows([pixels(7.0), image(), pixel_bytes(9), image()], batch=True))
    rows = [reading.row for reading in readings]
    assert [row.shape for row in rows] == [(784,)] * 4
    assert np.all(rows[0] == 7.0) and np.all(rows[2] == 9.0)
    assert np.array_equal(rows[1], rows[3]) and rows[1].max() == pytest.approx(255.0)  # a read digit, not zeros
    assert decoder._in_flight == 0


def test_a_request_without_input_is_invalid(decoder: Decoder) -> None:
    with pytest.raises(InvalidInput, match="has no input"):
        asyncio.run(decoder.rows([pb.PredictRequest()], batch=False))


def test_batch_errors_name_the_item_and_single_ones_do_not(decoder: Decoder) -> None:
    bad = pb.PredictRequest(pixel_bytes=b"\0" * 10)
    with pytest.raises(InvalidInput, match=r"^item 1: expected 784 pixel bytes"):
        asyncio.run(decoder.rows([pixels(), bad, image()], batch=True))
    with pytest.raises(InvalidInput, match=r"^expected 784 pixel bytes"):
        asyncio.run(decoder.rows([bad], batch=False))
    with pytest.raises(InvalidInput, match=r"^item 2: "):  # an undecodable image, found while decoding in parallel
        asyncio.run(decoder.rows([image(), image(), pb.PredictRequest(image=b"\x89PNG not really")], batch=True))
    assert decoder._in_flight == 0


def test_an_image_over_the_pixel_limit_is_too_large_before_anything_is_decoded(decoder: Decoder) -> None:
    with pytest.raises(TooLarge, match="item 1: "):
        asyncio.run(decoder.rows([image(), image(side=300)], batch=True))  # 90,000 > 40,000 pixels


def test_a_batch_over_its_pixel_budget_is_too_large(decoder: Decoder) -> None:
    asyncio.run(decoder.rows([image()] * 3, batch=True))  # 30,000 pixels: at the limit
    with pytest.raises(TooLarge, match="40,000 pixels; the limit is 30,000"):
        asyncio.run(decoder.rows([image()] * 4, batch=True))
    # Pixels sent as values cost no decoding: they never count.
    asyncio.run(decoder.rows([image()] * 3 + [pixels()] * 5, batch=True))


def test_past_the_pixels_in_flight_calls_are_overloaded_and_the_budget_comes_back(decoder: Decoder) -> None:
    decoder._in_flight = 45_000  # others' images being decoded
    with pytest.raises(Overloaded, match="45,000 pixels"):
        asyncio.run(decoder.rows([image()], batch=False))
    assert asyncio.run(decoder.rows([pixels()], batch=False))[0].row.shape == (784,)  # no image: never refused
    decoder._in_flight = 40_000
    asyncio.run(decoder.rows([image()], batch=False))  # exactly at capacity
    assert decoder._in_flight == 40_000


def test_each_item_stands_alone_in_rows_each(decoder: Decoder) -> None:
    decoder._in_flight = 35_000  # room for one more image
    out = asyncio.run(decoder.rows_each([image(), pixels(1.0), pb.PredictRequest(), pixel_bytes(2)]))
    assert isinstance(out[0], Reading) and out[0].row.shape == (784,)
    assert isinstance(out[1], Reading) and np.all(out[1].row == 1.0)
    assert isinstance(out[2], InvalidInput) and "item" not in str(out[2])
    assert isinstance(out[3], Reading) and np.all(out[3].row == 2.0)
    out = asyncio.run(decoder.rows_each([image(), pixel_bytes(b"x"[0]), image(side=300)]))
    assert isinstance(out[0], Reading) and isinstance(out[1], Reading)
    assert isinstance(out[2], DigitsError) and isinstance(out[2], TooLarge)
    assert decoder._in_flight == 35_000


def test_a_calls_only_small_image_is_decoded_on_the_loop_and_the_others_on_the_pool(
    decoder: Decoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from digits.modelling import imaging

    read = imaging.read_picture
    threads: list[int] = []

    def recording(data: bytes, **limits: int) -> Reading:
        threads.append(threading.get_ident())
        return read(data, **limits)

    monkeypatch.setattr(imaging, "read_picture", recording)
    loop_thread = threading.get_ident()  # asyncio.run runs the loop on this thread
    asyncio.run(decoder.rows([image(28)], batch=False))  # 784 pixels, alone: inline
    asyncio.run(decoder.rows([image(SIDE), pixels()], batch=True))  # 10,000 pixels, alone: inline
    assert threads == [loop_thread, loop_thread]
    asyncio.run(decoder.rows([image(150)], batch=False))  # 22,500 pixels: the pool
    asyncio.run(decoder.rows_each([image(28), image(28)]))  # two images in one call: the pool, in parallel
    assert loop_thread not in threads[2:] and len(threads) == 5
