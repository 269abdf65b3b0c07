"""Kept inputs and corrections in a real Redis: inputs bounded in count under a flood and in time, corrections that
copy the input, one per prediction, bounded in number, reviewed, and read back as the `corrections` data set."""

from __future__ import annotations

import time

import numpy as np
import pytest
import redis

from digits.errors import AlreadyExists, InvalidInput, NotFound, Overloaded
from digits.platform import corrections
from digits.platform.corrections import (
    FULL_RETRY_SECONDS,
    INPUT_PREFIX,
    INPUTS_KEY,
    Corrections,
    KeptInput,
    accepted,
    accepted_not_a_digit,
    check_prediction_id,
    new_prediction_id,
)


def store(client: redis.Redis, *, keep_seconds: int = 3600, keep_max: int = 1000,
          max_corrections: int = 100) -> Corrections:
    return Corrections(client, keep_seconds=keep_seconds, keep_max=keep_max, max_corrections=max_corrections)


def kept(digit: int = 7, version: str = "v3", ink: int | None = None) -> KeptInput:
    """A kept input whose pixels all hold ``ink`` (the digit by default)."""
    return KeptInput(new_prediction_id(), bytes([digit if ink is None else ink] * 784), digit, version)


def input_keys(client: redis.Redis) -> int:
    return sum(1 for _ in client.scan_iter(match=INPUT_PREFIX + "*", count=1000))


def test_ids_are_random_hex_and_anything_else_is_refused_in_words() -> None:
    ids = {new_prediction_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(check_prediction_id(i) == i for i in ids)
    for hostile in ("", "x" * 32, "A" * 32, "a" * 31, "a" * 33, "a" * 32 + "\n", None, 7, ["a" * 32], "a" * 10_000,
                    "../../digits:active", "*"):
        with pytest.raises(InvalidInput, match="32 hex digits") as refused:
            check_prediction_id(hostile)
        assert len(str(refused.value)) < 150  # a hostile payload is never echoed whole


def test_an_input_is_kept_under_its_id_for_a_while(redis_client: redis.Redis) -> None:
    inputs = store(redis_client, keep_seconds=600)
    one = kept(4, "v12")
    assert inputs.keep([one]) == 0
    assert inputs.kept(one.prediction_id) == one
    assert 590 <= redis_client.ttl(INPUT_PREFIX + one.prediction_id) <= 600
    assert inputs.kept(new_prediction_id()) is None


def test_a_flood_of_predictions_keeps_at_most_keep_max_inputs_and_bounded_memory(redis_client: redis.Redis) -> None:
    inputs = store(redis_client, keep_max=200)
    evicted = 0
    memory = []
    for round_ in range(40):  # 40 batches of 100: 20 times the bound
        batch = [kept(n % 10) for n in range(100)]
        evicted += inputs.keep(batch)
        assert input_keys(redis_client) <= 200 and redis_client.zcard(INPUTS_KEY) <= 200
        if round_ in (4, 39):
            memory.append(int(redis_client.info("memory")["used_memory"]))
    assert evicted == 4000 - 200
    assert input_keys(redis_client) == 200 == redis_client.zcard(INPUTS_KEY)
    assert all(inputs.kept(k.prediction_id) is not None for k in batch)  # the newest stay, the oldest went first
    # After 500 inputs and after 4,000, Redis holds the same: the bound, not the flood, decides its memory.
    assert abs(memory[1] - memory[0]) < 100_000, memory
    print(f"[kept inputs] 4,000 kept with a bound of 200: {input_keys(redis_client)} keys, "
          f"{memory[1] / 1e6:.2f} MB used")


def test_expired_inputs_leave_the_index_too(redis_client: redis.Redis) -> None:
    inputs = store(redis_client, keep_seconds=1)
    old = kept()
    inputs.keep([old])
    time.sleep(1.1)
    assert inputs.kept(old.prediction_id) is None
    with pytest.raises(NotFound, match=r"expired .*kept 1 s.* or never existed"):
        inputs.correct(old.prediction_id, 1, "10.0.0.1")
    inputs.keep([kept()])  # the next write drops index entries whose keys expired
    assert redis_client.zcard(INPUTS_KEY) == 1


def test_a_correction_copies_the_input_and_outlives_it(redis_client: redis.Redis) -> None:
    inputs = store(redis_client)
    seven = kept(7, "v3", ink=200)
    inputs.keep([seven])
    correction, created = inputs.correct(seven.prediction_id, 1, "10.0.0.1")
    assert created and correction.status == "pending" and correction.digit == 1 and not correction.not_a_digit
    assert (correction.predicted_digit, correction.model_version, correction.caller) == (7, "v3", "10.0.0.1")
    assert correction.created_at.endswith("+00:00") and correction.pixels is None and not correction.reviewed_by
    redis_client.delete(INPUT_PREFIX + seven.prediction_id)  # the input expires
    shown = inputs.get(seven.prediction_id)
    assert shown.pixels == bytes([200] * 784) and shown.digit == 1


def test_one_correction_per_prediction_the_same_again_is_answered_with_the_first(redis_client: redis.Redis) -> None:
    inputs = store(redis_client)
    one = kept()
    inputs.keep([one])
    first, created = inputs.correct(one.prediction_id, None, "10.0.0.1")
    assert created and first.not_a_digit and first.digit is None
    again, created = inputs.correct(one.prediction_id, None, "10.0.0.2")
    assert not created and again == first  # a retry: nothing new stored, the first sender kept
    with pytest.raises(AlreadyExists, match="corrected already, as not a digit \\(pending\\)"):
        inputs.correct(one.prediction_id, 3, "10.0.0.1")
    assert inputs.counts().total == 1


def test_unknown_ids_and_labels_are_refused(redis_client: redis.Redis) -> None:
    inputs = store(redis_client)
    with pytest.raises(NotFound, match=r"no prediction .* to correct: it expired"):
        inputs.correct(new_prediction_id(), 1, "10.0.0.1")
    one = kept()
    inputs.keep([one])
    for bad in (10, -1, True, 1.5, "3"):
        with pytest.raises(InvalidInput, match="0 to 9"):
            inputs.correct(one.prediction_id, bad, "10.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="32 hex digits"):
        inputs.correct("digits:active", 1, "10.0.0.1")
    assert inputs.counts().total == 0


def test_the_store_of_corrections_is_bounded(redis_client: redis.Redis) -> None:
    inputs = store(redis_client, max_corrections=3)
    many = [kept() for _ in range(5)]
    inputs.keep(many)
    for one in many[:3]:
        inputs.correct(one.prediction_id, 1, "10.0.0.1")
    inputs.review(many[0].prediction_id, False, "admin")  # rejected ones count too: memory is memory
    with pytest.raises(Overloaded, match="full \\(3 of 3, DIGITS_CORRECTIONS_MAX\\)") as full:
        inputs.correct(many[3].prediction_id, 1, "10.0.0.1")
    assert full.value.retry_after_seconds == FULL_RETRY_SECONDS
    inputs.delete(many[0].prediction_id)  # an admin makes room
    inputs.correct(many[3].prediction_id, 1, "10.0.0.1")
    assert inputs.counts() == (3, 0, 0)
    with pytest.raises(NotFound):
        inputs.delete(many[0].prediction_id)


def test_review_moves_a_correction_between_statuses_and_may_change_its_mind(redis_client: redis.Redis) -> None:
    inputs = store(redis_client)
    one = kept()
    inputs.keep([one])
    inputs.correct(one.prediction_id, 2, "10.0.0.1")
    done, was = inputs.review(one.prediction_id, True, "admin@10.0.0.9")
    assert (done.status, was, done.reviewed_by) == ("accepted", "pending", "admin@10.0.0.9") and done.reviewed_at
    assert inputs.review(one.prediction_id, True, "admin")[1] == "accepted"  # again: unchanged
    done, was = inputs.review(one.prediction_id, False, "admin")
    assert (done.status, was) == ("rejected", "accepted") and inputs.counts() == (0, 0, 1)
    with pytest.raises(NotFound, match="no correction"):
        inputs.review(new_prediction_id(), True, "admin")


def test_listing_is_newest_first_by_status(redis_client: redis.Redis) -> None:
    inputs = store(redis_client)
    many = [kept(n) for n in range(4)]
    inputs.keep(many)
    for n, one in enumerate(many):
        inputs.correct(one.prediction_id, (n + 1) % 10, "10.0.0.1")
        time.sleep(0.002)
    inputs.review(many[1].prediction_id, True, "admin")
    assert [c.prediction_id for c in inputs.list()] == [m.prediction_id for m in reversed(many)]
    assert [c.prediction_id for c in inputs.list(limit=2)] == [many[3].prediction_id, many[2].prediction_id]
    assert [c.prediction_id for c in inputs.list("accepted")] == [many[1].prediction_id]
    assert all(c.pixels is None for c in inputs.list())
    with pytest.raises(InvalidInput, match="status must be one of"):
        inputs.list("everything")


def test_accepted_corrections_are_the_data_set(redis_client: redis.Redis) -> None:
    inputs = store(redis_client)
    many = [kept(n, ink=10 * n + 1) for n in range(6)]
    inputs.keep(many)
    truths: list[int | None] = [3, None, 5, 8, 0, 9]
    for one, truth in zip(many, truths, strict=True):
        inputs.correct(one.prediction_id, truth, "10.0.0.1")
        time.sleep(0.002)
    for n in (0, 1, 2, 4):
        inputs.review(many[n].prediction_id, True, "admin")
    inputs.review(many[4].prediction_id, False, "admin")  # accepted, then rejected
    data = accepted(redis_client)
    assert data.pixels.dtype == np.uint8 and data.pixels.shape == (2, 784)
    assert data.labels.dtype == np.int64 and data.labels.tolist() == [3, 5]  # oldest first; pending ones left out
    assert data.ids == [many[0].prediction_id, many[2].prediction_id]
    assert data.pixels[:, 0].tolist() == [1, 21]  # the pixels the model saw
    refused = accepted_not_a_digit(redis_client)
    assert refused.ids == [many[1].prediction_id] and refused.pixels.shape == (1, 784)


def test_nothing_accepted_is_an_empty_data_set(redis_client: redis.Redis) -> None:
    data = accepted(redis_client)
    assert data.pixels.shape == (0, 784) and data.labels.shape == (0,) and data.ids == []


def test_auto_accept_skips_the_review(redis_client: redis.Redis) -> None:
    inputs = store(redis_client)
    one = kept()
    inputs.keep([one])
    done, created = inputs.correct(one.prediction_id, 4, "10.0.0.1", auto_accept=True)
    assert created and done.status == "accepted" and done.reviewed_by == "auto"
    assert accepted(redis_client).ids == [one.prediction_id]


def test_keeping_nothing_writes_nothing(redis_client: redis.Redis) -> None:
    inputs = store(redis_client, keep_seconds=0)
    assert inputs.keep([kept()]) == 0
    assert redis_client.dbsize() == 0
    assert corrections.label_text(None) == "not-a-digit" and corrections.label_text(7) == "7"


def test_what_people_corrected_of_a_version_is_read_bounded_and_fast(redis_client: redis.Redis) -> None:
    corrections_store = store(redis_client, keep_max=12_000, max_corrections=12_000)
    mine = [kept(4, "v3") for _ in range(9_990)] + [kept(7, "v3") for _ in range(6)]
    others = [kept(4, "v2") for _ in range(4)]
    for start in range(0, len(mine) + len(others), 1000):
        corrections_store.keep((mine + others)[start:start + 1000])
    with redis_client.pipeline(transaction=False) as pipe:  # as if 10,000 corrections came: written directly
        for n, one in enumerate(mine + others):
            pipe.hset(corrections.correction_key(one.prediction_id), mapping={
                "version": one.version, "predicted": str(one.digit), "label": "9" if n % 2 else "not-a-digit",
                "status": "pending" if n < 10 else "accepted", "created": str(n)})
            pipe.zadd(corrections.status_key("pending" if n < 10 else "accepted"), {one.prediction_id: n})
        pipe.execute()
    corrections_store.review(mine[-1].prediction_id, False, "admin")  # rejected: not counted
    started = time.perf_counter()
    seen = corrections.of_version(redis_client, "v3")
    took = time.perf_counter() - started
    assert seen.complete and seen.read == 9_999
    assert seen.by_status == {"accepted": 9_985, "pending": 10} and seen.total == 9_995
    assert seen.counts[(4, "9")] + seen.counts[(4, "not-a-digit")] == 9_990
    assert seen.counts[(7, "9")] + seen.counts.get((7, "not-a-digit"), 0) == 5
    assert took < 5, f"{took:.1f} s for 10,000 corrections"
    bounded = corrections.of_version(redis_client, "v3", most=100)
    assert not bounded.complete and bounded.read == 110 and bounded.total <= 110
    assert corrections.of_version(redis_client, "v9").total == 0
