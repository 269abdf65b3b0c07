"""Which model this replica serves, how it follows the registry, and how it tells the others.

Activations arrive on ``digits:events``; the replica also re-reads ``digits:active`` every few seconds so that a
message missed during a reconnect is caught up. A version is known by its blob's digest, not only its name: a
version whose record changed is loaded again. A new version is fetched, verified, unpickled, prepared and warmed
off the event loop (``digits.modelling.model.ready_to_serve``); only then does one reference assignment make it current.
A request holds the ``Loaded`` it started with, so it runs wholly on that model.

A version that fails to load is retried with exponential backoff (a transient failure must not pin the replica
to its old model), and every few seconds the replica publishes what it serves on ``digits:replicas`` — which
the gateway shows next to the active pointer, so that a disagreement is seen, not silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge

from digits.errors import Unavailable
from digits.modelling import storage
from digits.modelling.model import ServedModel, ready_to_serve
from digits.platform.registry import EVENTS_CHANNEL, REPLICAS_CHANNEL, Registry

log = logging.getLogger(__name__)

MODEL_INFO = Gauge("digits_model_info", "The model version this replica serves (value 1).", ["version"])
MODEL_SWAPS = Counter("digits_model_swaps_total", "Times this replica switched to another model version.")
MODEL_LOAD_FAILURES = Counter(
    "digits_model_load_failures_total", "Model versions this replica failed to load, by reason.", ["reason"]
)
RETRY_FIRST_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0


@dataclass(frozen=True)
class Loaded:
    version: str
    sha256: str
    model: ServedModel


def load_and_warm(registry: Registry, version: str) -> Loaded:
    """Blocking: fetch and verify a version, and only then unpickle, prepare and warm it; raise if it cannot serve."""
    record, blob = registry.verify(version)
    return Loaded(version, record.sha256, ready_to_serve(storage.load(blob), f"model {version}"))


@dataclass
class _Failure:
    attempts: int
    retry_at: float
    error: str


class ModelFollower:
    def __init__(
        self,
        registry: Registry,
        events: aioredis.Redis,
        replica: str,
        poll_seconds: float,
        report_seconds: float,
        on_swap: Callable[[Loaded], Awaitable[None]],
    ) -> None:
        self._registry = registry
        self._events = events
        self._replica = replica
        self._poll_seconds = poll_seconds
        self._report_seconds = report_seconds
        self._on_swap = on_swap
        self._failures: dict[tuple[str, str], _Failure] = {}
        self._wanted: tuple[str, str] | None = None  # the active (version, digest) last read
        self._reported_at = 0.0
        self.current: Loaded | None = None

    def require(self) -> Loaded:
        loaded = self.current
        if loaded is None:
            raise Unavailable("no model is loaded yet; this replica is still starting")
        return loaded

    async def run(self) -> None:
        """Follow activations forever: wake on an event or after the poll interval, catch up, report."""
        pubsub = self._events.pubsub(ignore_subscribe_messages=True)
        try:
            while True:
                await self._catch_up()
                await self._report()
                await self._wait_for_event(pubsub)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

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
            wanted = await asyncio.to_thread(self._active)
        except (redis.RedisError, OSError) as error:
            log.warning("cannot read the active version; serving what is loaded", extra={"error": str(error)})
            return
        self._wanted = wanted
        current = (self.current.version, self.current.sha256) if self.current else None
        if wanted is None or wanted == current:
            return
        failure = self._failures.get(wanted)
        if failure and time.monotonic() < failure.retry_at:
            return
        await self._swap_to(*wanted)

    def _active(self) -> tuple[str, str] | None:
        version = self._registry.active_version()
        if version is None:
            return None
        return version, self._registry.get(version, with_report=False).sha256

    async def _swap_to(self, version: str, sha256: str) -> None:
        try:
            loaded = await asyncio.to_thread(load_and_warm, self._registry, version)
        except Exception as error:
            self._failed(version, sha256, error)
            return
        self._failures.pop((version, sha256), None)
        previous, self.current = self.current, loaded
        if previous is not None:
            MODEL_INFO.remove(previous.version)
        MODEL_INFO.labels(version).set(1)
        MODEL_SWAPS.inc()
        log.info("serving model", extra={"version": version, "previous": previous.version if previous else None,
                                         "fast_path": loaded.model.fast})
        self._reported_at = 0.0  # tell the others at once
        await self._on_swap(loaded)

    def _failed(self, version: str, sha256: str, error: Exception) -> None:
        earlier = self._failures.get((version, sha256))
        attempts = earlier.attempts + 1 if earlier else 1
        delay = min(RETRY_FIRST_SECONDS * 2 ** (attempts - 1), RETRY_MAX_SECONDS)
        self._failures[(version, sha256)] = _Failure(attempts, time.monotonic() + delay, f"{error}")
        reason = type(error).__name__
        MODEL_LOAD_FAILURES.labels(reason).inc()
        log.error("cannot serve model; will retry", extra={"version": version, "reason": reason, "error": str(error),
                                                            "attempts": attempts, "retry_in_seconds": delay})
        self._reported_at = 0.0

    def status(self) -> dict[str, object]:
        """What this replica serves, and why not the active version if it does not."""
        current = self.current
        failure = self._failures.get(self._wanted) if self._wanted else None
        state = "serving" if current else "starting"
        if failure is not None:
            state = "failing"
        return {"replica": self._replica, "version": current.version if current else "",
                "sha256": current.sha256 if current else "", "state": state,
                "active": self._wanted[0] if self._wanted else "", "error": failure.error if failure else ""}

    async def _report(self) -> None:
        now = time.monotonic()
        if now - self._reported_at < self._report_seconds:
            return
        self._reported_at = now
        await self._publish(self.status())

    async def say_goodbye(self) -> None:
        """Tell the others this replica is gone, so that it leaves their tables now, not after it falls silent."""
        await self._publish({**self.status(), "state": "stopped"})

    async def _publish(self, status: dict[str, object]) -> None:
        try:
            await self._events.publish(REPLICAS_CHANNEL, json.dumps(status))
        except (redis.RedisError, OSError) as error:
            log.debug("cannot report status", extra={"error": str(error)})
