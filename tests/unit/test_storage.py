"""digits.modelling.storage: stored models load through today's code whatever module paths they name, and nothing
but the classes Digits' models are made of is ever unpickled, not even from a blob whose signature holds."""

from __future__ import annotations

import importlib
import importlib.util
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from digits.errors import IntegrityError
from digits.modelling import storage
from digits.modelling.model import ServedModel, ready_to_serve
from digits.training import datasets
from digits.training.candidates import CANDIDATES, resolve
from services.trainer.comparison import fit_base, fit_ensemble
from tests.payloads import RunsOnUnpickling

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "stored_models"
ANSWERS = json.loads((FIXTURES / "answers.json").read_text())
# Small enough to fit every recipe in seconds; each still has every step it has in production.
SMALL: dict[str, dict[str, Any]] = {
    "svc-grad": {"gradients": {"components": 8}}, "svc-grad-deskew": {"gradients": {"components": 8}},
    "svc-vsv": {"components": 8, "virtual_shifts": "4"}, "random-forest": {"n_estimators": 3},
    "extra-trees": {"n_estimators": 3}, "hist-gb": {"max_iter": 3}, "blend-random-forest": {"n_estimators": 3},
    "blend-hist-gb": {"max_iter": 3},
}


def probe(sample: datasets.Dataset) -> np.ndarray:
    return sample.pixels[::250].astype(np.float32)  # what answers.json was made with


@pytest.mark.parametrize("name", sorted(ANSWERS["models"]))
def test_models_stored_before_the_move_load_and_answer_as_they_did(mnist_sample: datasets.Dataset,
                                                                   name: str) -> None:
    blob = (FIXTURES / f"{name}.joblib").read_bytes()
    assert b"digits.model\x94" in blob or b"digits.model\n" in blob, "the fixture should name the old flat paths"
    model = ready_to_serve(storage.load(blob), name)
    labels, probabilities = model.predict(probe(mnist_sample))
    expected = ANSWERS["models"][name]
    assert labels.tolist() == expected["labels"]
    np.testing.assert_allclose(probabilities, expected["probabilities"], rtol=0, atol=1e-6)
    assert model.fast, "the moved fast path serves the old blob"


def test_every_recipe_stores_and_loads_within_the_allowlist(mnist_sample: datasets.Dataset) -> None:
    split = datasets.split(mnist_sample, seed=0, validation_fraction=0.2, holdout_fraction=0.25, limit=300)
    bases = [fit_base(c, split, 0) for c in resolve(["svc", "logreg", "knn"])]
    for name, candidate in CANDIDATES.items():
        chosen = resolve(["svc", "logreg", "knn", name] if candidate.kind != "base" else [name],
                         {name: SMALL[name]} if name in SMALL else {})[-1]
        fitted = fit_base(chosen, split, 0) if chosen.kind == "base" else fit_ensemble(chosen, bases, split, 0)
        assert fitted.model is not None
        loaded = storage.load(storage.dump(fitted.model))
        assert isinstance(loaded, ServedModel), name
        loaded.prepare()
        np.testing.assert_array_equal(loaded.predict(split.x_val)[0], fitted.model.predict(split.x_val)[0])


@pytest.mark.parametrize("payload", ["code", "builtin", "numpy function"])
def test_a_blob_naming_anything_else_is_refused_before_it_runs(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "ran"
    blob = {
        "code": lambda: pickle.dumps({"model": RunsOnUnpickling(marker)}),
        "builtin": lambda: pickle.dumps(eval),
        "numpy function": lambda: storage.dump(np.save),
    }[payload]()
    with pytest.raises(IntegrityError, match="no Digits model is made of"):
        storage.load(blob)
    assert not marker.exists()


def test_every_allowed_name_and_moved_path_exists() -> None:
    for module, name in storage.ALLOWED:
        assert hasattr(importlib.import_module(module), name), f"{module}.{name}"
    for old, new in storage.MOVED.items():
        assert importlib.util.find_spec(new) is not None, new
        assert importlib.util.find_spec(old) is None, f"{old} exists again: a stored path would load other code"
