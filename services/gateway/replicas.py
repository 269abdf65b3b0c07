"""What each inference replica serves, as the replicas publish it on ``digits:replicas``.

Replicas report every few seconds and whenever they swap or fail to load; the gateway keeps the latest report
of each and forgets a replica that has been silent for three report intervals. ``digits models`` and the
``/models`` page show the table beside the active pointer, so a replica that disagrees with it is seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from digits.platform.registry import REPLICAS_CHANNEL

log = logging.getLogger(__name__)

SILENT_REPORTS = 3
MAX_REPLICAS = 1000  # reports are input too: a bounded table
MAX_ID = 200  # characters of a replica id, version, digest or state


@dataclass(frozen=True)
class ReplicaStatus:
    id: str
    version: str
    sha256: str
    state: str
    error: str
    seen_at: float

    @property
    def seen_seconds_ago(self) -> float:
        return max(0.0, time.monotonic() - self.seen_at)


class ReplicaWatch:
    def __init__(self, events: aioredis.Redis, report_seconds: float) -> None:
        self._events = events
        self._forget_after = SILENT_REPORTS * report_seconds
        self._latest: dict[str, ReplicaStatus] = {}
        self._said_full = False  # the table is full: said once, until it has room again

    def snapshot(self) -> list[ReplicaStatus]:
        """Replicas heard from recently, by id."""
        fresh = [s for s in self._latest.values() if s.seen_seconds_ago <= self._forget_after]
        return sorted(fresh, key=lambda s: s.id)

    async def run(self) -> None:
        while True:
            pubsub = self._events.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(REPLICAS_CHANNEL)
                async for message in pubsub.listen():
                    self._record(message.get("data"))
            except (redis.RedisError, OSError) as error:
                log.warning("replica reports interrupted; resubscribing", extra={"error": str(error)})
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _record(self, data: object) -> None:
        status = _parse(data)
        if status is None:
            return
        if status.state == "stopped":
            self._latest.pop(status.id, None)
            return
        if status.id not in self._latest and len(self._latest) >= MAX_REPLICAS:
            self._latest = {s.id: s for s in self.snapshot()}
            if len(self._latest) >= MAX_REPLICAS:
                if not self._said_full:
                    log.warning("replica table full; new replicas' reports are not shown until one falls silent",
                                extra={"replica": status.id, "max_replicas": MAX_REPLICAS})
                self._said_full = True
                return
            self._said_full = False  # there was room: the next refusal is news
        self._latest[status.id] = status


def _parse(data: object) -> ReplicaStatus | None:
    """A report as the table keeps it, or None (logged) when it is not one: every field is text, the id is not empty."""
    try:
        report = json.loads(data)  # type: ignore[arg-type]
        fields = {name: report.get(name, "") for name in ("replica", "version", "sha256", "state", "error")}
    except (TypeError, ValueError, AttributeError) as error:
        log.warning("ignoring a malformed replica report", extra={"error": str(error)})
        return None
    if not all(isinstance(value, str) for value in fields.values()) or not 0 < len(fields["replica"]) <= MAX_ID:
        log.warning("ignoring a replica report without a text id or with fields that are not text",
                    extra={"replica": str(fields["replica"])[:MAX_ID]})
        return None
    return ReplicaStatus(fields["replica"], fields["version"][:MAX_ID], fields["sha256"][:MAX_ID],
                         fields["state"][:MAX_ID], fields["error"][:500], time.monotonic())
