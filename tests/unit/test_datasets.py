from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from digits.errors import InvalidInput
from digits.modelling import imaging
from digits.training import datasets, sources


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


# People's own digits: pictures in DIR/0 ... DIR/9, read the way Predict reads an upload.

LIMITS = datasets.ImageLimits(max_bytes=200_000, max_pixels=1_000_000)


def picture(pixels: np.ndarray, kind: str) -> bytes:
    """A person's picture of an MNIST digit: dark ink on white paper, scaled up, as PNG or JPEG."""
    image = Image.fromarray(255 - pixels.reshape(28, 28)).resize((112, 112), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, format=kind)
    return out.getvalue()


def make_folder(directory: Path, data: datasets.Dataset, per_digit: int) -> list[tuple[str, int]]:
    """``per_digit`` pictures of each digit, alternately PNG and JPEG, drawn from ``data``; their paths and sample
    indices, in the order the folder is read (sorted)."""
    written = []
    for digit in range(10):
        (directory / str(digit)).mkdir(parents=True)
        for n, index in enumerate(np.flatnonzero(data.labels == digit)[:per_digit]):
            kind = "PNG" if n % 2 else "JPEG"
            name = f"{digit}/{n:03d}.{'png' if kind == 'PNG' else 'jpg'}"
            (directory / name).write_bytes(picture(data.pixels[index], kind))
            written.append((name, int(index)))
    return sorted(written)


def test_a_folder_reads_each_picture_as_predict_would_and_skips_and_names_bad_files(
    tmp_path: Path, mnist_sample: datasets.Dataset
) -> None:
    folder = tmp_path / "mine"
    written = make_folder(folder, mnist_sample, per_digit=3)
    good_png = (folder / "1/001.png").read_bytes()
    (folder / "3/broken.png").write_bytes(good_png[: len(good_png) // 2])  # a PNG cut off half way
    (folder / "5/notes.png").write_text("not a picture at all")
    (folder / "6/blank.png").write_bytes(picture(np.zeros(784, np.uint8), "PNG"))  # white paper, no ink
    (folder / "8/huge.png").write_bytes(b"\x89PNG" + b"\0" * LIMITS.max_bytes)
    (tmp_path / "outside.png").write_bytes(good_png)
    (folder / "7/out.png").symlink_to(tmp_path / "outside.png")  # a link out of the folder: never followed
    (folder / "9/nested").mkdir()
    (folder / "9/nested/again.png").symlink_to(folder / "1/001.png")  # a link inside it: read, at any depth
    (folder / "2/.DS_Store").write_bytes(b"\0")  # hidden: not read
    (folder / "README.md").write_text("only the folders 0 to 9 are read")

    data = datasets.load(f"folder:{folder}", cache_dir=tmp_path, limits=LIMITS)
    assert data.source == f"folder:{folder}" and data.size == 31
    expected = [*written, ("9/nested/again.png", -1)]
    assert data.labels.tolist() == [int(name[0]) for name, _ in sorted(expected)]
    first = imaging.read_image((folder / "0/000.jpg").read_bytes(), max_bytes=LIMITS.max_bytes,
                               max_pixels=LIMITS.max_pixels)
    assert np.array_equal(data.pixels[0], np.rint(first).astype(np.uint8))  # serving's reading, to 8 bits
    for row, (_, index) in zip(data.pixels, written[:10], strict=False):  # and it is the digit drawn
        assert np.corrcoef(row.astype(float), mnist_sample.pixels[index].astype(float))[0, 1] > 0.8

    reasons = {s.path: s.reason for s in data.skipped}
    assert set(reasons) == {"3/broken.png", "5/notes.png", "6/blank.png", "8/huge.png", "7/out.png"}
    assert reasons["3/broken.png"].startswith("could not read the image")
    assert "not a PNG, JPEG, BMP, GIF or WebP image" in reasons["5/notes.png"]
    assert reasons["6/blank.png"].startswith("no digit found")
    assert "the limit is 200,000" in reasons["8/huge.png"]
    assert "link out of the folder" in reasons["7/out.png"]
    assert data.record() == {"source": data.source, "size": 31, "digest": data.digest, "skipped": 5}
    again = datasets.load(f"folder:{folder}", cache_dir=tmp_path, limits=LIMITS)
    assert again.digest == data.digest  # sorted, deterministic


def test_a_folder_with_no_readable_digit_or_too_many_files_fails_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no such directory"):
        datasets.load(f"folder:{tmp_path / 'nowhere'}", cache_dir=tmp_path, limits=LIMITS)
    (tmp_path / "seven").mkdir()
    with pytest.raises(InvalidInput, match=r"no readable digit \(it has no files in folders named 0 to 9"):
        datasets.load(f"folder:{tmp_path}", cache_dir=tmp_path, limits=LIMITS)
    (tmp_path / "7").mkdir()
    (tmp_path / "7/a.png").write_text("text")
    with pytest.raises(InvalidInput, match=r"no readable digit \(1 file skipped, e.g. 7/a.png: could not read"):
        datasets.load(f"folder:{tmp_path}", cache_dir=tmp_path, limits=LIMITS)
    for n in range(3):
        (tmp_path / f"7/{n}.png").write_text("text")
    with pytest.raises(InvalidInput, match="more than 3 files and folders"):
        datasets.load(f"folder:{tmp_path}", cache_dir=tmp_path, limits=datasets.ImageLimits(1000, 1000, max_files=3))


def test_a_folder_alone_must_hold_every_digit(tmp_path: Path, mnist_sample: datasets.Dataset) -> None:
    make_folder(tmp_path / "d", mnist_sample, per_digit=4)
    for picture_file in (tmp_path / "d/4").iterdir():
        picture_file.unlink()
    data = datasets.load(f"folder:{tmp_path / 'd'}", cache_dir=tmp_path, limits=LIMITS)
    with pytest.raises(InvalidInput, match="holds no 4s"):
        datasets.split(data, seed=0)


def test_sources_combine_and_the_report_lists_every_part_and_its_skipped_files(
    tmp_path: Path, mnist_sample: datasets.Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets, "load_sample", lambda: mnist_sample)
    make_folder(tmp_path / "d", mnist_sample, per_digit=2)
    (tmp_path / "d/0/bad.jpg").write_bytes(b"GIF89a")
    data = datasets.load(f"sample+folder:{tmp_path / 'd'}", cache_dir=tmp_path, limits=LIMITS)
    folder = data.parts[1]
    assert data.source == f"sample+folder:{tmp_path / 'd'}" and data.size == 5020
    assert [p.size for p in data.parts] == [5000, 20] and np.array_equal(data.pixels[5000:], folder.pixels)
    report = data.report()
    assert report["skipped"] == 1 and report["digest"] == data.digest
    assert report["parts"] == [
        {"source": "sample", "size": 5000, "digest": mnist_sample.digest},
        {"source": folder.source, "size": 20, "digest": folder.digest, "skipped": 1,
         "skipped_files": [{"path": "0/bad.jpg", "reason": folder.skipped[0].reason}]}]
    assert "could not read the image" in folder.skipped[0].reason
    assert data.record() == {k: v for k, v in report.items() if k != "parts"} | {
        "parts": [mnist_sample.record(), folder.record()]}
    assert mnist_sample.report() == {**mnist_sample.record(), "parts": [mnist_sample.record()]}


def test_every_kind_of_source_has_a_loader() -> None:
    assert set(datasets._LOADERS) == set(sources.KINDS)


def mnist_files() -> datasets.Dataset:
    """All of MNIST's training files, as far as the split can tell: 60,000 digits from idx:, each one its own."""
    pixels = (np.arange(60_000, dtype=np.int64)[:, None] % 251).astype(np.uint8) * np.ones((1, 784), np.uint8)
    return datasets.Dataset(pixels, np.repeat(np.arange(10), 6000), "idx:/mnist")


def folder_of(n: int, seed: int = 0) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    return datasets.Dataset(rng.integers(0, 256, (n, 784), dtype=np.uint8), np.arange(n) % 10, "folder:/mine")


def test_each_part_of_a_combination_keeps_its_own_validation_digits() -> None:
    """MNIST's files validate on their classic last 10,000 with or without a folder; a folder on a stratified 20%
    of its own; the spec lists every part's rule, and a single source's spec is as it always was."""
    mnist, folder = mnist_files(), folder_of(500)
    alone = datasets.split(mnist, seed=0)
    both = datasets.split(datasets.combine([mnist, folder]), seed=0)
    assert np.array_equal(both.x_val[:10_000], alone.x_val) and both.sizes()["validation"] == 10_100
    assert np.array_equal(both.x_val[10_000:], datasets.split(folder, seed=0).x_val)  # the folder's own 20%
    assert both.spec == {"seed": 0, "holdout_fraction": 0.1, "limit": 0, "parts": [
        {"size": 60_000, "validation_last": 10_000, "limit": 0},
        {"size": 500, "validation_fraction": 0.2, "limit": 0}]}
    assert both.validated_on() == ("each part's own: the last 10000 digits of idx:/mnist; "
                                   "a stratified 20% of folder:/mine (seed 0)")
    assert alone.spec == {"seed": 0, "validation_last": 10_000, "holdout_fraction": 0.1, "limit": 0}
    assert sum(both.sizes().values()) == 60_500

    other = datasets.split(datasets.combine([mnist, folder_of(300, seed=1)]), seed=0)
    assert np.array_equal(other.x_val[:10_000], alone.x_val)  # another folder: the same MNIST digits validate

    # A limit caps each part; a fraction the job names applies to each part.
    capped = datasets.split(datasets.combine([mnist, folder]), seed=2, limit=1000, validation_fraction=0.1)
    assert capped.spec["parts"] == [{"size": 60_000, "validation_fraction": 0.1, "limit": 1000},
                                    {"size": 500, "validation_fraction": 0.1, "limit": 0}]
    assert capped.sizes()["validation"] == 100 + 50 and sum(capped.sizes().values()) == 1500
    sample_like = datasets.Dataset(mnist.pixels[::12], mnist.labels[::12], "sample")
    with_folder = datasets.split(datasets.combine([sample_like, folder]), seed=3)
    assert np.array_equal(with_folder.x_val[:1000], datasets.split(sample_like, seed=3).x_val)


def test_a_small_folder_of_a_few_digits_each_still_splits(mnist_sample: datasets.Dataset) -> None:
    """Too few of a digit to stratify (one 3, two 7s): each digit is shared out on its own, seeded."""
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 7, 8, 9] * 1 + [1, 2, 4, 5, 8, 9, 0, 6] * 4)
    tiny = datasets.Dataset(np.full((len(labels), 784), 9, np.uint8), labels, "folder:/few")
    data = datasets.combine([mnist_sample, tiny])
    first, again = datasets.split(data, seed=4), datasets.split(data, seed=4)
    assert np.array_equal(first.y_val, again.y_val) and np.array_equal(first.y_train, again.y_train)
    assert sum(first.sizes().values()) == 5000 + len(labels)
    from_tiny = first.y_val[1000:]
    assert len(from_tiny) == sum(round(0.2 * c) for c in np.bincount(labels))  # a fifth of each digit, rounded


COMBINED: dict[str, Any] = {"seed": 0, "holdout_fraction": 0.1, "limit": 0, "parts": [
    {"size": 60_000, "validation_last": 10_000, "limit": 0}, {"size": 500, "validation_fraction": 0.2, "limit": 0}]}


@pytest.mark.parametrize(("a", "b", "same"), [
    (COMBINED, {**COMBINED, "holdout_fraction": 0.3}, True),
    (COMBINED, {**COMBINED, "seed": 1}, False),  # the folder's 20% depends on the seed
    (COMBINED, {**COMBINED, "limit": 70_000}, True),  # a limit above every part's size keeps every digit
    (COMBINED, {**COMBINED, "parts": [COMBINED["parts"][0], {**COMBINED["parts"][1], "size": 400}]}, False),
    (COMBINED, {**COMBINED, "parts": COMBINED["parts"][:1]}, False),
    (COMBINED, CLASSIC, False),
    ({**COMBINED, "parts": COMBINED["parts"][:1]}, {**COMBINED, "seed": 5, "parts": COMBINED["parts"][:1]}, True),
])
def test_the_gate_compares_combined_splits_part_by_part(a: dict[str, object], b: dict[str, object],
                                                        same: bool) -> None:
    assert datasets.same_validation_digits(a, b) is same and datasets.same_validation_digits(b, a) is same


def test_the_digit_folders_must_be_folders_of_the_folder_itself(tmp_path: Path, mnist_sample: datasets.Dataset) -> None:
    make_folder(tmp_path / "d", mnist_sample, per_digit=2)
    (tmp_path / "elsewhere").mkdir()
    for picture_file in (tmp_path / "d/5").iterdir():
        picture_file.rename(tmp_path / "elsewhere" / picture_file.name)
    (tmp_path / "d/5").rmdir()
    (tmp_path / "d/5").symlink_to(tmp_path / "elsewhere")  # DIR/5 a link: not followed
    (tmp_path / "d/6/inner").symlink_to(tmp_path / "d/7")  # a link to a folder inside: not followed either
    data = datasets.load(f"folder:{tmp_path / 'd'}", cache_dir=tmp_path, limits=LIMITS)
    assert data.size == 18 and 5 not in data.labels
    assert [(s.path, s.reason.split(" (")[0]) for s in data.skipped] == [
        ("5", "not a folder"), ("6/inner", "a link to a folder")]


# -- the accepted corrections ----------------------------------------------------------------------------------

def corrected(client: Any, truths: list[int | None], *, accept: int | None = None) -> list[str]:
    """Predictions of ``truths`` (None: not a digit) kept and corrected; the first ``accept`` of them (all by
    default) accepted, in reverse order (so that acceptance order is not id order). Their ids, in order."""
    from digits.platform.corrections import Corrections, KeptInput, new_prediction_id

    store = Corrections(client, keep_seconds=600, keep_max=1000, max_corrections=1000)
    inputs = [KeptInput(new_prediction_id(), bytes([n % 256] * 784), 0, "v1") for n in range(len(truths))]
    store.keep(inputs)
    for one, truth in zip(inputs, truths, strict=True):
        store.correct(one.prediction_id, truth, "test")
    for one in reversed(inputs[:len(truths) if accept is None else accept]):
        store.review(one.prediction_id, True, "admin")
    return [one.prediction_id for one in inputs]


def test_the_corrections_source_is_the_accepted_digits_sorted_by_id(redis_client: Any) -> None:
    truths: list[int | None] = [3, 1, None, 4, 1, 5, 9, 2]
    ids = corrected(redis_client, truths, accept=7)  # the last (a 2) stays pending
    data = datasets.load_corrections(redis_client)
    digits = sorted((i, t, n) for n, (i, t) in enumerate(zip(ids[:7], truths[:7], strict=True)) if t is not None)
    assert data.source == "corrections" and data.size == 6  # the "not a digit" and the pending one are not in it
    assert data.labels.tolist() == [t for _, t, _ in digits]
    assert data.pixels.dtype == np.uint8 and data.pixels.shape == (6, 784)
    assert [int(row[0]) for row in data.pixels] == [n for _, _, n in digits]  # each one's own pixels
    assert datasets.load_corrections(redis_client).digest == data.digest  # the same accepted set, the same digest
    corrected(redis_client, [7])
    assert datasets.load_corrections(redis_client).digest != data.digest


def test_no_accepted_corrections_or_no_redis_fails_the_job_in_words(redis_client: Any, tmp_path: Path) -> None:
    corrected(redis_client, [None, 3], accept=1)  # only a "not a digit" accepted
    with pytest.raises(InvalidInput, match="no accepted corrections"):
        datasets.load_corrections(redis_client)
    with pytest.raises(InvalidInput, match="read from Redis"):
        datasets.load("sample+corrections", cache_dir=tmp_path)


def test_the_corrections_part_keeps_a_stratified_fifth_to_validate_and_the_report_counts_both(
    redis_client: Any, tmp_path: Path, mnist_sample: datasets.Dataset, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(datasets, "load_sample", lambda: mnist_sample)
    corrected(redis_client, [d % 10 for d in range(50)])
    data = datasets.load("sample+corrections", cache_dir=tmp_path, redis_client=redis_client)
    assert [p.source for p in data.parts] == ["sample", "corrections"] and data.parts[1].size == 50
    made = datasets.split(data, seed=3, limit=1000)
    assert made.part_counts == ((800, 200), (40, 10))  # each part's own stratified 20%, the job's seed
    assert made.sizes()["validation"] == 210
    assert "a stratified 20% of corrections (seed 3)" in made.validated_on()
    corrections = data.parts[1]
    # Its validation digits are the ones it would keep alone, by the job's seed: one of each digit here.
    _, val = datasets._stratified(corrections.labels, 3, test_size=0.2)
    assert sorted(corrections.labels[val].tolist()) == list(range(10))
    assert np.array_equal(made.x_val[-10:], corrections.pixels[val].astype(np.float32))
    report = data.report(made)
    assert report["parts"][1] == {**corrections.record(), "fit": 40, "validation": 10}  # type: ignore[index]
    assert "fit" not in report["parts"][0]  # type: ignore[index]
    assert data.report() == {**data.record(), "parts": [mnist_sample.record(), corrections.record()]}
