"""The gateway's table of inference replicas (pure logic, on a controlled clock): the latest report of each,
malformed reports ignored, a stopped replica gone at once, a silent one forgotten, the table bounded."""

from __future__ import annotations

import json

import pytest

from services.gateway import replicas
from services.gateway.replicas import ReplicaWatch

REPORT_SECONDS = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr("services.gateway.replicas.time.monotonic", clock)
    return clock


def watch() -> ReplicaWatch:
    return ReplicaWatch(None, REPORT_SECONDS)  # type: ignore[arg-type]  # (events are only read by run())


def report(replica: str, version: str = "v2", state: str = "serving", **more: object) -> bytes:
    return json.dumps({"replica": replica, "version": version, "sha256": f"sha-{version}", "state": state,
                       "active": version, "error": "", **more}).encode()


def test_the_latest_report_of_each_replica_is_kept_sorted_by_id(clock: Clock) -> None:
    table = watch()
    table._record(report("b:50052", "v1"))
    table._record(report("a:50052", "v1"))
    clock.now += 1
    table._record(report("b:50052", "v2"))
    snapshot = table.snapshot()
    assert [(s.id, s.version, s.sha256, s.state) for s in snapshot] == [
        ("a:50052", "v1", "sha-v1", "serving"), ("b:50052", "v2", "sha-v2", "serving")]
    assert [s.seen_seconds_ago for s in snapshot] == [1.0, 0.0]


def test_a_failing_replica_keeps_its_error_cut_to_500_characters(clock: Clock) -> None:
    table = watch()
    table._record(report("a", "v1", state="failing", error="cannot load v2: " + "x" * 1000))
    (status,) = table.snapshot()
    assert status.state == "failing" and status.version == "v1"
    assert status.error.startswith("cannot load v2: ") and len(status.error) == 500


@pytest.mark.parametrize("data", [b"not json", b"[1, 2]", b'{"version": "v1"}', None, 7, b'"text"',
                                  b'{"replica": null}', b'{"replica": ""}', b'{"replica": 5}',
                                  b'{"replica": "b", "version": null}', b'{"replica": "b", "error": {"x": 1}}',
                                  json.dumps({"replica": "x" * 201}).encode()])
def test_malformed_reports_are_ignored(clock: Clock, data: object) -> None:
    table = watch()
    table._record(report("a"))
    table._record(data)
    assert [s.id for s in table.snapshot()] == ["a"]


def test_missing_fields_read_as_empty(clock: Clock) -> None:
    table = watch()
    table._record(b'{"replica": "a"}')
    (status,) = table.snapshot()
    assert (status.version, status.sha256, status.state, status.error) == ("", "", "", "")


def test_a_stopped_replica_leaves_the_table_at_once(clock: Clock) -> None:
    table = watch()
    table._record(report("a"))
    table._record(report("b"))
    table._record(report("a", state="stopped"))
    table._record(report("never-seen", state="stopped"))
    assert [s.id for s in table.snapshot()] == ["b"]


def test_a_replica_silent_for_three_report_intervals_is_forgotten(clock: Clock) -> None:
    table = watch()
    table._record(report("quiet"))
    table._record(report("chatty"))
    clock.now += 3 * REPORT_SECONDS
    assert [s.id for s in table.snapshot()] == ["chatty", "quiet"]  # exactly three intervals: still shown
    table._record(report("chatty"))
    clock.now += 0.1
    assert [s.id for s in table.snapshot()] == ["chatty"]
    table._record(report("quiet"))  # heard again: back
    assert [s.id for s in table.snapshot()] == ["chatty", "quiet"]


def test_the_table_is_bounded_silent_replicas_make_room(clock: Clock, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(replicas, "MAX_REPLICAS", 3)
    table = watch()
    for name in "abc":
        table._record(report(name))
    with caplog.at_level("WARNING"):
        table._record(report("d"))  # full, and every replica fresh: not admitted, and said so
        table._record(report("a"))
        table._record(report("e"))  # said once, not at every report
    assert caplog.text.count("replica table full") == 1
    assert [s.id for s in table.snapshot()] == ["a", "b", "c"]
    table._record(report("a", "v3"))  # a known replica still updates
    assert table.snapshot()[0].version == "v3"

    clock.now += 3 * REPORT_SECONDS + 1
    table._record(report("b"))
    table._record(report("d"))  # a and c are silent: dropped to make room
    assert [s.id for s in table.snapshot()] == ["b", "d"]
    assert set(table._latest) == {"b", "d"}
