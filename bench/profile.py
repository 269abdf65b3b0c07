"""Where an in-process prediction spends its time: cProfile of the fast path, and its stages timed one by one.

The stages repeat what ``FastSVC`` does (digits/modelling/fastsvc.py), step by step, on the same arrays, so their sum
should come close to one ``DigitModel.predict`` call; cProfile cannot split them because matrix products and
ufuncs run inside one Python function (``_kernel``) and are charged to it.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from digits.modelling.model import DigitModel

Pixels = npt.NDArray[np.float32]


def _median_ms(step: Callable[[], object], seconds: float) -> float:
    """The median over calls repeated for ``seconds`` (at least 5); the minimum is kept in ``MINIMA``."""
    samples: list[float] = []
    until = time.perf_counter() + seconds
    while time.perf_counter() < until or len(samples) < 5:
        started = time.perf_counter()
        step()
        samples.append((time.perf_counter() - started) * 1000.0)
    _last_min[0] = min(samples)
    return statistics.median(samples)


_last_min = [0.0]


def _timed(step: Callable[[], object], seconds: float) -> dict[str, float]:
    median = _median_ms(step, seconds)
    return {"median_ms": median, "min_ms": _last_min[0]}


def stages(model: DigitModel, rows: Pixels, seconds: float = 0.5) -> dict[str, dict[str, float]]:
    """Median and minimum milliseconds of each step of one fast-path call on ``rows``, of the whole call, and of
    sklearn's predict on the same rows. The minimum is the closest to the cost on an otherwise idle machine."""
    fast: Any = model._fast
    if fast is None:
        return {}
    svc = fast.model
    x = np.ascontiguousarray(fast.transform(rows), dtype=np.float32)
    dec = svc._libsvm_decision(x)
    scores = svc._ovr_scores(dec)
    timings = {
        "steps before the SVC (scale; svc-grad: gradient features)": _timed(
            lambda: np.isfinite(np.ascontiguousarray(fast.transform(rows), dtype=np.float32)).all(), seconds),
        "GEMM x . SV^T (float32)": _timed(lambda: x @ svc._sv.T, seconds),
        "RBF kernel, whole (GEMM + norms + exp)": _timed(lambda: svc._kernel(x), seconds),
        "RBF kernel + pair sums (one-vs-one decisions)": _timed(lambda: svc._libsvm_decision(x), seconds),
        "votes + ovr scores": _timed(lambda: (svc._labels_from_decisions(dec), svc._ovr_scores(dec)), seconds),
        "softmax": _timed(lambda: model._softmax(scores), seconds),
        "whole predict": _timed(lambda: model.predict(rows), seconds),
        "sklearn predict (libsvm), same rows": _timed(lambda: model.estimator.predict(rows), seconds),
    }
    return timings


def inputs(pixels: Pixels, png: bytes, seconds: float = 0.5) -> dict[str, dict[str, float]]:
    """What inference pays to turn one request's payload into the model's row, per kind of payload."""
    from digits.modelling import imaging
    from digits.settings import Settings

    settings = Settings()
    as_bytes = pixels.astype(np.uint8).tobytes()
    as_floats = pixels.tolist()
    return {
        "28x28 PNG: imaging.read_image": _timed(lambda: imaging.read_image(
            png, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels), seconds),
        "784 bytes: imaging.pixel_bytes_to_image": _timed(lambda: imaging.pixel_bytes_to_image(as_bytes), seconds),
        "784 floats: imaging.pixels_to_image": _timed(lambda: imaging.pixels_to_image(as_floats), seconds),
    }


def cprofile(predict: Callable[[Pixels], object], rows: Pixels, seconds: float, top: int = 18) -> str:
    """cProfile of ``predict(rows)`` called back to back for ``seconds``, sorted by own time."""
    profiler = cProfile.Profile()
    calls = 0
    until = time.perf_counter() + seconds
    profiler.enable()
    while time.perf_counter() < until:
        predict(rows)
        calls += 1
    profiler.disable()
    out = io.StringIO()
    out.write(f"{calls} calls on {len(rows)} row(s)\n")
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(top)
    return out.getvalue()


class _Fixed:
    """A ModelFollower stand-in that always holds one model."""

    def __init__(self, loaded: Any) -> None:
        self._loaded = loaded

    def require(self) -> Any:
        return self._loaded


async def inference_event_loop(model: DigitModel, requests: list[bytes], concurrency: int, seconds: float) -> str:
    """cProfile of one event loop running the real inference Recognizer (server.py, batching.py, the interceptor)
    and a closed-loop gRPC client at ``concurrency``; the model thread is not profiled (cProfile sees one thread),
    so this is the per-request Python work that every request pays on the loop, around the model call."""
    import grpc
    from threadpoolctl import threadpool_limits

    from bench.stack import grpc_sender
    from digits.platform import rpc
    from digits.settings import Settings
    from digits.v1 import recognizer_pb2_grpc as pb_grpc
    from services.inference.active_model import Loaded
    from services.inference.batching import MicroBatcher
    from services.inference.decoding import Decoder
    from services.inference.server import Recognizer

    settings = Settings()
    threadpool_limits(settings.blas_threads)  # as inference sets it (many BLAS threads slow one row down)
    server = rpc.create_server(settings.max_message_bytes)
    batcher = MicroBatcher(settings.batch_max_size, settings.batch_max_wait_ms / 1000.0)
    recognizer = Recognizer(_Fixed(Loaded("bench", "", model)), batcher, Decoder(settings),  # type: ignore[arg-type]
                            settings)
    pb_grpc.add_RecognizerServicer_to_server(recognizer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    profiler = cProfile.Profile()
    answered = 0
    try:
        async with grpc_sender(f"127.0.0.1:{port}", requests) as send:

            async def worker(offset: int) -> None:
                nonlocal answered
                index = offset
                while time.perf_counter() < until:
                    await send(index % len(requests))
                    answered += 1
                    index += concurrency

            until = time.perf_counter() + 0.5  # warm-up, unprofiled
            await asyncio.gather(*(worker(i) for i in range(concurrency)))
            answered = 0
            until = time.perf_counter() + seconds
            profiler.enable()
            await asyncio.gather(*(worker(i) for i in range(concurrency)))
            profiler.disable()
    finally:
        await server.stop(None)
        await batcher.close()
    del grpc
    out = io.StringIO()
    out.write(f"{answered} requests at concurrency {concurrency} in {seconds:g}s (client and server on one loop)\n")
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(22)
    out.write("Server-side functions of the project, by cumulative time on the loop:\n")
    stats.sort_stats("cumulative").print_stats(r"server\.py|batching\.py|imaging\.py|rpc\.py|active_model", 14)
    return out.getvalue()
