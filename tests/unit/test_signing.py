"""Ed25519 model signatures: only the matching key verifies, keys are named by id, text forms round-trip."""

from __future__ import annotations

import base64

import pytest

from digits.errors import IntegrityError
from digits.platform.signing import KEY_ID_HEX, SigningKey, Verifier, key_id


def test_a_signature_verifies_with_its_public_key_and_nothing_else() -> None:
    key = SigningKey.generate()
    signature = key.sign(b"model bytes")
    verifier = Verifier.from_text(key.public_text)
    verifier.verify(b"model bytes", key.key_id, signature, "v1")
    with pytest.raises(IntegrityError, match="v1: the signature does not match"):
        verifier.verify(b"model bytes, changed", key.key_id, signature, "v1")
    other = SigningKey.generate()
    with pytest.raises(IntegrityError, match="does not match"):
        verifier.verify(b"model bytes", key.key_id, other.sign(b"model bytes"), "v1")


def test_an_unknown_or_missing_key_id_is_refused_and_the_trusted_ids_named() -> None:
    key, stranger = SigningKey.generate(), SigningKey.generate()
    verifier = Verifier.from_text(key.public_text)
    with pytest.raises(IntegrityError, match=f"key {stranger.key_id}, which this service does not trust") as caught:
        verifier.verify(b"m", stranger.key_id, stranger.sign(b"m"), "v2")
    assert key.key_id in str(caught.value)
    with pytest.raises(IntegrityError, match=r"key \(none\)"):
        verifier.verify(b"m", "", key.sign(b"m"), "v2")
    with pytest.raises(IntegrityError, match="trusted: none"):
        Verifier([]).verify(b"m", key.key_id, key.sign(b"m"), "v2")


def test_a_signature_that_is_not_base64_is_a_mismatch_not_a_crash() -> None:
    key = SigningKey.generate()
    with pytest.raises(IntegrityError, match="does not match"):
        Verifier.from_text(key.public_text).verify(b"m", key.key_id, "not base64!", "v3")


def test_several_keys_are_trusted_at_once_for_rotation() -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    verifier = Verifier.from_text(f"{old.public_text},\n{new.public_text}, ")
    assert verifier.key_ids == {old.key_id, new.key_id}
    verifier.verify(b"m", old.key_id, old.sign(b"m"), "old")
    verifier.verify(b"m", new.key_id, new.sign(b"m"), "new")


def test_text_forms_round_trip_and_the_key_id_is_the_public_keys_hash_prefix() -> None:
    key = SigningKey.generate()
    again = SigningKey.from_text(key.to_text())
    assert again.public_text == key.public_text and again.key_id == key.key_id
    assert len(key.key_id) == KEY_ID_HEX and key.key_id == key_id(key.public)
    assert key.key_id != SigningKey.generate().key_id
    Verifier.from_text(key.public_text).verify(b"m", key.key_id, again.sign(b"m"), "round trip")


@pytest.mark.parametrize(("text", "words"), [
    ("not base64 at all!", "is not base64"),
    (base64.b64encode(b"short").decode(), "must be 32 bytes in base64, got 5 bytes"),
])
def test_malformed_keys_are_refused_with_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=f"the registry signing key {words}"):
        SigningKey.from_text(text)
    with pytest.raises(ValueError, match=f"a registry public key {words}"):
        Verifier.from_text(text)
