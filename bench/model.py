"""The model the benchmark serves: the production ``svc`` recipe, trained the way a retrain job trains it.

Same split as the trainer (``datasets.split(data, seed=0, validation_fraction=0.2)``): fitted on ``x_train``,
calibrated on ``x_hold``; request payloads come from ``x_val``, digits the model never saw. The fitted
``DigitModel`` is cached with joblib under ``~/.cache/digits/bench/``, keyed by the data digest and the recipe,
so that reruns on the same data skip the fit.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import numpy.typing as npt
import sklearn

from digits import datasets
from digits.candidates import CANDIDATES
from digits.model import DigitModel

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"
CANDIDATE = "svc"
SEED = 0
VALIDATION_FRACTION = 0.2


def default_data_spec() -> str:
    """``$DIGITS_DATA`` if set, else the full MNIST next to the repo when present, else ``sample``."""
    if os.environ.get("DIGITS_DATA"):
        return os.environ["DIGITS_DATA"]
    return f"idx:{SHARED_MNIST}" if SHARED_MNIST.is_dir() else "sample"


def cache_dir() -> Path:
    base = Path(os.environ.get("DIGITS_CACHE_DIR", Path.home() / ".cache" / "digits"))
    return base / "bench"


@dataclass(frozen=True)
class BenchModel:
    model: DigitModel
    dataset: dict[str, object]  # source, size, digest
    train_size: int
    fit_seconds: float  # of the fit that produced the cached model
    cached: bool  # True when this run reused a cached fit
    payload_pixels: npt.NDArray[np.float32]  # (n, 784) validation digits, 0..255
    payload_labels: npt.NDArray[np.int64]

    @property
    def n_support_vectors(self) -> int:
        return int(self.model.describe().get("n_support_vectors", 0))


def _key(digest: str) -> str:
    recipe = {"candidate": CANDIDATE, "params": dict(CANDIDATES[CANDIDATE].params), "seed": SEED,
              "validation_fraction": VALIDATION_FRACTION, "sklearn": sklearn.__version__}
    recipe_digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    return f"{digest[:16]}-{CANDIDATE}-{recipe_digest[:12]}"


def train_or_reuse(spec: str, *, log: bool = True) -> BenchModel:
    """Load ``spec``, split it as a retrain job does, and fit (or reuse) the production SVC."""
    data = datasets.load(spec, cache_dir=cache_dir().parent)
    split = datasets.split(data, seed=SEED, validation_fraction=VALIDATION_FRACTION)
    path = cache_dir() / f"{_key(data.digest)}.joblib"
    cached = path.is_file()
    if cached:
        stored = joblib.load(path)
        model, fit_seconds = stored["model"], float(stored["fit_seconds"])
        if log:
            print(f"bench: reusing {path.name} (fitted on {len(split.y_train):,} digits in {fit_seconds:.0f}s)")
    else:
        if log:
            print(f"bench: fitting the {CANDIDATE} recipe on {len(split.y_train):,} digits of {data.source} "
                  "(minutes for full MNIST; cached afterwards)", flush=True)
        model = DigitModel(CANDIDATES[CANDIDATE].estimator(SEED))
        started = time.perf_counter()
        model.estimator.fit(split.x_train, split.y_train)
        fit_seconds = time.perf_counter() - started
        model.calibrate(split.x_hold, split.y_hold)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        joblib.dump({"model": model, "fit_seconds": fit_seconds}, partial)
        partial.replace(path)
        if log:
            print(f"bench: fitted in {fit_seconds:.0f}s, cached as {path}", flush=True)
    if not isinstance(model, DigitModel):
        raise TypeError(f"{path} holds a {type(model).__name__}, not a DigitModel; delete it and rerun")
    return BenchModel(model=model, dataset=data.record(), train_size=len(split.y_train), fit_seconds=fit_seconds,
                      cached=cached, payload_pixels=split.x_val, payload_labels=split.y_val)
