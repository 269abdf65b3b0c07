"""Which model this replica serves, and how it follows the registry.

Activations arrive on ``digits:events``; the replica also re-reads ``digits:active`` every few seconds
so that a message missed during a reconnect is caught up. A new version is fetched, verified, unpickled,
prepared and warmed off the event loop; only then does one reference assignment make it current.
A request holds the ``Loaded`` it started with, so it runs wholly on that model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np
import redis
import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge

from digits.errors import DigitsError, Unavailable
from digits.model import DigitModel
from digits.registry import EVENTS_CHANNEL, Registry

log = logging.getLogger(__name__)

MODEL_INFO = Gauge("digits_model_info", "The model version this replica serves (value 1).", ["version"])
MODEL_SWAPS = Counter("digits_model_swaps_total", "Times this replica switched to another model version.")
MODEL_LOAD_FAILURES = Counter(
    "digits_model_load_failures_total", "Model versions this replica refused to serve, by reason.", ["reason"]
)


@dataclass(frozen=True)
class Loaded:
    version: str
    model: DigitModel


def load_and_warm(registry: Registry, version: str) -> Loaded:
    """Blocking: fetch, verify, unpickle, prepare and warm a version; raise if it cannot serve."""
    _, model = registry.load(version)
    if not isinstance(model, DigitModel):
        raise DigitsError(f"model {version} is a {type(model).__name__}, not a DigitModel")
    model.prepare()
    _, probabilities = model.predict(np.zeros((1, 784), dtype=np.float32))
    if probabilities.shape != (1, 10) or not np.isfinite(probabilities).all():
        raise DigitsError(f"model {version} answered a warm-up call with {probabilities.shape} probabilities")
    return Loaded(version, model)


class ModelFollower:
    def __init__(
        self,
        registry: Registry,
        redis_url: str,
        poll_seconds: float,
        on_swap: Callable[[Loaded], Awaitable[None]],
    ) -> None:
        self._registry = registry
        self._redis_url = redis_url
        self._poll_seconds = poll_seconds
        self._on_swap = on_swap
        self._refused: set[str] = set()
        self.current: Loaded | None = None

    def require(self) -> Loaded:
        loaded = self.current
        if loaded is None:
            raise Unavailable("no model is loaded yet; this replica is still starting")
        return loaded

    async def run(self) -> None:
        """Follow activations forever: wake on an event or after the poll interval, then catch up."""
        events = aioredis.Redis.from_url(self._redis_url, socket_connect_timeout=2.0)
        pubsub = events.pubsub(ignore_subscribe_messages=True)
        try:
            while True:
                await self._catch_up()
                await self._wait_for_event(pubsub)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                await events.aclose()

    async def _wait_for_event(self, pubsub: aioredis.client.PubSub) -> None:
        try:
            if not pubsub.subscribed:
                await pubsub.subscribe(EVENTS_CHANNEL)
            await pubsub.get_message(timeout=self._poll_seconds)
        except (redis.RedisError, OSError):
            # Redis is away: keep serving from memory, look again after the poll interval.
            with contextlib.suppress(Exception):
                await pubsub.reset()
            await asyncio.sleep(self._poll_seconds)

    async def _catch_up(self) -> None:
        try:
            version = await asyncio.to_thread(self._registry.active_version)
        except (redis.RedisError, OSError) as error:
            log.warning("cannot read the active version; serving what is loaded", extra={"error": str(error)})
            return
        current = self.current.version if self.current else None
        if version is None or version == current or version in self._refused:
            return
        await self._swap_to(version)

    async def _swap_to(self, version: str) -> None:
        try:
            loaded = await asyncio.to_thread(load_and_warm, self._registry, version)
        except (redis.RedisError, OSError) as error:
            log.warning("cannot fetch model; will retry", extra={"version": version, "error": str(error)})
            return
        except Exception as error:
            self._refused.add(version)
            reason = type(error).__name__
            MODEL_LOAD_FAILURES.labels(reason).inc()
            log.error("refusing to serve model", extra={"version": version, "reason": reason, "error": str(error)})
            return
        previous, self.current = self.current, loaded
        if previous is not None:
            MODEL_INFO.remove(previous.version)
        MODEL_INFO.labels(version).set(1)
        MODEL_SWAPS.inc()
        log.info("serving model", extra={"version": version, "previous": previous.version if previous else None,
                                         "fast_path": loaded.model.fast})
        await self._on_swap(loaded)
