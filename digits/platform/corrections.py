"""Predictions people can refer to, and their corrections, kept in Redis under ``digits:`` (docs/architecture.md).

- **Prediction ids** are made by the gateway for every answer: 32 random hex digits (a uuid4). Random, not a
  counter or a time: a correction points at an id, and only the one who got the answer knows it.
- **Kept inputs**: for ``DIGITS_KEEP_INPUTS_SECONDS`` the gateway keeps what the model saw under the id
  (``digits:input:<id>``, a string: the 784 pixel bytes, the predicted digit as one byte, then the model version),
  never the upload itself. A sorted set, ``digits:inputs`` (key -> Redis' time), indexes them; one script writes a
  batch, drops index entries whose keys have expired, and deletes the oldest keys past ``DIGITS_KEEP_INPUTS_MAX``,
  atomically: however many predictions arrive, at most that many inputs exist (Redis runs with ``noeviction``:
  a flood must not fill it).
- **Corrections** (``digits:correction:<id>``, a hash) say what the digit really was, or that it was not a digit.
  One per prediction id; the input is copied in, so it outlives the input's expiry. They wait as ``pending``
  until an admin accepts or rejects them (``digits:corrections:<status>``, sorted sets by creation time); at most
  ``DIGITS_CORRECTIONS_MAX`` are stored, whatever their status.
- **The data set** ``corrections``: the accepted ones, as labelled 28x28 uint8 pixels (``accepted``); "not a
  digit" corrections are kept apart (``accepted_not_a_digit``), for a model that learns to refuse.

Plain keys, written by scripts and transactions: Redis' append-only file keeps them through a restart.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import redis

from digits.errors import AlreadyExists, InvalidInput, NotFound, Overloaded
from digits.mnist import N_PIXELS

INPUT_PREFIX = "digits:input:"
INPUTS_KEY = "digits:inputs"
CORRECTION_PREFIX = "digits:correction:"
STATUSES = ("pending", "accepted", "rejected")
NOT_A_DIGIT = "not-a-digit"  # the stored label of a correction that says "not a digit"
FULL_RETRY_SECONDS = 60  # a full store frees room only when an admin deletes corrections: not within a second
_ID = re.compile(r"[0-9a-f]{32}")
_SUMMARY = ("prediction_id", "status", "label", "predicted", "version", "created_at", "caller", "reviewed_at",
            "reviewed_by")
_READ_CHUNK = 1000

# KEYS: the index, then the input keys; ARGV: ttl, max, then one value per input key.
# Index scores are Redis' own clock, so that gateways whose clocks differ trim alike.
_KEEP_LUA = """
local now = redis.call('TIME')
local seconds = tonumber(now[1]) + tonumber(now[2]) / 1000000
local ttl, most = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (seconds - ttl))
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ttl)
  redis.call('ZADD', KEYS[1], seconds, KEYS[i])
end
local excess = redis.call('ZCARD', KEYS[1]) - most
if excess > 0 then
  local oldest = redis.call('ZPOPMIN', KEYS[1], excess)
  for j = 1, #oldest, 2 do redis.call('DEL', oldest[j]) end
  return excess
end
return 0
"""

# KEYS: input, correction, pending, accepted, rejected.
# ARGV: id, label, caller, created (seconds), created_at, most, status, reviewed_by.
_CORRECT_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'exists', redis.call('HGET', KEYS[2], 'label'), redis.call('HGET', KEYS[2], 'status')}
end
local kept = redis.call('GET', KEYS[1])
if not kept then return {'missing'} end
local stored = redis.call('ZCARD', KEYS[3]) + redis.call('ZCARD', KEYS[4]) + redis.call('ZCARD', KEYS[5])
if stored >= tonumber(ARGV[6]) then return {'full', tostring(stored)} end
local status = ARGV[7]
redis.call('HSET', KEYS[2], 'prediction_id', ARGV[1], 'label', ARGV[2], 'caller', ARGV[3], 'created', ARGV[4],
           'created_at', ARGV[5], 'status', status, 'pixels', string.sub(kept, 1, 784),
           'predicted', tostring(string.byte(kept, 785)), 'version', string.sub(kept, 786))
if status == 'accepted' then
  redis.call('HSET', KEYS[2], 'reviewed_at', ARGV[5], 'reviewed_by', ARGV[8])
end
local sets = {pending = KEYS[3], accepted = KEYS[4], rejected = KEYS[5]}
redis.call('ZADD', sets[status], ARGV[4], ARGV[1])
return {'created'}
"""

# KEYS: correction, pending, accepted, rejected. ARGV: id, status, reviewed_at, reviewed_by.
_REVIEW_LUA = """
local old = redis.call('HGET', KEYS[1], 'status')
if not old then return {'missing'} end
if old == ARGV[2] then return {'unchanged'} end
local sets = {pending = KEYS[2], accepted = KEYS[3], rejected = KEYS[4]}
local created = redis.call('HGET', KEYS[1], 'created')
redis.call('ZREM', sets[old], ARGV[1])
redis.call('ZADD', sets[ARGV[2]], created, ARGV[1])
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'reviewed_at', ARGV[3], 'reviewed_by', ARGV[4])
return {'changed', old}
"""


def new_prediction_id() -> str:
    return uuid.uuid4().hex


def check_prediction_id(value: object) -> str:
    """``value`` if it is a prediction id; InvalidInput in words otherwise (never echoing much of a payload)."""
    if isinstance(value, str) and _ID.fullmatch(value):
        return value
    shown = repr(value)[:40] + ("..." if len(repr(value)) > 40 else "")
    raise InvalidInput(f"a prediction id is the 32 hex digits an answer's prediction_id holds; got {shown}")


def check_label(digit: object) -> int:
    """A correction's digit, 0 to 9."""
    if isinstance(digit, int) and not isinstance(digit, bool) and 0 <= digit <= 9:
        return digit
    raise InvalidInput(f"the true digit must be a whole number from 0 to 9, got {repr(digit)[:20]}")


def input_key(prediction_id: str) -> str:
    return INPUT_PREFIX + prediction_id


def correction_key(prediction_id: str) -> str:
    return CORRECTION_PREFIX + prediction_id


def status_key(status: str) -> str:
    return f"digits:corrections:{status}"


def label_text(digit: int | None) -> str:
    return NOT_A_DIGIT if digit is None else str(digit)


def _now_iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _text(value: object) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class KeptInput:
    """What the model saw for one answer: 784 uint8 pixels, and what it answered."""

    prediction_id: str
    pixels: bytes
    digit: int
    version: str

    def encoded(self) -> bytes:
        """The stored string: the pixels, the digit as one byte, the version (what _CORRECT_LUA reads back)."""
        if len(self.pixels) != N_PIXELS or not 0 <= self.digit <= 255:
            raise ValueError(f"a kept input is {N_PIXELS} pixels and a digit; got {len(self.pixels)} bytes")
        return self.pixels + bytes([self.digit]) + self.version.encode()[:200]


@dataclass(frozen=True)
class Correction:
    prediction_id: str
    status: str  # pending, accepted, rejected
    digit: int | None  # the true digit; None: not a digit
    predicted_digit: int
    model_version: str
    created_at: str
    caller: str
    reviewed_at: str = ""
    reviewed_by: str = ""
    pixels: bytes | None = None  # the 784 bytes the model saw (get() only)

    @property
    def not_a_digit(self) -> bool:
        return self.digit is None


def _correction(fields: dict[str, Any]) -> Correction:
    label = _text(fields.get("label"))
    pixels = fields.get("pixels")
    return Correction(
        prediction_id=_text(fields.get("prediction_id")), status=_text(fields.get("status")),
        digit=None if label == NOT_A_DIGIT else int(label), predicted_digit=int(_text(fields.get("predicted")) or -1),
        model_version=_text(fields.get("version")), created_at=_text(fields.get("created_at")),
        caller=_text(fields.get("caller")), reviewed_at=_text(fields.get("reviewed_at")),
        reviewed_by=_text(fields.get("reviewed_by")), pixels=bytes(pixels) if pixels is not None else None,
    )


class Counts(NamedTuple):
    pending: int
    accepted: int
    rejected: int

    @property
    def total(self) -> int:
        return self.pending + self.accepted + self.rejected


class Corrections:
    """Kept inputs and corrections in one Redis (blocking calls: the gateway runs them off its event loop)."""

    def __init__(self, client: redis.Redis, *, keep_seconds: int, keep_max: int, max_corrections: int) -> None:
        self.redis = client
        self.keep_seconds = keep_seconds
        self.keep_max = keep_max
        self.max_corrections = max_corrections
        self._keep = client.register_script(_KEEP_LUA)
        self._correct = client.register_script(_CORRECT_LUA)
        self._review = client.register_script(_REVIEW_LUA)

    # -- kept inputs ------------------------------------------------------------------------------------------

    def keep(self, inputs: Sequence[KeptInput]) -> int:
        """Keep ``inputs`` for ``keep_seconds``; returns how many of the oldest went to stay within ``keep_max``."""
        if not inputs or self.keep_seconds <= 0:
            return 0
        keys = [INPUTS_KEY, *(input_key(i.prediction_id) for i in inputs)]
        args: list[Any] = [self.keep_seconds, self.keep_max, *(i.encoded() for i in inputs)]
        return int(self._keep(keys=keys, args=args))

    def kept(self, prediction_id: str) -> KeptInput | None:
        value = self.redis.get(input_key(prediction_id))
        if value is None:
            return None
        data = bytes(value)  # type: ignore[arg-type]
        return KeptInput(prediction_id, data[:N_PIXELS], data[N_PIXELS], data[N_PIXELS + 1:].decode())

    # -- corrections ------------------------------------------------------------------------------------------

    def correct(self, prediction_id: str, digit: int | None, caller: str, *, auto_accept: bool = False
                ) -> tuple[Correction, bool]:
        """Store a correction of ``prediction_id``: ``digit`` (None: not a digit). Returns it and whether it is new:
        the same correction again is answered with the first (a retry after a lost reply); another one is refused
        (AlreadyExists). NotFound when the prediction's input is not kept (expired, or never existed); Overloaded
        when the store is full."""
        check_prediction_id(prediction_id)
        if digit is not None:
            check_label(digit)
        label = label_text(digit)
        now = time.time()
        status = "accepted" if auto_accept else "pending"
        keys = [input_key(prediction_id), correction_key(prediction_id), *(status_key(s) for s in STATUSES)]
        args: list[str | int] = [prediction_id, label, caller, repr(now), _now_iso(now), self.max_corrections, status,
                                 "auto"]
        outcome = [_text(part) for part in self._correct(keys=keys, args=args)]
        if outcome[0] == "exists":
            if outcome[1] != label:
                raise AlreadyExists(f"prediction {prediction_id} was corrected already, as {_said(outcome[1])} "
                                    f"({outcome[2]}); a prediction takes one correction")
            return self.get(prediction_id, pixels=False), False
        if outcome[0] == "missing":
            raise NotFound(f"no prediction {prediction_id} to correct: it expired (inputs are kept "
                           f"{self.keep_seconds:,} s after the answer) or never existed")
        if outcome[0] == "full":
            error = Overloaded(f"the store of corrections is full ({outcome[1]} of {self.max_corrections:,}, "
                               "DIGITS_CORRECTIONS_MAX); try again once an admin has reviewed and deleted some")
            error.retry_after_seconds = FULL_RETRY_SECONDS
            raise error
        return self.get(prediction_id, pixels=False), True

    def get(self, prediction_id: str, *, pixels: bool = True) -> Correction:
        check_prediction_id(prediction_id)
        fields = self.redis.hgetall(correction_key(prediction_id))
        if not fields:
            raise NotFound(f"no correction of prediction {prediction_id}")
        correction = _correction({_text(k): v for k, v in fields.items()})
        return correction if pixels else _without_pixels(correction)

    def review(self, prediction_id: str, accept: bool, reviewer: str) -> tuple[Correction, str]:
        """Accept or reject a correction (again: an admin may change their mind); returns it and its old status."""
        check_prediction_id(prediction_id)
        status = "accepted" if accept else "rejected"
        keys = [correction_key(prediction_id), *(status_key(s) for s in STATUSES)]
        outcome = [_text(part) for part in self._review(keys=keys, args=[prediction_id, status,
                                                                          _now_iso(time.time()), reviewer])]
        if outcome[0] == "missing":
            raise NotFound(f"no correction of prediction {prediction_id}")
        return self.get(prediction_id, pixels=False), outcome[1] if outcome[0] == "changed" else status

    def delete(self, prediction_id: str) -> None:
        check_prediction_id(prediction_id)
        with self.redis.pipeline(transaction=True) as tx:
            tx.delete(correction_key(prediction_id))
            for status in STATUSES:
                tx.zrem(status_key(status), prediction_id)
            deleted = tx.execute()[0]
        if not deleted:
            raise NotFound(f"no correction of prediction {prediction_id}")

    def counts(self) -> Counts:
        with self.redis.pipeline(transaction=False) as pipe:
            for status in STATUSES:
                pipe.zcard(status_key(status))
            return Counts(*(int(n) for n in pipe.execute()))

    def list(self, status: str = "", limit: int = 50) -> list[Correction]:
        """The newest ``limit`` corrections of ``status`` ("" for every status), without their pixels."""
        if status and status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)} (or empty for all), got {status[:20]!r}")
        newest: list[tuple[float, str]] = []
        for each in [status] if status else list(STATUSES):
            entries: list[tuple[bytes, float]] = self.redis.zrevrange(  # type: ignore[assignment]
                status_key(each), 0, limit - 1, withscores=True)
            newest += [(float(score), _text(member)) for member, score in entries]
        ids = [i for _, i in sorted(newest, reverse=True)[:limit]]
        with self.redis.pipeline(transaction=False) as pipe:
            for prediction_id in ids:
                pipe.hmget(correction_key(prediction_id), list(_SUMMARY))
            rows = pipe.execute()
        return [_correction(dict(zip(_SUMMARY, row, strict=True))) for row in rows if row[0] is not None]


def _said(label: str) -> str:
    return "not a digit" if label == NOT_A_DIGIT else f"a {label}"


def _without_pixels(correction: Correction) -> Correction:
    return Correction(**{**correction.__dict__, "pixels": None})


# -- the data set `corrections` ----------------------------------------------------------------------------------

class AcceptedCorrections(NamedTuple):
    """The accepted corrections that name a digit, oldest first: what a retrain adds as the data set ``corrections``."""

    pixels: npt.NDArray[np.uint8]  # (n, 784): what the model saw, light ink on dark, as MNIST
    labels: npt.NDArray[np.int64]  # (n,): the true digits
    ids: list[str]  # their prediction ids


class NotDigits(NamedTuple):
    """The accepted corrections that say "not a digit", oldest first (no digit to learn; kept for refusals)."""

    pixels: npt.NDArray[np.uint8]  # (n, 784)
    ids: list[str]


def accepted(client: redis.Redis) -> AcceptedCorrections:
    """The accepted corrections as labelled 28x28 uint8 pixels (``corrections`` as a training data set); the trainer
    calls it with its own Redis connection (its user may read ``digits:*``). "Not a digit" corrections are left
    out: ``accepted_not_a_digit`` has them."""
    digits = [(i, label, pixels) for i, label, pixels in _accepted_rows(client) if label != NOT_A_DIGIT]
    return AcceptedCorrections(_pixels([p for _, _, p in digits]),
                               np.array([int(label) for _, label, _ in digits], dtype=np.int64),
                               [i for i, _, _ in digits])


def accepted_not_a_digit(client: redis.Redis) -> NotDigits:
    rows = [(i, pixels) for i, label, pixels in _accepted_rows(client) if label == NOT_A_DIGIT]
    return NotDigits(_pixels([p for _, p in rows]), [i for i, _ in rows])


def _accepted_rows(client: redis.Redis) -> Iterable[tuple[str, str, bytes]]:
    ids = [_text(i) for i in client.zrange(status_key("accepted"), 0, -1)]
    for start in range(0, len(ids), _READ_CHUNK):
        chunk = ids[start : start + _READ_CHUNK]
        with client.pipeline(transaction=False) as pipe:
            for prediction_id in chunk:
                pipe.hmget(correction_key(prediction_id), ["label", "pixels", "status"])
            rows = pipe.execute()
        for prediction_id, (label, pixels, status) in zip(chunk, rows, strict=True):
            # Deleted or reviewed otherwise since the index was read: not accepted any more.
            if pixels is not None and len(pixels) == N_PIXELS and _text(status) == "accepted":
                yield prediction_id, _text(label), bytes(pixels)


def _pixels(rows: list[bytes]) -> npt.NDArray[np.uint8]:
    if not rows:
        return np.zeros((0, N_PIXELS), dtype=np.uint8)
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), N_PIXELS).copy()


# -- what people corrected, by model version (the /models/<version> page) -----------------------------------------

# The newest corrections of each status read for a version's page: bounded, so the page stays fast however many
# there are (DIGITS_CORRECTIONS_MAX is 10,000 by default, of every status together).
VERSION_SCAN_MOST = 10_000
LIVE_STATUSES = ("accepted", "pending")  # a rejected correction is an admin saying the person was wrong


@dataclass(frozen=True)
class VersionCorrections:
    """The accepted and pending corrections of one model version: how many of each status, and how many said each
    (predicted digit, true label) pair (the label a digit's text or ``NOT_A_DIGIT``). ``read`` corrections of
    every version were looked at, the newest ``most`` of each status; ``complete`` says whether that was all."""

    version: str
    counts: dict[tuple[int, str], int]
    by_status: dict[str, int]
    read: int
    complete: bool

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


def of_version(client: redis.Redis, version: str, most: int = VERSION_SCAN_MOST) -> VersionCorrections:
    """What people corrected of ``version``'s answers (accepted and pending): two pipelined round trips, the
    newest ``most`` ids of each status, then one pipeline of HMGETs of their version, prediction and label."""
    with client.pipeline(transaction=False) as pipe:
        for status in LIVE_STATUSES:
            pipe.zrevrange(status_key(status), 0, most - 1)
            pipe.zcard(status_key(status))
        listed = pipe.execute()
    ids = [[_text(i) for i in listed[2 * n]] for n in range(len(LIVE_STATUSES))]
    complete = all(int(listed[2 * n + 1]) <= most for n in range(len(LIVE_STATUSES)))
    wanted = [(status, i) for status, chunk in zip(LIVE_STATUSES, ids, strict=True) for i in chunk]
    with client.pipeline(transaction=False) as pipe:
        for _, prediction_id in wanted:
            pipe.hmget(correction_key(prediction_id), ["version", "predicted", "label", "status"])
        rows = pipe.execute()
    counts: dict[tuple[int, str], int] = {}
    by_status = dict.fromkeys(LIVE_STATUSES, 0)
    for (status, _), (their_version, predicted, label, now) in zip(wanted, rows, strict=True):
        # Gone, of another version, or reviewed otherwise since the index was read: not counted here.
        if _text(their_version) != version or _text(now) != status:
            continue
        try:
            key = (int(_text(predicted)), _text(label))
        except ValueError:
            continue
        counts[key] = counts.get(key, 0) + 1
        by_status[status] += 1
    return VersionCorrections(version, counts, by_status, len(wanted), complete)
