from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from digits.errors import InvalidInput
from digits.training import datasets


def write_idx(directory: Path, images: np.ndarray, labels: np.ndarray, *, compress: bool) -> None:
    def idx(array: np.ndarray) -> bytes:
        return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()

    opener = gzip.open if compress else open
    suffix = ".gz" if compress else ""
    with opener(directory / f"train-images-idx3-ubyte{suffix}", "wb") as f:
        f.write(idx(images))
    with opener(directory / f"train-labels-idx1-ubyte{suffix}", "wb") as f:
        f.write(idx(labels))


@pytest.mark.parametrize("compress", [True, False])
def test_idx_files_read_as_784_pixel_rows(tmp_path: Path, compress: bool) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=30, dtype=np.uint8)
    write_idx(tmp_path, images, labels, compress=compress)
    data = datasets.load(f"idx:{tmp_path}", cache_dir=tmp_path)
    assert data.pixels.shape == (30, 784)
    assert np.array_equal(data.pixels[3], images[3].ravel())
    assert np.array_equal(data.labels, labels)
    assert data.record() == {"source": f"idx:{tmp_path}", "size": 30, "digest": data.digest}


def test_idx_errors_say_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="train-images-idx3-ubyte"):
        datasets.load(f"idx:{tmp_path}", cache_dir=tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"not idx")
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"not idx")
    with pytest.raises(InvalidInput, match="not an IDX"):
        datasets.load(f"idx:{tmp_path}", cache_dir=tmp_path)


def test_sample_is_the_5000_real_digits_and_splits_are_stratified_and_seeded(mnist_sample: datasets.Dataset) -> None:
    data = mnist_sample  # datasets.load("sample", ...), loaded once for the run (conftest.py)
    assert data.pixels.shape == (5000, 784) and data.pixels.dtype == np.uint8
    assert sorted(set(data.labels.tolist())) == list(range(10))
    first = datasets.split(data, seed=1, validation_fraction=0.2)
    again = datasets.split(data, seed=1, validation_fraction=0.2)
    other = datasets.split(data, seed=2, validation_fraction=0.2)
    assert np.array_equal(first.x_val, again.x_val) and not np.array_equal(first.x_val, other.x_val)
    assert len(first.y_val) == 1000 and first.sizes() == {"train": 3600, "holdout": 400, "validation": 1000}
    assert np.bincount(first.y_val).min() >= 0.08 * len(first.y_val)  # every digit held out in proportion
    small = datasets.split(data, seed=1, validation_fraction=0.2, limit=1000)
    assert sum(small.sizes().values()) == 1000
    assert small.spec == {"seed": 1, "validation_fraction": 0.2, "holdout_fraction": 0.1, "limit": 1000}
    assert small.validated_on() == "a stratified 20% of the set (seed 1)"
    unnamed = datasets.split(data, seed=1)  # the sample has no validation digits of its own: a stratified 20%
    assert np.array_equal(unnamed.x_val, first.x_val) and unnamed.spec == {**small.spec, "limit": 0}


def test_all_of_mnists_training_files_validate_on_their_last_10000_digits() -> None:
    """The classic split (docs/model-quality.md's), unless the job names a fraction or a limit; labels run 0..9 in
    file order here, so the stratified shares would hold every class in proportion and the last 10,000 would not."""
    pixels = (np.arange(60_000, dtype=np.int64)[:, None] % 251).astype(np.uint8) * np.ones((1, 784), np.uint8)
    labels = np.repeat(np.arange(10), 6000)
    data = datasets.Dataset(pixels, labels, "idx:/mnist")
    classic = datasets.split(data, seed=0)
    assert classic.sizes() == {"train": 45_000, "holdout": 5_000, "validation": 10_000}
    assert np.array_equal(classic.x_val, pixels[50_000:].astype(np.float32)) and set(classic.y_val) == {8, 9}
    assert np.bincount(classic.y_hold).tolist() == [600] * 8 + [200] and classic.spec == {
        "seed": 0, "validation_last": 10_000, "holdout_fraction": 0.1, "limit": 0}
    assert classic.validated_on() == "the last 10000 digits of the set"
    named = datasets.split(data, seed=0, validation_fraction=0.2)
    assert len(named.y_val) == 12_000 and np.bincount(named.y_val).tolist() == [1200] * 10
    assert datasets.split(data, seed=0, limit=6000).sizes()["validation"] == 1200
    assert datasets.split(data, seed=0, limit=60_000).spec == classic.spec  # a limit of every digit is no limit
    assert datasets.split(datasets.Dataset(pixels, labels, "openml"), seed=0).sizes()["validation"] == 12_000


OLD_RECORD = {"seed": 0, "validation_fraction": 0.2, "holdout_fraction": 0.1, "limit": 0}  # written before the
CLASSIC = {"seed": 0, "validation_last": 10_000, "holdout_fraction": 0.1, "limit": 0}  # classic split existed


@pytest.mark.parametrize(("a", "b", "same"), [
    (OLD_RECORD, dict(OLD_RECORD), True),
    (OLD_RECORD, {**OLD_RECORD, "holdout_fraction": 0.2}, True),  # the holdout comes out of the training share
    (OLD_RECORD, {**OLD_RECORD, "seed": 1}, False),
    (OLD_RECORD, {**OLD_RECORD, "validation_fraction": 0.25}, False),
    (OLD_RECORD, {**OLD_RECORD, "limit": 1000}, False),
    (OLD_RECORD, CLASSIC, False),
    (CLASSIC, {**CLASSIC, "seed": 7, "holdout_fraction": 0.3}, True),  # the last 10,000, whatever the seed
    ({}, {}, False),  # a version registered before splits were recorded
])
def test_the_gate_compares_versions_validated_on_the_same_digits(a: dict[str, object], b: dict[str, object],
                                                                 same: bool) -> None:
    assert datasets.same_validation_digits(a, b) is same and datasets.same_validation_digits(b, a) is same


def rows(*parts: np.ndarray) -> set[bytes]:
    return {row.astype(np.uint8).tobytes() for part in parts for row in part}


@pytest.mark.parametrize(("limit", "fraction"), [(1000, 0.0), (0, 0.25)])
def test_what_a_version_was_fitted_on_is_rebuilt_from_its_record(mnist_sample: datasets.Dataset, limit: int,
                                                                 fraction: float) -> None:
    """For a version registered before fingerprints were kept: a final fit saw every digit of the (limited) set, a
    split fit its training share and holdout; its split spec says which, rebuilt on its data set."""
    made = datasets.split(mnist_sample, seed=3, validation_fraction=fraction, limit=limit)
    split_fit = datasets.fitted_digits(mnist_sample, made.spec, "split")
    final_fit = datasets.fitted_digits(mnist_sample, made.spec, "all")
    assert split_fit is not None and final_fit is not None
    assert rows(*split_fit) == rows(made.x_train, made.x_hold)
    assert rows(*final_fit) == rows(made.x_train, made.x_hold, made.x_val)
    assert len(rows(*final_fit)) == (limit or mnist_sample.size)


@pytest.mark.parametrize(("spec", "fitted_on"), [
    ({}, "split"),  # registered before splits were recorded
    (OLD_RECORD, ""),  # before fitted_on was recorded
    (OLD_RECORD, "bench"),  # bench/stack.py's versions
    ({"seed": 0, "validation": "the last 10000", "holdout_fraction": 0.1, "limit": 0}, "split"),  # a spec of old
    ({**OLD_RECORD, "limit": 5000}, "all"),  # a limit of every digit is recorded as 0 by this code
])
def test_a_record_that_does_not_say_which_digits_rebuilds_nothing(mnist_sample: datasets.Dataset,
                                                                  spec: dict[str, object], fitted_on: str) -> None:
    assert datasets.fitted_digits(mnist_sample, spec, fitted_on) is None


def test_a_records_data_set_is_loaded_by_its_source(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write_idx(tmp_path, rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8), np.arange(5, dtype=np.uint8),
              compress=False)
    data = datasets.load(f"idx:{tmp_path}", cache_dir=tmp_path)
    assert datasets.load_source(data.source, cache_dir=tmp_path).digest == data.digest
    with pytest.raises(InvalidInput):
        datasets.load_source(f"idx:{tmp_path / 'gone'}", cache_dir=tmp_path)


def test_unknown_spec_is_refused() -> None:
    with pytest.raises(InvalidInput, match="sample"):
        datasets.load("s3://bucket", cache_dir=Path("."))
