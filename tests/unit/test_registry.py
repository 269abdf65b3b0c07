"""The registry against a real Redis: versions, signatures, fingerprints of fitted digits, compare-and-set
activation, the log, retention."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest
import redis

from digits.errors import FailedPrecondition, IntegrityError, NotFound, NotServable
from digits.modelling import storage
from digits.platform.registry import (
    ACTIVE_KEY,
    EVENTS_CHANNEL,
    MODELS_KEY,
    SIGNATURE_CONTEXT,
    FittedDigits,
    Registry,
    blob_key,
    fitted_key,
    model_key,
)
from digits.platform.signing import SigningKey, Verifier
from services.inference.active_model import load_and_warm
from tests.payloads import RunsOnUnpickling

KEY = SigningKey.generate()
CHECKED = {"passed": True, "class": "test", "rows": 0}
FITTED = FittedDigits({"scheme": "test", "count": 2}, bytes(range(16)))


@pytest.fixture
def registry(redis_client: redis.Redis) -> Registry:
    return Registry(redis_client, Verifier([KEY.public]), KEY)


def register(registry: Registry, payload: object = "model", served_check: dict[str, object] = CHECKED,
             fitted: FittedDigits | None = FITTED) -> str:
    record = registry.register(
        storage.dump({"payload": payload}), kind="svc", params={"C": 10}, metrics={"accuracy": 0.9},
        dataset={"source": "sample", "size": 5000, "digest": "abc"}, split={"seed": 0}, fitted_on="split",
        served_check=served_check, job_id="job-1", report={"gate": "why"}, fitted_digits=fitted,
    )
    return record.version


def test_register_assigns_versions_and_stores_metadata(registry: Registry) -> None:
    first, second = register(registry), register(registry)
    assert (first, second) == ("v1", "v2")
    record = registry.get("v2")
    assert record.kind == "svc" and record.params == {"C": 10} and record.metrics == {"accuracy": 0.9}
    assert record.dataset["size"] == 5000 and record.job_id == "job-1" and record.report == {"gate": "why"}
    assert record.split == {"seed": 0} and record.fitted_on == "split" and record.key_id == KEY.key_id
    assert len(record.sha256) == 64 and record.blob_size > 0
    assert [r.version for r in registry.list()] == ["v2", "v1"]
    assert registry.active_version() is None


def test_listing_never_reads_blobs(registry: Registry, redis_client: redis.Redis) -> None:
    register(registry)
    redis_client.delete(blob_key("v1"))  # a listing that touched blobs would now fail or differ
    assert [r.version for r in registry.list()] == ["v1"]
    assert registry.list()[0].report == {}


def test_verify_returns_the_registered_record_and_bytes(registry: Registry) -> None:
    version = register(registry, payload=[1, 2, 3])
    record, blob = registry.verify(version)
    assert blob == storage.dump({"payload": [1, 2, 3]}) and record.version == version


@pytest.mark.parametrize("damage", ["flip", "truncate", "other-key", "missing"])
def test_damaged_blobs_are_never_unpickled(registry: Registry, redis_client: redis.Redis, damage: str,
                                           tmp_path: Path) -> None:
    """A blob with a byte flipped or cut short, or signed by a key this registry does not trust, is refused before
    it is unpickled, loaded as every replica loads a version (``load_and_warm``): the blob runs code as it is
    unpickled, and that code never ran."""
    marker = tmp_path / "unpickled"
    # The payload first, ballast after it: pickle runs os.system as soon as it reads the call, so damage anywhere
    # in the ballast leaves a blob that still runs it.
    version = register(registry, payload=(RunsOnUnpickling(marker), "ballast " * 64))
    stored = redis_client.get(blob_key(version)) or b""
    assert isinstance(stored, bytes)  # the client does not decode responses
    blob = bytearray(stored)
    if damage == "flip":
        blob[stored.index(b"ballast") + 3] ^= 1  # still a pickle that runs the payload: "balmast ballast ..."
        redis_client.set(blob_key(version), bytes(blob))
    elif damage == "truncate":
        redis_client.set(blob_key(version), bytes(blob[:-10]))
    elif damage == "missing":
        redis_client.delete(blob_key(version))
    trusting_another_key = Registry(redis_client, Verifier([SigningKey.generate().public]))
    with pytest.raises(IntegrityError):
        load_and_warm(trusting_another_key if damage == "other-key" else registry, version)
    assert not marker.exists(), "the damaged blob was unpickled: its payload ran"


def test_forged_blob_with_matching_digest_is_refused(registry: Registry, redis_client: redis.Redis,
                                                     tmp_path: Path) -> None:
    """Replacing blob and digest together is not enough: the signature needs the key, and the forged blob, which
    runs code as it is unpickled, is never unpickled."""
    marker = tmp_path / "unpickled"
    version = register(registry)
    forged = storage.dump({"payload": RunsOnUnpickling(marker)})
    redis_client.set(blob_key(version), forged)
    redis_client.hset(model_key(version), mapping={"sha256": hashlib.sha256(forged).hexdigest(),
                                                   "blob_size": len(forged)})
    with pytest.raises(IntegrityError, match="signature"):
        load_and_warm(registry, version)
    assert not marker.exists(), "the forged blob was unpickled: its payload ran"


def test_the_signature_covers_the_record_not_only_the_blob(registry: Registry, redis_client: redis.Redis) -> None:
    """Claiming better figures, or another version's name, breaks the signature as surely as a new blob."""
    version = register(registry)
    redis_client.hset(model_key(version), "metrics", '{"accuracy": 0.9999}')
    with pytest.raises(IntegrityError, match="signature"):
        registry.verify(version)


def test_the_fingerprints_of_fitted_digits_are_kept_beside_the_blob_and_signed(registry: Registry,
                                                                             redis_client: redis.Redis) -> None:
    """The record signs their sha256: other bytes, another claim, or a claim removed are all refused."""
    version = register(registry)
    record, _ = registry.verify(version)
    assert record.fitted_digits == {"scheme": "test", "count": 2, "bytes": 16,
                                    "sha256": hashlib.sha256(FITTED.data).hexdigest()}
    assert registry.fitted_digits(record) == FITTED.data == redis_client.get(fitted_key(version))

    redis_client.set(fitted_key(version), bytes(16))
    with pytest.raises(IntegrityError, match="do not match its record"):
        registry.fitted_digits(record)
    redis_client.delete(fitted_key(version))
    with pytest.raises(IntegrityError, match="missing"):
        registry.fitted_digits(record)
    claimed = {**record.fitted_digits, "sha256": hashlib.sha256(bytes(16)).hexdigest()}
    redis_client.hset(model_key(version), "fitted_digits", json.dumps(claimed))
    with pytest.raises(IntegrityError, match="signature"):
        registry.verify(version)
    redis_client.hdel(model_key(version), "fitted_digits")  # as if it had been registered before fingerprints
    with pytest.raises(IntegrityError, match="signature"):
        registry.verify(version)


def test_versions_registered_before_fingerprints_still_verify(registry: Registry, redis_client: redis.Redis) -> None:
    """Their records were signed over the fields of their day; the gate then rebuilds what they were fitted on."""
    version = register(registry, fitted=None)
    before = ("version", "kind", "params", "metrics", "dataset", "split", "fitted_on", "created_at", "parent",
              "sha256", "blob_size", "job_id", "code_version", "served_check", "key_id")  # SIGNED_FIELDS until #22
    raw: dict[bytes, bytes] = redis_client.hgetall(model_key(version))  # type: ignore[assignment]
    stored = {k.decode(): v.decode() for k, v in raw.items()}
    message = SIGNATURE_CONTEXT + json.dumps({k: stored.get(k, "") for k in before}, sort_keys=True).encode()
    redis_client.hset(model_key(version), "signature", KEY.sign(message))
    record, _ = registry.verify(version)
    assert record.fitted_digits == {} and registry.fitted_digits(record) is None
    assert not redis_client.exists(fitted_key(version))
    redis_client.hset(model_key(version), "fitted_digits", json.dumps(FITTED.about))  # claimed afterwards: refused
    with pytest.raises(IntegrityError, match="signature"):
        registry.verify(version)


def test_keys_rotate_without_orphaning_old_versions(redis_client: redis.Redis) -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    before = Registry(redis_client, Verifier([old.public]), old)
    kept = register(before)
    after = Registry(redis_client, Verifier([old.public, new.public]), new)
    fresh = register(after)
    assert {after.verify(v)[0].key_id for v in (kept, fresh)} == {old.key_id, new.key_id}
    with pytest.raises(IntegrityError, match="does not trust"):
        Registry(redis_client, Verifier([new.public])).verify(kept)


def test_only_a_signing_registry_registers(redis_client: redis.Redis) -> None:
    verifying_only = Registry(redis_client, Verifier([KEY.public]))
    with pytest.raises(FailedPrecondition, match="signing key"):
        register(verifying_only)


def test_activation_needs_a_served_check_and_a_blob(registry: Registry) -> None:
    unchecked = register(registry, served_check={})
    with pytest.raises(NotServable):
        registry.check_servable(unchecked)
    checked = register(registry)
    assert registry.check_servable(checked).version == checked


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


def test_rollback_refuses_a_target_that_cannot_serve(registry: Registry, redis_client: redis.Redis) -> None:
    v1, v2 = register(registry), register(registry)
    registry.activate(v1, expected=None, why="a")
    registry.activate(v2, expected=v1, why="b")
    redis_client.hset(model_key(v1), "kind", "tampered")
    with pytest.raises(IntegrityError):
        registry.rollback(why="to a tampered version")
    assert registry.active_version() == v2


def test_retention_keeps_active_pinned_newest_and_rollback_targets(registry: Registry,
                                                                   redis_client: redis.Redis) -> None:
    versions = [register(registry) for _ in range(8)]  # v1 .. v8
    registry.activate("v2", expected=None, why="a")
    registry.activate("v3", expected="v2", why="b")  # v2 is now a rollback target
    registry.pin("v1", True)
    pruned = registry.prune(keep=2)
    assert pruned == ["v4", "v5", "v6"]  # kept: v1 pinned, v2 rollback target, v3 active, v7 v8 newest
    for version in versions:
        assert bool(redis_client.exists(blob_key(version))) == (version not in pruned)
        assert bool(redis_client.exists(fitted_key(version))) == (version not in pruned)
        assert bool(registry.get(version).pruned_at) == (version in pruned)
    with pytest.raises(FailedPrecondition, match="pruned"):
        registry.activate("v4", expected="v3", why="gone")
    with pytest.raises(FailedPrecondition, match="pruned"):
        registry.verify("v5")
    registry.pin("v1", False)
    assert registry.prune(keep=2) == ["v1"]
    assert registry.prune(keep=2) == []


def test_a_failed_registration_leaves_nothing(registry: Registry, redis_client: redis.Redis) -> None:
    with pytest.raises(TypeError):  # figures that cannot be stored
        registry.register(storage.dump("model"), kind="x", params={}, metrics={"when": object()}, dataset={},
                          split={}, fitted_on="split", served_check=CHECKED, fitted_digits=FITTED)
    assert redis_client.zcard(MODELS_KEY) == 0
    assert not redis_client.keys("digits:model:v*")
    assert redis_client.get(ACTIVE_KEY) is None


def test_a_view_is_one_instant_of_records_active_pointer_and_pins(registry: Registry,
                                                                   redis_client: redis.Redis) -> None:
    """The gateway answers ListModels and GetModel from one view. A writer here moves the active pointer and the
    pin together, in one transaction; a reader of three separate values would see the pin of one state beside the
    active version of another."""
    versions = [register(registry) for _ in range(3)]
    writer = redis.Redis(connection_pool=redis_client.connection_pool)
    stop = threading.Event()

    def move() -> None:
        turn = 0
        while not stop.is_set():
            turn += 1
            with writer.pipeline(transaction=True) as tx:
                tx.set(ACTIVE_KEY, versions[turn % 3])
                tx.delete("digits:pinned")
                tx.sadd("digits:pinned", versions[turn % 3])
                tx.execute()
            time.sleep(0.0005)

    thread = threading.Thread(target=move)
    thread.start()
    try:
        views = [registry.view() for _ in range(200)] + [registry.view_of(versions[0]) for _ in range(200)]
    finally:
        stop.set()
        thread.join()
    assert {v.active for v in views} == set(versions), "the writer did not move the pointer during the reads"
    assert all(view.pinned == {view.active} for view in views)
    assert all([r.version for r in v.records] == versions[::-1] for v in views[:200])
    assert all([r.version for r in v.records] == versions[:1] and v.records[0].report for v in views[200:])
    with pytest.raises(NotFound):
        registry.view_of("v999")
