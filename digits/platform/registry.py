"""The model registry, kept in Redis under ``digits:`` (schema in docs/architecture.md).

A version is registered in one transaction (metadata, signed blob, index entry) so that a crash never
leaves half a version behind. The active pointer changes only by compare-and-set, so two promotions
cannot interleave; every change is appended to the promotion log and announced on ``digits:events``.

Every record is signed by the trainer (Ed25519, ``digits.platform.signing``): the signature covers the record's
fields, the blob's sha256 and size, so nothing is unpickled before the blob is shown to be exactly the one the
trainer registered under that version. Only the trainer holds the private key.

Beside its blob a version keeps the fingerprints of the digits it was fitted on (``fitted_key``; made by
``digits.training.fingerprints``), their sha256 signed in its record, so that the promotion gate can compare a
new model with the active one on digits neither was fitted on. To the registry they are bytes like the blob.

Old versions do not pile up: ``prune`` deletes the blobs (and fingerprints) of versions that are neither active,
pinned, among the newest ``keep``, nor among the last ``keep`` versions a rollback could return to. Their records
stay, marked.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

from digits.errors import FailedPrecondition, IntegrityError, NotFound, NotServable
from digits.platform.redis_connection import connect
from digits.platform.signing import SigningKey, Verifier
from digits.settings import Settings

PREFIX = "digits:"
SEQ_KEY = PREFIX + "model:seq"
MODELS_KEY = PREFIX + "models"
ACTIVE_KEY = PREFIX + "active"
PINNED_KEY = PREFIX + "pinned"
PROMOTIONS_KEY = PREFIX + "promotions"
EVENTS_CHANNEL = PREFIX + "events"
REPLICAS_CHANNEL = PREFIX + "replicas"
SCRATCH_PREFIX = PREFIX + "scratch:"
SIGNATURE_CONTEXT = b"digits.model.v1\n"

# What the trainer signs: everything a version claims about itself. Stored as text; signed as stored.
SIGNED_FIELDS = (
    "version", "kind", "params", "metrics", "dataset", "split", "fitted_on", "created_at", "parent",
    "sha256", "blob_size", "job_id", "code_version", "served_check", "key_id", "fitted_digits",
)
# Signed fields that versions registered before them lack: signed when present, so that those versions' signatures
# (made over the fields of their day) still verify, while removing one from a record that has it, or adding one to
# a record that had none, changes the signed message like any other edit.
_SIGNED_WHEN_PRESENT = frozenset({"fitted_digits"})
# Fields read when listing: the signed ones, the signature and the prune mark; never the report or the blob.
SUMMARY_FIELDS = (*SIGNED_FIELDS, "signature", "pruned_at")
_JSON_FIELDS = ("params", "metrics", "dataset", "split", "served_check", "report", "fitted_digits")

# Compare-and-set of the active pointer, the log entry and the event in one atomic step.
# KEYS: active, promotions, metadata of the new version, its blob.
# ARGV: expected current ("" = none), new version, action, why, when, job, channel.
_ACTIVATE_LUA = """
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return {0, current} end
if redis.call('EXISTS', KEYS[3]) == 0 then return {-1, current} end
if redis.call('EXISTS', KEYS[4]) == 0 then return {-2, current} end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[2], '*', 'action', ARGV[3], 'from', current, 'to', ARGV[2],
           'why', ARGV[4], 'when', ARGV[5], 'job', ARGV[6])
redis.call('PUBLISH', ARGV[7], ARGV[2])
return {1, current}
"""


def model_key(version: str) -> str:
    return f"{PREFIX}model:{version}"


def blob_key(version: str) -> str:
    return f"{PREFIX}model:{version}:blob"


def fitted_key(version: str) -> str:
    """The fingerprints of the digits ``version`` was fitted on (bytes; its record signs their sha256)."""
    return f"{PREFIX}model:{version}:fitted"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ModelRecord:
    """A registered version's metadata, as stored in its hash."""

    version: str
    kind: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    dataset: dict[str, Any]
    created_at: str
    parent: str
    sha256: str
    signature: str
    blob_size: int
    key_id: str = ""
    # How the digits were split for this version's figures (seed, fractions, limit), and what it was fitted on.
    split: dict[str, Any] = field(default_factory=dict)
    fitted_on: str = ""
    job_id: str = ""
    code_version: str = ""
    # The trainer loaded the blob back and served a few digits with it before registering it.
    served_check: dict[str, Any] = field(default_factory=dict)
    # The fingerprints of the digits it was fitted on (``fitted_key``): their scheme, count and sha256; empty for
    # versions registered before they were kept.
    fitted_digits: dict[str, Any] = field(default_factory=dict)
    pruned_at: str = ""
    report: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, raw: Mapping[str, str]) -> ModelRecord:
        loaded = {name: json.loads(raw.get(name) or "{}") for name in _JSON_FIELDS}
        return cls(
            version=raw["version"], kind=raw.get("kind", ""), created_at=raw.get("created_at", ""),
            parent=raw.get("parent", ""), sha256=raw.get("sha256", ""), signature=raw.get("signature", ""),
            blob_size=int(raw.get("blob_size") or 0), key_id=raw.get("key_id", ""),
            fitted_on=raw.get("fitted_on", ""), job_id=raw.get("job_id", ""),
            code_version=raw.get("code_version", ""), pruned_at=raw.get("pruned_at", ""), **loaded,
        )


@dataclass(frozen=True)
class RegistryView:
    """Records, the active pointer and the pins as they were at one instant (``Registry.view``)."""

    records: list[ModelRecord]
    active: str
    pinned: frozenset[str]


@dataclass(frozen=True)
class Promotion:
    """One entry of the promotion log."""

    id: str
    action: str
    from_version: str
    to_version: str
    why: str
    when: str
    job: str


@dataclass(frozen=True)
class FittedDigits:
    """What a version was fitted on, as the trainer registers it: ``data`` (fingerprints) is stored beside the blob;
    ``about`` (their scheme and count), with their sha256 and size, goes into the signed record."""

    about: Mapping[str, Any]
    data: bytes


def _signed_message(stored: Mapping[str, str]) -> bytes:
    signed = {k: stored.get(k, "") for k in SIGNED_FIELDS if k in stored or k not in _SIGNED_WHEN_PRESENT}
    return SIGNATURE_CONTEXT + json.dumps(signed, sort_keys=True).encode()


class Registry:
    """Versions, metadata, signed blobs, pins and the active pointer, in Redis.

    Every service verifies with ``verifier``; only the trainer passes ``signer`` and can register.
    """

    def __init__(self, client: redis.Redis, verifier: Verifier, signer: SigningKey | None = None) -> None:
        self._redis = client
        self._verifier = verifier
        self._signer = signer
        self._activate = client.register_script(_ACTIVATE_LUA)

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout: float = 5.0) -> Registry:
        """This service's registry: it signs only where a signing key is configured (the trainer)."""
        key = settings.registry_signing_key
        return cls(connect(settings, timeout=timeout), Verifier.from_text(settings.registry_public_keys),
                   SigningKey.from_text(key.get_secret_value()) if key else None)

    @property
    def redis(self) -> redis.Redis:
        return self._redis

    def signs_verifiably(self) -> bool:
        """True when this registry has a signing key whose public half its verifier trusts."""
        return self._signer is not None and self._signer.key_id in self._verifier.key_ids

    # -- writing (the trainer) -----------------------------------------------------------------------

    def register(
        self,
        blob: bytes,
        *,
        kind: str,
        params: Mapping[str, Any],
        metrics: Mapping[str, Any],
        dataset: Mapping[str, Any],
        split: Mapping[str, Any],
        fitted_on: str,
        served_check: Mapping[str, Any],
        parent: str = "",
        job_id: str = "",
        code_version: str = "",
        report: Mapping[str, Any] | None = None,
        fitted_digits: FittedDigits | None = None,
    ) -> ModelRecord:
        """Sign and store a serialized model as a new version in one transaction. It is not activated.

        With ``fitted_digits``, their bytes are stored under ``fitted_key`` in the same transaction, and the record
        signs their sha256."""
        signer = self._require_signer()
        version = f"v{self._redis.incr(SEQ_KEY)}"
        stored: dict[str, str] = {
            "version": version, "kind": kind, "params": json.dumps(dict(params)),
            "metrics": json.dumps(dict(metrics)), "dataset": json.dumps(dict(dataset)),
            "split": json.dumps(dict(split)), "fitted_on": fitted_on, "created_at": now_iso(), "parent": parent,
            "sha256": hashlib.sha256(blob).hexdigest(), "blob_size": str(len(blob)), "job_id": job_id,
            "code_version": code_version, "served_check": json.dumps(dict(served_check)),
            "key_id": signer.key_id, "report": json.dumps(dict(report or {})),
        }
        if fitted_digits is not None:
            stored["fitted_digits"] = json.dumps({**fitted_digits.about, "bytes": len(fitted_digits.data),
                                                  "sha256": hashlib.sha256(fitted_digits.data).hexdigest()})
        stored["signature"] = signer.sign(_signed_message(stored))
        with self._redis.pipeline(transaction=True) as tx:
            tx.set(blob_key(version), blob)
            if fitted_digits is not None:
                tx.set(fitted_key(version), fitted_digits.data)
            tx.hset(model_key(version), mapping=_encodable(stored))
            tx.zadd(MODELS_KEY, {version: datetime.now(UTC).timestamp()})
            tx.execute()
        return ModelRecord.from_hash(stored)

    def prune(self, keep: int) -> builtins.list[str]:
        """Delete the blobs of versions no one can serve any more, and their fitted digits' fingerprints (only the
        active version's are ever read, and a pruned version never becomes active again); return those versions.

        Kept: the active version, pinned versions, the ``keep`` newest, and the last ``keep`` versions that were
        active before (what rollbacks reach). The check and the deletion are one transaction that retries if
        the active pointer or the pins change meanwhile, so a version is never pruned as it is activated.
        """
        while True:
            with self._redis.pipeline(transaction=True) as tx:
                try:
                    tx.watch(ACTIVE_KEY, PINNED_KEY)  # type: ignore[no-untyped-call]
                    doomed = [v for v in self._unpruned() if v not in self._kept(keep)]
                    tx.multi()
                    for version in doomed:
                        tx.delete(blob_key(version), fitted_key(version))
                        tx.hset(model_key(version), "pruned_at", now_iso())
                    tx.execute()
                    return doomed
                except redis.WatchError:
                    continue

    def _kept(self, keep: int) -> set[str]:
        newest = [_text(v) for v in self._redis.zrevrange(MODELS_KEY, 0, max(keep, 1) - 1)]
        previously_active: builtins.list[str] = []
        for promotion in self.promotions(1000):
            if promotion.from_version and promotion.from_version not in previously_active:
                previously_active.append(promotion.from_version)
        active = self.active_version()
        return {*newest, *previously_active[:keep], *self.pinned(), *([active] if active else [])}

    def _unpruned(self) -> builtins.list[str]:
        versions = [_text(v) for v in self._redis.zrange(MODELS_KEY, 0, -1)]
        with self._redis.pipeline(transaction=False) as batch:
            for version in versions:
                batch.exists(blob_key(version))
            present = batch.execute()
        return [v for v, exists in zip(versions, present, strict=True) if exists]

    def put_scratch(self, name: str, blob: bytes, ttl_seconds: int) -> None:
        """A signed model (its stored bytes) passed between the jobs of one retrain (fan-out); never a version."""
        signer = self._require_signer()
        key = f"{SCRATCH_PREFIX}{name}"
        self._redis.hset(key, mapping={"blob": blob, "key_id": signer.key_id,
                                       "signature": signer.sign(_scratch_message(name, blob))})
        self._redis.expire(key, ttl_seconds)

    def take_scratch(self, name: str) -> bytes:
        """A scratch model's bytes, once verified, and delete it."""
        key = f"{SCRATCH_PREFIX}{name}"
        blob, key_id, signature = self._redis.hmget(key, ["blob", "key_id", "signature"])
        if not isinstance(blob, bytes):
            raise IntegrityError(f"scratch model {name} is missing or expired")
        self._verifier.verify(_scratch_message(name, blob), _text(key_id), _text(signature), f"scratch model {name}")
        self._redis.delete(key)
        return blob

    def _require_signer(self) -> SigningKey:
        if self._signer is None:
            raise FailedPrecondition("this service holds no signing key; only the trainer registers models")
        return self._signer

    # -- the active pointer and pins (the gateway) -----------------------------------------------------

    def activate(self, version: str, *, expected: str | None, why: str, job: str = "",
                 action: str = "activate") -> bool:
        """Point ``digits:active`` at ``version`` if it still points at ``expected`` (None = nothing).

        Returns False when another promotion got there first; raises NotFound for an unknown version and
        FailedPrecondition for a pruned one.
        """
        result = self._activate(
            keys=[ACTIVE_KEY, PROMOTIONS_KEY, model_key(version), blob_key(version)],
            args=[expected or "", version, action, why, now_iso(), job, EVENTS_CHANNEL],
        )
        status = int(result[0])
        if status == -1:
            raise NotFound(f"model {version} is not registered")
        if status == -2:
            raise FailedPrecondition(f"model {version} was pruned (its blob is deleted); it cannot serve again")
        return status == 1

    def rollback(self, *, why: str) -> tuple[str, str]:
        """Go back to the version that was active before the current one, if it can still serve; return (from, to)."""
        current = self.active_version()
        if current is None:
            raise FailedPrecondition("no model is active, so there is nothing to roll back")
        previous = self._activated_from(current)
        if not previous:
            raise FailedPrecondition(f"{current} was the first active model; there is nothing to roll back to")
        self.check_servable(previous)
        if not self.activate(previous, expected=current, why=why, action="rollback"):
            raise FailedPrecondition("the active model changed during the rollback; look again and retry")
        return current, previous

    def pin(self, version: str, pinned: bool) -> None:
        """A pinned version is never pruned."""
        self.get(version, with_report=False)  # NotFound for an unknown version
        if pinned:
            self._redis.sadd(PINNED_KEY, version)
        else:
            self._redis.srem(PINNED_KEY, version)

    # -- reading -------------------------------------------------------------------------------------

    def active_version(self) -> str | None:
        value = self._redis.get(ACTIVE_KEY)
        return _text(value) or None

    def pinned(self) -> set[str]:
        return {_text(v) for v in self._redis.smembers(PINNED_KEY)}

    def get(self, version: str, *, with_report: bool = True) -> ModelRecord:
        fields = (*SUMMARY_FIELDS, "report") if with_report else SUMMARY_FIELDS
        values = self._redis.hmget(model_key(version), list(fields))
        raw = {name: _text(value) for name, value in zip(fields, values, strict=True) if value is not None}
        if "version" not in raw:
            raise NotFound(f"model {version} is not registered")
        return ModelRecord.from_hash(raw)

    def list(self, limit: int = 50) -> builtins.list[ModelRecord]:
        """Most recent first; reads metadata only."""
        return self.view(limit).records

    def view(self, limit: int = 50) -> RegistryView:
        """The newest ``limit`` records (metadata only), the active version and the pins, read as one snapshot."""
        return self._snapshot(lambda: [_text(v) for v in self._redis.zrevrange(MODELS_KEY, 0, max(limit, 1) - 1)],
                              SUMMARY_FIELDS)

    def view_of(self, version: str, *, with_report: bool = True) -> RegistryView:
        """One version's record (NotFound if unknown), the active version and the pins, read as one snapshot."""
        fields = (*SUMMARY_FIELDS, "report") if with_report else SUMMARY_FIELDS
        view = self._snapshot(lambda: [version], fields)
        if not view.records:
            raise NotFound(f"model {version} is not registered")
        return view

    def _snapshot(self, versions: Callable[[], builtins.list[str]], fields: tuple[str, ...]) -> RegistryView:
        """Read ``versions()``' records, the active pointer and the pins in one transaction, watched: when any of
        them changes between the first read and the last, read again. A Models answer never mixes two states."""
        while True:
            with self._redis.pipeline(transaction=True) as tx:
                try:
                    tx.watch(MODELS_KEY, ACTIVE_KEY, PINNED_KEY)  # type: ignore[no-untyped-call]
                    chosen = versions()
                    if chosen:
                        tx.watch(*(model_key(v) for v in chosen))  # type: ignore[no-untyped-call]
                    tx.multi()
                    tx.get(ACTIVE_KEY)
                    tx.smembers(PINNED_KEY)
                    for version in chosen:
                        tx.hmget(model_key(version), list(fields))
                    active, pinned, *rows = tx.execute()
                except redis.WatchError:
                    continue
            records = []
            for values in rows:
                raw = {n: _text(v) for n, v in zip(fields, values, strict=True) if v is not None}
                if "version" in raw:
                    records.append(ModelRecord.from_hash(raw))
            return RegistryView(records, _text(active), frozenset(_text(v) for v in pinned))

    def verify(self, version: str) -> tuple[ModelRecord, bytes]:
        """A version's record and blob, after checking that the trainer signed exactly these."""
        stored = self._stored(version)
        record = ModelRecord.from_hash(stored)
        if record.pruned_at:
            raise FailedPrecondition(f"model {version} was pruned at {record.pruned_at}; it cannot serve again")
        blob = self._redis.get(blob_key(version))
        if blob is None:
            raise IntegrityError(f"model {version}: its blob is missing")
        assert isinstance(blob, bytes)
        self._verifier.verify(_signed_message(stored), record.key_id, record.signature, f"model {version}")
        if len(blob) != record.blob_size:
            raise IntegrityError(f"model {version}: blob is {len(blob)} bytes, {record.blob_size} were registered")
        if not hmac.compare_digest(hashlib.sha256(blob).hexdigest(), record.sha256):
            raise IntegrityError(f"model {version}: blob digest does not match its record")
        return record, blob

    def fitted_digits(self, record: ModelRecord) -> bytes | None:
        """The fingerprints of the digits ``record``'s version was fitted on, checked against the sha256 its record
        signs; None for a version registered before they were kept. ``record`` must be one ``verify`` returned."""
        if not record.fitted_digits:
            return None
        data = self._redis.get(fitted_key(record.version))
        if not isinstance(data, bytes):
            raise IntegrityError(f"model {record.version}: the fingerprints of its fitted digits are missing")
        if not hmac.compare_digest(hashlib.sha256(data).hexdigest(), str(record.fitted_digits.get("sha256", ""))):
            raise IntegrityError(f"model {record.version}: the fingerprints of its fitted digits do not match its "
                                 "record")
        return data

    def check_servable(self, version: str) -> ModelRecord:
        """Refuse what no replica should be pointed at: a version not signed by a trusted key, whose blob does not
        match its record, that was pruned, or that the trainer did not load back and serve before registering."""
        record, _ = self.verify(version)
        if not record.served_check.get("passed"):
            raise NotServable(f"model {version} was registered without the trainer loading it back and serving a "
                              "few digits with it, so it may not load in inference; retrain it")
        return record

    def _stored(self, version: str) -> dict[str, str]:
        values = self._redis.hmget(model_key(version), list(SUMMARY_FIELDS))
        stored = {n: _text(v) for n, v in zip(SUMMARY_FIELDS, values, strict=True) if v is not None}
        if "version" not in stored:
            raise NotFound(f"model {version} is not registered")
        return stored

    def promotions(self, count: int = 100) -> builtins.list[Promotion]:
        """The promotion log, most recent first."""
        entries: builtins.list[tuple[bytes, dict[bytes, bytes]]] = self._redis.xrevrange(  # type: ignore[assignment]
            PROMOTIONS_KEY, count=count
        )
        return [_promotion(entry_id, fields) for entry_id, fields in entries]

    def _activated_from(self, version: str) -> str:
        """The version that was active before ``version`` was last activated."""
        for promotion in self.promotions(1000):
            if promotion.to_version == version and promotion.action == "activate":
                return promotion.from_version
        return ""


def _scratch_message(name: str, blob: bytes) -> bytes:
    return b"digits.scratch.v1\n" + name.encode() + b"\n" + hashlib.sha256(blob).hexdigest().encode()


def _encodable(stored: Mapping[str, str]) -> dict[FieldT, EncodableT]:
    return {name: value for name, value in stored.items()}


def _promotion(entry_id: bytes, fields: Mapping[bytes, bytes]) -> Promotion:
    get = {_text(k): _text(v) for k, v in fields.items()}
    return Promotion(
        id=_text(entry_id), action=get.get("action", ""), from_version=get.get("from", ""),
        to_version=get.get("to", ""), why=get.get("why", ""), when=get.get("when", ""), job=get.get("job", ""),
    )


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode()
    return str(value)
