"""Ed25519 signatures over registered models: only the trainer can sign, every service can verify.

The trainer holds the private key (``DIGITS_REGISTRY_SIGNING_KEY``); the gateway and the replicas hold only
public keys (``DIGITS_REGISTRY_PUBLIC_KEYS``), so a compromised replica or gateway cannot forge a model, and
whoever can write to Redis cannot either. Each signature names its key by id (the first 16 hex digits of the
public key's sha256), so a new key can be introduced beside the old one and old versions keep verifying.

Keys travel as base64 of their 32 raw bytes (``python -m digits.stack secrets`` makes a set).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from digits.errors import IntegrityError

KEY_BYTES = 32
KEY_ID_HEX = 16


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw_public(key)).hexdigest()[:KEY_ID_HEX]


def _decode(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not base64") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"{what} must be {KEY_BYTES} bytes in base64, got {len(raw)} bytes")
    return raw


class SigningKey:
    """The trainer's private key."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id(self.public)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_text(cls, text: str) -> SigningKey:
        return cls(Ed25519PrivateKey.from_private_bytes(_decode(text, "the registry signing key")))

    def to_text(self) -> str:
        raw = self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return base64.b64encode(raw).decode()

    @property
    def public_text(self) -> str:
        return base64.b64encode(_raw_public(self.public)).decode()

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self._private.sign(message)).decode()


class Verifier:
    """The public keys a service trusts, by key id."""

    def __init__(self, keys: Iterable[Ed25519PublicKey]) -> None:
        self._keys: Mapping[str, Ed25519PublicKey] = {key_id(k): k for k in keys}

    @classmethod
    def from_text(cls, text: str) -> Verifier:
        """Comma-separated base64 public keys."""
        parts = [p for p in text.replace("\n", ",").split(",") if p.strip()]
        return cls(Ed25519PublicKey.from_public_bytes(_decode(p, "a registry public key")) for p in parts)

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def verify(self, message: bytes, signed_by: str, signature: str, what: str) -> None:
        """Raise IntegrityError unless ``signature`` is a valid signature of ``message`` by key ``signed_by``."""
        key = self._keys.get(signed_by)
        if key is None:
            raise IntegrityError(f"{what} is signed with key {signed_by or '(none)'}, which this service does not "
                                 f"trust (trusted: {', '.join(sorted(self._keys)) or 'none'})")
        try:
            key.verify(base64.b64decode(signature, validate=True), message)
        except (InvalidSignature, binascii.Error, ValueError):
            raise IntegrityError(f"{what}: the signature does not match (forged or damaged)") from None

