"""The registry against a real Redis: versions, signatures, compare-and-set activation, the log."""

from __future__ import annotations

import threading

import pytest
import redis

from digits.errors import FailedPrecondition, IntegrityError, NotFound
from digits.registry import ACTIVE_KEY, EVENTS_CHANNEL, MODELS_KEY, Registry, blob_key, model_key

KEY = "unit-test-key"


@pytest.fixture
def registry(redis_client: redis.Redis) -> Registry:
    return Registry(redis_client, KEY)


def register(registry: Registry, payload: object = "model") -> str:
    record = registry.register(
        {"payload": payload}, kind="svc", params={"C": 10}, metrics={"accuracy": 0.9},
        dataset={"source": "sample", "size": 5000, "digest": "abc"}, job_id="job-1", report={"gate": "why"},
    )
    return record.version


def test_register_assigns_versions_and_stores_metadata(registry: Registry) -> None:
    first, second = register(registry), register(registry)
    assert (first, second) == ("v1", "v2")
    record = registry.get("v2")
    assert record.kind == "svc" and record.params == {"C": 10} and record.metrics == {"accuracy": 0.9}
    assert record.dataset["size"] == 5000 and record.job_id == "job-1" and record.report == {"gate": "why"}
    assert len(record.sha256) == 64 and record.blob_size > 0
    assert [r.version for r in registry.list()] == ["v2", "v1"]
    assert registry.active_version() is None


def test_listing_never_reads_blobs(registry: Registry, redis_client: redis.Redis) -> None:
    register(registry)
    redis_client.delete(blob_key("v1"))  # a listing that touched blobs would now fail or differ
    assert [r.version for r in registry.list()] == ["v1"]
    assert registry.list()[0].report == {}


def test_load_round_trips_a_verified_model(registry: Registry) -> None:
    version = register(registry, payload=[1, 2, 3])
    record, model = registry.load(version)
    assert model == {"payload": [1, 2, 3]} and record.version == version


@pytest.mark.parametrize("damage", ["flip", "truncate", "other-key", "missing"])
def test_damaged_blobs_are_never_unpickled(registry: Registry, redis_client: redis.Redis, damage: str) -> None:
    version = register(registry)
    stored = redis_client.get(blob_key(version)) or b""
    assert isinstance(stored, bytes)  # the client does not decode responses
    blob = bytearray(stored)
    if damage == "flip":
        blob[-5] ^= 1
        redis_client.set(blob_key(version), bytes(blob))
    elif damage == "truncate":
        redis_client.set(blob_key(version), bytes(blob[:-10]))
    elif damage == "missing":
        redis_client.delete(blob_key(version))
    registry_with_other_key = Registry(redis_client, "another-key") if damage == "other-key" else registry
    with pytest.raises(IntegrityError):
        registry_with_other_key.load(version)


def test_forged_blob_with_matching_digest_is_refused(registry: Registry, redis_client: redis.Redis) -> None:
    """Replacing blob and digest together is not enough: the signature needs the key."""
    import hashlib

    from digits.registry import serialize

    version = register(registry)
    forged = serialize({"payload": "evil"})
    redis_client.set(blob_key(version), forged)
    redis_client.hset(model_key(version), mapping={"sha256": hashlib.sha256(forged).hexdigest(),
                                                   "blob_size": len(forged)})
    with pytest.raises(IntegrityError, match="signature"):
        registry.load(version)


def test_activation_is_compare_and_set(registry: Registry, redis_client: redis.Redis) -> None:
    v1, v2 = register(registry), register(registry)
    pubsub = redis_client.pubsub()  # type: ignore[no-untyped-call]  # redis-py leaves Redis.pubsub unannotated
    pubsub.subscribe(EVENTS_CHANNEL)
    assert registry.activate(v1, expected=None, why="first")
    assert not registry.activate(v2, expected=None, why="stale expectation")
    assert registry.active_version() == v1
    assert registry.activate(v2, expected=v1, why="better")
    with pytest.raises(NotFound):
        registry.activate("v99", expected=v2, why="unknown")
    messages = [m for m in iter(lambda: pubsub.get_message(timeout=0.5), None) if m["type"] == "message"]
    assert [m["data"] for m in messages] == [b"v1", b"v2"]
    log = registry.promotions()
    assert [(p.from_version, p.to_version, p.why) for p in log] == [("v1", "v2", "better"), ("", "v1", "first")]


def test_concurrent_promotions_have_exactly_one_winner(registry: Registry) -> None:
    base = register(registry)
    registry.activate(base, expected=None, why="base")
    candidates = [register(registry) for _ in range(8)]
    results: dict[str, bool] = {}
    barrier = threading.Barrier(len(candidates))

    def promote(version: str) -> None:
        barrier.wait()
        results[version] = registry.activate(version, expected=base, why="race")

    threads = [threading.Thread(target=promote, args=(v,)) for v in candidates]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [v for v, won in results.items() if won]
    assert len(winners) == 1
    assert registry.active_version() == winners[0] == registry.promotions(1)[0].to_version


def test_rollback_walks_back_through_activations(registry: Registry) -> None:
    v1, v2, v3 = (register(registry) for _ in range(3))
    with pytest.raises(FailedPrecondition):
        registry.rollback(why="nothing active")
    registry.activate(v1, expected=None, why="a")
    registry.activate(v2, expected=v1, why="b")
    registry.activate(v3, expected=v2, why="c")
    assert registry.rollback(why="bad") == (v3, v2)
    assert registry.rollback(why="worse") == (v2, v1)
    with pytest.raises(FailedPrecondition, match="first active"):
        registry.rollback(why="no more")
    assert registry.active_version() == v1
    assert registry.promotions(1)[0].action == "rollback"


def test_a_failed_registration_leaves_nothing(registry: Registry, redis_client: redis.Redis) -> None:
    class Unpicklable:
        def __reduce__(self) -> str:
            raise TypeError("cannot pickle this")

    with pytest.raises(TypeError):
        registry.register(Unpicklable(), kind="x", params={}, metrics={}, dataset={})
    assert redis_client.zcard(MODELS_KEY) == 0
    assert not redis_client.keys("digits:model:v*")
    assert redis_client.get(ACTIVE_KEY) is None
