"""How an inference replica follows the active pointer (pure logic: a stand-in registry and loader, a controlled
clock): versions known by their digest, a failed load retried with capped exponential backoff while the old
model keeps serving, and what the replica reports."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis

from digits.errors import Unavailable
from services.inference import active_model
from services.inference.active_model import RETRY_MAX_SECONDS, Loaded, ModelFollower


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class FakeRegistry:
    """The active pointer and each version's digest; ``broken`` versions fail to load, ``down`` is Redis away."""

    def __init__(self) -> None:
        self.active: str | None = None
        self.digests: dict[str, str] = {}
        self.broken: set[str] = set()
        self.down = False

    def activate(self, version: str, digest: str) -> None:
        self.active, self.digests[version] = version, digest

    def active_version(self) -> str | None:
        if self.down:
            raise redis.ConnectionError("Connection refused")
        return self.active

    def get(self, version: str, *, with_report: bool = True) -> Any:
        return type("Record", (), {"sha256": self.digests[version]})()


class StandInModel:
    fast = False


class FakeEvents:
    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []

    async def publish(self, channel: str, message: str) -> None:
        self.published.append((channel, json.loads(message)))


class Follower:
    """A ModelFollower with its stand-ins, the loads it attempted and the swaps it announced."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.registry = FakeRegistry()
        self.events = FakeEvents()
        self.clock = Clock()
        self.loads: list[str] = []
        self.swaps: list[str] = []
        monkeypatch.setattr("services.inference.active_model.time.monotonic", self.clock)
        monkeypatch.setattr(active_model, "load_and_warm", self._load)

        async def on_swap(loaded: Loaded) -> None:
            self.swaps.append(loaded.version)

        self.follower = ModelFollower(self.registry, self.events, "host:50052", poll_seconds=2,  # type: ignore[arg-type]
                                      report_seconds=5, on_swap=on_swap)

    def _load(self, registry: FakeRegistry, version: str) -> Loaded:
        self.loads.append(version)
        if version in registry.broken:
            raise ValueError(f"model {version} cannot serve: bad blob")
        return Loaded(version, registry.digests[version], model=StandInModel())  # type: ignore[arg-type]

    def catch_up(self) -> None:
        asyncio.run(self.follower._catch_up())

    def report(self) -> None:
        asyncio.run(self.follower._report())


@pytest.fixture
def replica(monkeypatch: pytest.MonkeyPatch) -> Follower:
    return Follower(monkeypatch)


def test_before_any_model_the_replica_refuses_and_says_it_is_starting(replica: Follower) -> None:
    with pytest.raises(Unavailable, match="no model is loaded yet"):
        replica.follower.require()
    replica.catch_up()  # nothing active: nothing to load
    assert replica.loads == [] and replica.follower.status()["state"] == "starting"


def test_the_active_version_is_loaded_once_and_announced(replica: Follower) -> None:
    replica.registry.activate("v1", "aaa")
    replica.catch_up()
    replica.catch_up()
    assert replica.loads == ["v1"] and replica.swaps == ["v1"]
    loaded = replica.follower.require()
    assert (loaded.version, loaded.sha256) == ("v1", "aaa")
    assert replica.follower.status() == {"replica": "host:50052", "version": "v1", "sha256": "aaa",
                                         "state": "serving", "active": "v1", "error": ""}


def test_a_version_whose_digest_changed_is_loaded_again(replica: Follower) -> None:
    replica.registry.activate("v1", "aaa")
    replica.catch_up()
    replica.registry.activate("v1", "bbb")  # same name, another blob
    replica.catch_up()
    assert replica.loads == ["v1", "v1"] and replica.follower.require().sha256 == "bbb"


def test_a_failed_load_keeps_the_old_model_and_is_retried_with_capped_backoff(replica: Follower) -> None:
    replica.registry.activate("v1", "aaa")
    replica.catch_up()
    replica.registry.activate("v2", "bbb")
    replica.registry.broken.add("v2")

    attempts_at = []
    for _ in range(10):
        before = len(replica.loads)
        replica.catch_up()
        if len(replica.loads) > before:
            attempts_at.append(replica.clock.now)
        replica.clock.now += 0.5
    # Tried at once, then after 1 s, then after 2 s, then 4 s ...
    assert [t - attempts_at[0] for t in attempts_at] == [0.0, 1.0, 3.0]
    assert replica.follower.require().version == "v1"  # still serving the old model meanwhile
    status = replica.follower.status()
    assert (status["state"], status["version"], status["active"]) == ("failing", "v1", "v2")
    assert "bad blob" in str(status["error"])

    delays = []
    for _ in range(10):
        replica.clock.now = replica.follower._failures[("v2", "bbb")].retry_at
        replica.catch_up()
        delays.append(replica.follower._failures[("v2", "bbb")].retry_at - replica.clock.now)
    assert delays == [8.0, 16.0, 32.0] + [RETRY_MAX_SECONDS] * 7  # the backoff stops growing at the cap


def test_a_fixed_version_loads_at_its_next_retry_and_the_failure_is_forgotten(replica: Follower) -> None:
    replica.registry.activate("v2", "bbb")
    replica.registry.broken.add("v2")
    replica.catch_up()
    assert replica.follower.status()["state"] == "failing" and replica.swaps == []
    replica.registry.broken.clear()
    replica.catch_up()  # before its retry time: not tried
    assert replica.loads == ["v2"]
    replica.clock.now += 1.0
    replica.catch_up()
    assert replica.swaps == ["v2"] and replica.follower._failures == {}
    assert replica.follower.status()["state"] == "serving" and replica.follower.status()["error"] == ""


def test_a_new_digest_of_a_failing_version_is_tried_at_once(replica: Follower) -> None:
    replica.registry.activate("v2", "bad-digest")
    replica.registry.broken.add("v2")
    replica.catch_up()
    replica.registry.broken.clear()
    replica.registry.activate("v2", "good-digest")  # re-registered: not the blob that failed
    replica.catch_up()
    assert replica.loads == ["v2", "v2"] and replica.follower.require().sha256 == "good-digest"


def test_while_redis_is_away_the_loaded_model_keeps_serving(replica: Follower) -> None:
    replica.registry.activate("v1", "aaa")
    replica.catch_up()
    replica.registry.down = True
    replica.catch_up()
    assert replica.follower.require().version == "v1" and replica.loads == ["v1"]


def test_reports_go_out_every_interval_and_at_once_after_a_swap_or_failure(replica: Follower) -> None:
    replica.report()
    replica.clock.now += 1
    replica.report()  # within the interval: quiet
    assert len(replica.events.published) == 1

    replica.registry.activate("v1", "aaa")
    replica.catch_up()
    replica.report()  # a swap is told at once
    replica.registry.activate("v2", "bbb")
    replica.registry.broken.add("v2")
    replica.catch_up()
    replica.report()  # and so is a failure
    replica.clock.now += 5
    replica.report()  # then every report interval
    channels = {channel for channel, _ in replica.events.published}
    states = [message["state"] for _, message in replica.events.published]
    assert channels == {"digits:replicas"}
    assert states == ["starting", "serving", "failing", "failing"]

    asyncio.run(replica.follower.say_goodbye())
    goodbye = replica.events.published[-1][1]
    assert goodbye == {**replica.follower.status(), "state": "stopped"}  # what it served, and that it is gone
