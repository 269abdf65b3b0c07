"""Fingerprints of digits (digits/training/fingerprints.py): one per digit, of its pixels only, exact to a pixel,
stored sorted and distinct, and found again among a version's."""

from __future__ import annotations

import numpy as np
import pytest

from digits.training import datasets, fingerprints


def test_a_digit_is_known_by_its_pixels_to_the_last_one(mnist_sample: datasets.Dataset) -> None:
    pixels = mnist_sample.pixels[:50]
    hashes = fingerprints.of(pixels)
    assert hashes.dtype == np.uint64 and hashes.shape == (50,)
    assert len(set(hashes.tolist())) == 50  # different digits, different fingerprints
    assert np.array_equal(fingerprints.of(pixels.astype(np.float32)), hashes)  # a split's float pixels: the same
    assert np.array_equal(fingerprints.of(pixels[::-1]), hashes[::-1])  # one per row, in the rows' order
    nudged = pixels.copy()
    nudged[7, 400] ^= 1
    changed = fingerprints.of(nudged) != hashes
    assert changed.tolist() == [i == 7 for i in range(50)]


def test_only_whole_pixels_of_784_are_fingerprinted() -> None:
    with pytest.raises(ValueError, match="784"):
        fingerprints.of(np.zeros((2, 783), dtype=np.uint8))
    with pytest.raises(ValueError, match="whole numbers"):
        fingerprints.of(np.full((1, 784), 0.5, dtype=np.float32))
    with pytest.raises(ValueError, match="whole numbers"):
        fingerprints.of(np.full((1, 784), 256.0, dtype=np.float32))


def test_a_version_keeps_them_sorted_and_distinct_eight_bytes_each(mnist_sample: datasets.Dataset) -> None:
    pixels = mnist_sample.pixels[:100]
    repeated = np.concatenate([pixels, pixels[:30]])  # a digit met twice is kept once
    stored = fingerprints.dump(fingerprints.of(repeated))
    assert len(stored) == 100 * fingerprints.BYTES
    loaded = fingerprints.load(stored)
    assert np.array_equal(loaded, np.sort(fingerprints.of(pixels)))
    assert np.array_equal(fingerprints.distinct(fingerprints.of(pixels[:60]), fingerprints.of(pixels[40:])), loaded)
    assert len(fingerprints.distinct()) == 0
    with pytest.raises(ValueError, match="8-byte"):
        fingerprints.load(stored[:-3])


def test_digits_are_found_among_a_versions_fingerprints(mnist_sample: datasets.Dataset) -> None:
    kept = fingerprints.distinct(fingerprints.of(mnist_sample.pixels[:200]))
    asked = fingerprints.of(mnist_sample.pixels[150:300])
    assert fingerprints.among(asked, kept).tolist() == [i < 50 for i in range(150)]
    assert not fingerprints.among(asked, fingerprints.distinct()).any()
