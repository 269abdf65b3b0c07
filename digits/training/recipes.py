"""How each candidate of the catalogue (``digits.training.candidates``) becomes an unfitted estimator.

A base candidate is a scikit-learn pipeline over the 784 pixels: scaled to 0..1, then the steps its pipeline
parameters ask for (``deskew``, ``gradients``), then its estimator. A blender is its final estimator alone: it reads
the members' probabilities, not pixels. Only the trainer (and the benchmarks) import this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import SVC

from digits.modelling.gradients import GradientFeatures
from digits.modelling.model import scale_pixels
from digits.modelling.preprocessing import Deskew
from digits.modelling.vsv import VirtualSupportVectorSVC
from digits.training.candidates import Candidate

Builder = Callable[[Mapping[str, Any], int], Any]  # (the estimator's params, seed) -> an unfitted estimator


def estimator(candidate: Candidate, seed: int) -> Any:
    """A base candidate's pipeline over pixels, or a blender's final estimator."""
    build = BUILDERS.get(candidate.name)
    assert build is not None, f"{candidate.name} is not built from one estimator"
    bare = build(candidate.estimator_params, seed)
    return on_pixels(bare, preprocessing(candidate)) if candidate.kind == "base" else bare


def preprocessing(candidate: Candidate) -> list[tuple[str, Any]]:
    """The steps between scaling and the estimator, as the candidate's pipeline parameters declare them."""
    steps: list[tuple[str, Any]] = []
    if candidate.deskew:
        steps.append(("deskew", Deskew()))
    if "gradients" in candidate.params:
        steps.append(("gradients", GradientFeatures(**candidate.params["gradients"])))
    return steps


def on_pixels(final: Any, steps: Sequence[tuple[str, Any]] = ()) -> Pipeline:
    return Pipeline([("scale", FunctionTransformer(scale_pixels)), *steps, ("model", final)])


def _svc(params: Mapping[str, Any], seed: int) -> Any:
    return SVC(**params)


def _calibrated_svc(params: Mapping[str, Any], seed: int) -> Any:
    return CalibratedClassifierCV(SVC(**params, random_state=seed), ensemble=False)


def _vsv(params: Mapping[str, Any], seed: int) -> Any:
    own = dict(params)
    shifts = str(own.pop("virtual_shifts", "4"))
    rotations = tuple(float(d) for d in own.pop("rotations_deg", ()))
    return VirtualSupportVectorSVC(**own, shifts=shifts, rotations_deg=rotations)


def _knn(params: Mapping[str, Any], seed: int) -> Any:
    return KNeighborsClassifier(**params)


def _random_forest(params: Mapping[str, Any], seed: int) -> Any:
    return RandomForestClassifier(**params, random_state=seed)


def _extra_trees(params: Mapping[str, Any], seed: int) -> Any:
    return ExtraTreesClassifier(**params, random_state=seed)


def _hist_gb(params: Mapping[str, Any], seed: int) -> Any:
    return HistGradientBoostingClassifier(**params, random_state=seed)


def _logreg(params: Mapping[str, Any], seed: int) -> Any:
    return LogisticRegression(**params, random_state=seed)


# Every candidate built from one estimator; the votes are made of their members alone.
BUILDERS: dict[str, Builder] = {
    "svc": _svc, "svc-shift": _svc, "svc-deskew": _svc, "svc-grad": _svc, "svc-grad-deskew": _svc, "svc-vsv": _vsv,
    "knn": _knn, "random-forest": _random_forest, "extra-trees": _extra_trees, "hist-gb": _hist_gb,
    "logreg": _logreg, "blend-logreg": _logreg, "blend-hist-gb": _hist_gb, "blend-random-forest": _random_forest,
    "blend-svc": _calibrated_svc,
}
