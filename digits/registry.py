"""The model registry, kept in Redis under ``digits:`` (schema in docs/architecture.md).

A version is registered in one transaction (metadata, signed blob, index entry) so that a crash never
leaves half a version behind. The active pointer changes only by compare-and-set, so two promotions
cannot interleave; every change is appended to the promotion log and announced on ``digits:events``.
Blobs are checked (sha256 and HMAC-SHA256) before anything unpickles them.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import joblib
import redis
from redis.typing import EncodableT, FieldT

from digits.errors import FailedPrecondition, IntegrityError, NotFound

PREFIX = "digits:"
SEQ_KEY = PREFIX + "model:seq"
MODELS_KEY = PREFIX + "models"
ACTIVE_KEY = PREFIX + "active"
PROMOTIONS_KEY = PREFIX + "promotions"
EVENTS_CHANNEL = PREFIX + "events"
SCRATCH_PREFIX = PREFIX + "scratch:"

# Fields read when listing: everything but the report, and never the blob.
SUMMARY_FIELDS = (
    "version", "kind", "params", "metrics", "dataset", "created_at", "parent",
    "sha256", "signature", "blob_size", "job_id", "code_version",
)

# Compare-and-set of the active pointer, the log entry and the event in one atomic step.
# KEYS: active, promotions, metadata of the new version.
# ARGV: expected current ("" = none), new version, action, why, when, job, channel.
_ACTIVATE_LUA = """
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return {0, current} end
if redis.call('EXISTS', KEYS[3]) == 0 then return {-1, current} end
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
    job_id: str = ""
    code_version: str = ""
    report: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, raw: Mapping[str, str]) -> ModelRecord:
        return cls(
            version=raw["version"],
            kind=raw.get("kind", ""),
            params=json.loads(raw.get("params") or "{}"),
            metrics=json.loads(raw.get("metrics") or "{}"),
            dataset=json.loads(raw.get("dataset") or "{}"),
            created_at=raw.get("created_at", ""),
            parent=raw.get("parent", ""),
            sha256=raw.get("sha256", ""),
            signature=raw.get("signature", ""),
            blob_size=int(raw.get("blob_size") or 0),
            job_id=raw.get("job_id", ""),
            code_version=raw.get("code_version", ""),
            report=json.loads(raw.get("report") or "{}"),
        )


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


def serialize(model: object) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return buffer.getvalue()


class Signer:
    """HMAC-SHA256 over a blob with the registry key."""

    def __init__(self, key: str) -> None:
        self._key = key.encode()

    def sign(self, blob: bytes) -> str:
        return hmac.new(self._key, blob, hashlib.sha256).hexdigest()

    def verify(self, blob: bytes, record: ModelRecord) -> None:
        """Raise IntegrityError unless the blob is exactly the one that was registered and signed."""
        if len(blob) != record.blob_size:
            raise IntegrityError(
                f"model {record.version}: blob is {len(blob)} bytes, {record.blob_size} were registered"
            )
        if not hmac.compare_digest(hashlib.sha256(blob).hexdigest(), record.sha256):
            raise IntegrityError(f"model {record.version}: blob digest does not match its record")
        if not hmac.compare_digest(self.sign(blob), record.signature):
            raise IntegrityError(f"model {record.version}: blob signature is not valid for this registry key")


class Registry:
    """Versions, metadata, signed blobs and the active pointer, in Redis."""

    def __init__(self, client: redis.Redis, key: str) -> None:
        self._redis = client
        self._signer = Signer(key)
        self._activate = client.register_script(_ACTIVATE_LUA)

    @classmethod
    def from_url(cls, url: str, key: str, *, timeout: float = 5.0) -> Registry:
        client = redis.Redis.from_url(
            url, decode_responses=False, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        return cls(client, key)

    @property
    def redis(self) -> redis.Redis:
        return self._redis

    # -- writing -------------------------------------------------------------------------------

    def register(
        self,
        model: object,
        *,
        kind: str,
        params: Mapping[str, Any],
        metrics: Mapping[str, Any],
        dataset: Mapping[str, Any],
        parent: str = "",
        job_id: str = "",
        code_version: str = "",
        report: Mapping[str, Any] | None = None,
    ) -> ModelRecord:
        """Store a new version in one transaction and return its record. It is not activated."""
        blob = serialize(model)
        version = f"v{self._redis.incr(SEQ_KEY)}"
        record = ModelRecord(
            version=version, kind=kind, params=dict(params), metrics=dict(metrics), dataset=dict(dataset),
            created_at=now_iso(), parent=parent, sha256=hashlib.sha256(blob).hexdigest(),
            signature=self._signer.sign(blob), blob_size=len(blob), job_id=job_id,
            code_version=code_version, report=dict(report or {}),
        )
        with self._redis.pipeline(transaction=True) as tx:
            tx.set(blob_key(version), blob)
            tx.hset(model_key(version), mapping=_to_hash(record))
            tx.zadd(MODELS_KEY, {version: datetime.now(UTC).timestamp()})
            tx.execute()
        return record

    def activate(self, version: str, *, expected: str | None, why: str, job: str = "",
                 action: str = "activate") -> bool:
        """Point ``digits:active`` at ``version`` if it still points at ``expected`` (None = nothing).

        Returns False when another promotion got there first; raises NotFound for an unknown version.
        """
        result = self._activate(
            keys=[ACTIVE_KEY, PROMOTIONS_KEY, model_key(version)],
            args=[expected or "", version, action, why, now_iso(), job, EVENTS_CHANNEL],
        )
        status = int(result[0])
        if status == -1:
            raise NotFound(f"model {version} is not registered")
        return status == 1

    def rollback(self, *, why: str) -> tuple[str, str]:
        """Go back to the version that was active before the current one; return (from, to)."""
        current = self.active_version()
        if current is None:
            raise FailedPrecondition("no model is active, so there is nothing to roll back")
        previous = self._activated_from(current)
        if not previous:
            raise FailedPrecondition(f"{current} was the first active model; there is nothing to roll back to")
        if not self.activate(previous, expected=current, why=why, action="rollback"):
            raise FailedPrecondition("the active model changed during the rollback; look again and retry")
        return current, previous

    # -- reading -------------------------------------------------------------------------------

    def active_version(self) -> str | None:
        value = self._redis.get(ACTIVE_KEY)
        return _text(value) or None

    def get(self, version: str, *, with_report: bool = True) -> ModelRecord:
        fields = (*SUMMARY_FIELDS, "report") if with_report else SUMMARY_FIELDS
        values = self._redis.hmget(model_key(version), list(fields))
        raw = {name: _text(value) for name, value in zip(fields, values, strict=True) if value is not None}
        if "version" not in raw:
            raise NotFound(f"model {version} is not registered")
        return ModelRecord.from_hash(raw)

    def list(self, limit: int = 50) -> builtins.list[ModelRecord]:
        """Most recent first; reads metadata only."""
        versions = [_text(v) for v in self._redis.zrevrange(MODELS_KEY, 0, max(limit, 1) - 1)]
        with self._redis.pipeline(transaction=False) as batch:
            for version in versions:
                batch.hmget(model_key(version), list(SUMMARY_FIELDS))
            rows = batch.execute()
        records = []
        for values in rows:
            raw = {n: _text(v) for n, v in zip(SUMMARY_FIELDS, values, strict=True) if v is not None}
            if "version" in raw:
                records.append(ModelRecord.from_hash(raw))
        return records

    def load(self, version: str) -> tuple[ModelRecord, object]:
        """Fetch, verify and only then unpickle a version's model."""
        record = self.get(version, with_report=False)
        blob = self._redis.get(blob_key(version))
        if blob is None:
            raise IntegrityError(f"model {version}: its blob is missing")
        assert isinstance(blob, bytes)
        self._signer.verify(blob, record)
        return record, joblib.load(io.BytesIO(blob))

    def verify(self, version: str) -> ModelRecord:
        """Check a version's blob without unpickling it."""
        record = self.get(version, with_report=False)
        blob = self._redis.get(blob_key(version))
        if blob is None:
            raise IntegrityError(f"model {version}: its blob is missing")
        assert isinstance(blob, bytes)
        self._signer.verify(blob, record)
        return record

    # -- scratch: signed models passed between the jobs of one retrain (fan-out), never versions ----

    def put_scratch(self, name: str, model: object, ttl_seconds: int) -> None:
        blob = serialize(model)
        key = f"{SCRATCH_PREFIX}{name}"
        self._redis.hset(key, mapping={"blob": blob, "signature": self._signer.sign(blob)})
        self._redis.expire(key, ttl_seconds)

    def take_scratch(self, name: str) -> object:
        """Load (after verifying) and delete a scratch model."""
        key = f"{SCRATCH_PREFIX}{name}"
        blob, signature = self._redis.hmget(key, ["blob", "signature"])
        if not isinstance(blob, bytes) or not isinstance(signature, bytes):
            raise IntegrityError(f"scratch model {name} is missing or expired")
        if not hmac.compare_digest(self._signer.sign(blob), signature.decode()):
            raise IntegrityError(f"scratch model {name}: signature is not valid for this registry key")
        self._redis.delete(key)
        return joblib.load(io.BytesIO(blob))

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


def _to_hash(record: ModelRecord) -> dict[FieldT, EncodableT]:
    return {
        "version": record.version, "kind": record.kind, "params": json.dumps(record.params),
        "metrics": json.dumps(record.metrics), "dataset": json.dumps(record.dataset),
        "created_at": record.created_at, "parent": record.parent, "sha256": record.sha256,
        "signature": record.signature, "blob_size": record.blob_size, "job_id": record.job_id,
        "code_version": record.code_version, "report": json.dumps(record.report),
    }


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
