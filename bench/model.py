"""The models the benchmark needs, trained the way a retrain job trains them, and cached.

- The production recipe (``digits.training.candidates.DEFAULT``): what `make up` and a plain retrain train, and what the
  stack serves in cases (b) to (e) and the open loop.
- The seed recipe (``svc``): its scikit-learn predict is case (a), the reference every figure is a ratio to.

Both are fitted with the trainer's own code (``services.trainer.comparison.fit_base``) on a stratified split
(seed 0, 20% validation, 10% of the rest holdout; a job asking for ``validation_fraction`` 0.2 makes the same
one, and every job made it until full-MNIST jobs moved to the classic split): fitted on ``x_train``, calibrated
on ``x_hold``; request payloads come from ``x_val``, digits neither model saw. Each fitted model is cached with
joblib under ``$DIGITS_CACHE_DIR/bench/``, keyed by the data digest and the recipe, so that reruns skip the fit.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import numpy.typing as npt
import sklearn

from digits.modelling.model import DigitModel
from digits.settings import Settings
from digits.training import datasets
from digits.training.candidates import CANDIDATES, DEFAULT

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"
SEED_RECIPE = "svc"
SEED = 0
VALIDATION_FRACTION = 0.2


def default_data_spec() -> str:
    """``$DIGITS_DATA`` if set, else the full MNIST next to the repo when present, else ``sample``."""
    settings = Settings()
    if "data" in settings.model_fields_set:  # an empty DIGITS_DATA is unset (Settings ignores empty variables)
        return settings.data
    return f"idx:{SHARED_MNIST}" if SHARED_MNIST.is_dir() else "sample"


def cache_dir() -> Path:
    """``bench/`` in the downloads cache (``DIGITS_CACHE_DIR``)."""
    return Settings().cache_dir / "bench"


@dataclass(frozen=True)
class Trained:
    """One recipe fitted on the split's training share."""

    recipe: str
    model: DigitModel
    fit_seconds: float  # of the fit that produced the cached model
    cached: bool  # True when this run reused a cached fit

    @property
    def n_support_vectors(self) -> int:
        return int(self.model.describe().get("n_support_vectors", 0))


@dataclass(frozen=True)
class BenchModels:
    production: Trained
    seed: Trained
    dataset: dict[str, object]  # source, size, digest
    train_size: int
    payload_pixels: npt.NDArray[np.float32]  # (n, 784) validation digits, 0..255
    payload_labels: npt.NDArray[np.int64]


def _key(digest: str, recipe: str) -> str:
    described = {"candidate": recipe, "params": dict(CANDIDATES[recipe].params), "seed": SEED,
                 "validation_fraction": VALIDATION_FRACTION, "sklearn": sklearn.__version__}
    recipe_digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
    return f"{digest[:16]}-{recipe}-{recipe_digest[:12]}"


def train_or_reuse(spec: str, *, log: bool = True) -> BenchModels:
    """Load ``spec``, split it as a retrain job does, and fit (or reuse) the production and the seed recipes."""
    data = datasets.load(spec, cache_dir=cache_dir().parent)
    split = datasets.split(data, seed=SEED, validation_fraction=VALIDATION_FRACTION)
    production, seed = (_trained(recipe, data.digest, split, log) for recipe in (DEFAULT[0], SEED_RECIPE))
    return BenchModels(production=production, seed=seed, dataset=data.record(), train_size=len(split.y_train),
                       payload_pixels=split.x_val, payload_labels=split.y_val)


def served_after_a_full_retrain(spec: str, *, log: bool = True) -> Trained:
    """The production recipe as a retrain job on ``spec`` promotes it: fitted on the split, then refitted on every
    digit (``services.trainer.comparison.fit_final``); what a stack trained on full MNIST serves. Cached like the
    split fits. It has seen every digit of ``spec``: a speed yardstick, never judged on them."""
    data = datasets.load(spec, cache_dir=cache_dir().parent)
    split = datasets.split(data, seed=SEED, validation_fraction=VALIDATION_FRACTION)
    return _trained(DEFAULT[0], data.digest, split, log, every_digit=True)


def _trained(recipe: str, digest: str, split: datasets.Split, log: bool, every_digit: bool = False) -> Trained:
    from services.trainer.comparison import fit_base, fit_final

    what = f"{len(split.y_train) + len(split.y_hold) + len(split.y_val):,} digits (all)" if every_digit else \
        f"{len(split.y_train):,} digits"
    path = cache_dir() / f"{_key(digest, recipe)}{'-all' if every_digit else ''}.joblib"
    cached = path.is_file()
    if cached:
        stored = joblib.load(path)
        model, fit_seconds = stored["model"], float(stored["fit_seconds"])
        if log:
            print(f"bench: reusing {path.name} ({recipe}, fitted on {what} in {fit_seconds:.0f}s)")
    else:
        if log:
            print(f"bench: fitting the {recipe} recipe on {what} (cached afterwards)", flush=True)
        fitted = fit_base(CANDIDATES[recipe], split, SEED)
        model, fit_seconds = fitted.model, float(fitted.metrics["fit_seconds"])
        if every_digit:
            model, facts = fit_final(fitted, split, SEED)
            fit_seconds = float(facts["fit_seconds"])
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        joblib.dump({"model": model, "fit_seconds": fit_seconds}, partial)
        partial.replace(path)
        if log:
            print(f"bench: fitted {recipe} in {fit_seconds:.0f}s, cached as {path}", flush=True)
    if not isinstance(model, DigitModel):
        raise TypeError(f"{path} holds a {type(model).__name__}, not a DigitModel; delete it and rerun")
    return Trained(recipe, model, fit_seconds, cached)
