"""Fingerprints of digits: which digits a model was fitted on, exactly and compactly.

A digit's fingerprint is the 8-byte blake2b hash of its 784 uint8 pixels; the label is left out, since a model
that was fitted on those pixels has seen that digit whatever it was told it was. Every registered version keeps the
sorted, distinct fingerprints of the digits it was fitted on (``digits:model:<v>:fitted``: 480 KB for all 60,000 of
MNIST's training digits), and the promotion gate drops the job's validation digits among them before it compares
the job's winner with the active model (``services/trainer/gate.py``).

Two different digits share a fingerprint with a probability of about n²/2⁶⁵ (10⁻¹⁰ for 60,000 against 60,000): the
gate would then drop a digit it could have kept, never keep one a model saw.
"""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

from digits.mnist import N_PIXELS

# What a version's record says its fingerprints are, so that another scheme is never read as this one.
SCHEME = "blake2b-64 of the 784 uint8 pixels; sorted, distinct, little-endian"
BYTES = 8

Fingerprints = npt.NDArray[np.uint64]


def of(pixels: npt.NDArray[np.generic]) -> Fingerprints:
    """One fingerprint per row of ``pixels`` (n, 784), in the rows' order. Float pixels (a split's) must hold the
    whole numbers 0..255 they were made of."""
    rows = np.asarray(pixels)
    if rows.ndim != 2 or rows.shape[1] != N_PIXELS:
        raise ValueError(f"expected rows of {N_PIXELS} pixels, got {rows.shape}")
    as_bytes = np.ascontiguousarray(rows, dtype=np.uint8)
    if rows.dtype != np.uint8 and not np.array_equal(as_bytes, rows):
        raise ValueError("pixels must be whole numbers from 0 to 255 to be fingerprinted")
    digests = b"".join(hashlib.blake2b(row, digest_size=BYTES).digest() for row in as_bytes)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def distinct(*parts: Fingerprints) -> Fingerprints:
    """The sorted, distinct fingerprints of every part: what a version keeps."""
    if not parts:
        return np.zeros(0, dtype=np.uint64)
    return np.unique(np.concatenate(parts)).astype(np.uint64)


def dump(fingerprints: Fingerprints) -> bytes:
    """The bytes stored beside a version's blob."""
    return distinct(fingerprints).astype("<u8").tobytes()


def load(data: bytes) -> Fingerprints:
    """Fingerprints from their stored bytes (sorted and distinct, as ``dump`` wrote them)."""
    if len(data) % BYTES:
        raise ValueError(f"{len(data)} bytes are not a whole number of {BYTES}-byte fingerprints")
    return np.frombuffer(data, dtype="<u8").astype(np.uint64)


def among(fingerprints: Fingerprints, kept: Fingerprints) -> npt.NDArray[np.bool_]:
    """Which of ``fingerprints`` are in ``kept`` (sorted and distinct, as a version keeps them)."""
    if len(kept) == 0:
        return np.zeros(len(fingerprints), dtype=bool)
    where = np.searchsorted(kept, fingerprints)
    return np.asarray(kept[np.minimum(where, len(kept) - 1)] == fingerprints, dtype=bool)
