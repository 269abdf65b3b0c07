"""The candidate models a retrain job can fit and compare: each named, with the parameters it declares.

This is the catalogue only: names, kinds, parameters and summaries, what a job spec is validated against. It
imports nothing heavy, so the gateway checks a Retrain request with it and never loads scikit-learn. How each
candidate becomes an estimator is ``digits.training.recipes``, which only the trainer imports.

Base candidates are fitted on the job's training digits. Ensembles (``vote-*``, ``blend-*``) are made from
the job's ``top_n`` base candidates, ranked on the holdout slice; a blender is fitted on the base models'
probabilities for that holdout slice, digits none of them was fitted on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from digits.errors import InvalidInput

Kind = Literal["base", "vote", "blend"]
# Parameters that shape the job rather than the estimator.
JOB_PARAMS = frozenset({"top_n", "shifts", "not_a_digit"})
# Parameters that shape a base candidate's pipeline before its estimator (each adds a fitted, pickled step).
PIPELINE_PARAMS = frozenset({"deskew", "gradients"})


@dataclass(frozen=True)
class Candidate:
    name: str
    kind: Kind
    params: Mapping[str, Any]
    summary: str

    def with_params(self, overrides: Mapping[str, Any]) -> Candidate:
        """The candidate with some parameters changed; a step's parameters (a dict) are changed key by key."""
        unknown = set(overrides) - set(self.params)
        if unknown:
            raise InvalidInput(f"{self.name} has no parameter {', '.join(sorted(unknown))}; it has "
                               f"{', '.join(sorted(self.params)) or 'none'}")
        merged = dict(self.params)
        for name, value in overrides.items():
            current = self.params[name]
            if isinstance(current, Mapping):
                if not isinstance(value, Mapping) or set(value) - set(current):
                    raise InvalidInput(f"{self.name}'s {name} takes {', '.join(sorted(current))}")
                value = {**current, **value}
            merged[name] = value
        return Candidate(self.name, self.kind, merged, self.summary)

    @property
    def top_n(self) -> int:
        return int(self.params.get("top_n", 0))

    @property
    def shifts(self) -> int:
        """How many one-pixel shifted copies of each training digit to add (0, 4 or 8)."""
        return int(self.params.get("shifts", 0))

    @property
    def not_a_digit(self) -> int:
        """Non-digits per family to learn a "not a digit" class from (``digits.training.open_set``); 0: none."""
        return int(self.params.get("not_a_digit", 0))

    @property
    def deskew(self) -> bool:
        """Whether the pipeline deskews the scaled digits before its estimator (``digits.modelling.preprocessing``)."""
        return bool(self.params.get("deskew", False))

    @property
    def estimator_params(self) -> dict[str, Any]:
        """The parameters of the estimator itself: neither the job's nor the pipeline's steps'."""
        return {k: v for k, v in self.params.items() if k not in JOB_PARAMS | PIPELINE_PARAMS}


# The seed recipe: break_ties sends a tied one-vs-one vote to the class with the larger decision values (not
# the lower index), so the digit is always the most probable one.
SVC_PARAMS = {"kernel": "rbf", "C": 10.0, "gamma": "scale", "break_ties": True}
FOREST = {"n_estimators": 200, "n_jobs": -1}
# Deskewed digits (Deskew step after scaling); see docs/model-quality.md.
SVC_DESKEW_PARAMS = {**SVC_PARAMS, "deskew": True}
# The production recipe before svc-grad (docs/model-quality.md): deskewed digits
# projected on 50 principal components; the SVC retrained on its support vectors plus copies shifted one pixel in
# 8 directions and two pixels in 4 ("4": one pixel in 4 directions, "8": and diagonally, "4x2": by one and by two
# pixels; see digits.modelling.vsv). gamma is for the projected digits. Not "shifts", which is the job's augmentation of
# the whole training set (``Candidate.shifts``).
VSV_PARAMS = {"deskew": True, "components": 50, "C": 10.0, "gamma": 0.04, "virtual_shifts": "8x2",
              "rotations_deg": [], "break_ties": True}
# The production recipe, chosen on the classic 50k/10k split and confirmed on 5 folds (docs/model-quality.md):
# moment-normalised digits, gradients in 16 directions sampled on a 7x7 lattice, projected on 128 principal
# components, then an RBF SVC. Every parameter of the feature step is spelled out, so that a version's record says
# exactly what it computes.
GRADIENTS = {"normalisation": "moment", "canvas": 32, "size": 24.0, "aspect": "sqrt", "slant": True, "radius": 2.0,
             "grid": 7, "sigma": 2.0, "directions": 16, "power": 0.5, "components": 128}
SVC_GRAD_PARAMS = {"gradients": GRADIENTS, "C": 10.0, "gamma": "scale", "break_ties": True}
# The production recipe also learns what is not a digit: this many of the project's own non-digits per family (at
# most a ninth of the training digits), the verdict's familiarity score (docs/model-quality.md, "Honest answers").
NOT_A_DIGIT = {"not_a_digit": 1000}
# The plain gradient-feature SVC the production recipe was measured against: deskewed digits, 8 directions.
PLAIN_GRADIENTS = {**GRADIENTS, "normalisation": "deskew", "directions": 8, "components": 0}
HIST_GB = {"max_iter": 100, "learning_rate": 0.1, "max_leaf_nodes": 31, "early_stopping": False}
TOP_N = {"top_n": 3}

CANDIDATES: dict[str, Candidate] = {c.name: c for c in [
    Candidate("svc", "base", SVC_PARAMS, "RBF SVC on pixels/255 (the seed recipe)"),
    Candidate("svc-shift", "base", {**SVC_PARAMS, "shifts": 4},
              "the svc recipe trained on the digits plus one-pixel shifts up, down, left and right"),
    Candidate("svc-deskew", "base", SVC_DESKEW_PARAMS,
              "the svc recipe on deskewed digits (sheared upright, mass centred: a step of the pipeline)"),
    Candidate("svc-grad", "base", {**SVC_GRAD_PARAMS, **NOT_A_DIGIT},
              "RBF SVC on gradient-direction features of moment-normalised digits, projected on 128 principal "
              "components, with a class for what is not a digit (the production recipe)"),
    Candidate("svc-grad-deskew", "base", {**SVC_GRAD_PARAMS, "gradients": PLAIN_GRADIENTS},
              "RBF SVC on 8-direction gradient features of deskewed digits (the plain gradient SVC)"),
    Candidate("svc-vsv", "base", VSV_PARAMS,
              "svc-deskew on 50 principal components, retrained on its support vectors plus shifted copies"),
    Candidate("knn", "base", {"n_neighbors": 3, "weights": "distance"}, "k nearest neighbours"),
    Candidate("random-forest", "base", FOREST, "random forest"),
    Candidate("extra-trees", "base", FOREST, "extremely randomized trees"),
    Candidate("hist-gb", "base", HIST_GB, "histogram gradient boosting"),
    Candidate("logreg", "base", {"C": 0.1, "max_iter": 300}, "multinomial logistic regression"),
    Candidate("vote-hard", "vote", TOP_N, "majority vote of the top base models"),
    Candidate("vote-soft", "vote", TOP_N, "mean probabilities of the top base models"),
    Candidate("blend-logreg", "blend", {**TOP_N, "C": 1.0, "max_iter": 1000},
              "logistic regression over the top base models' holdout probabilities"),
    Candidate("blend-hist-gb", "blend", {**TOP_N, "max_iter": 100},
              "gradient boosting over the top base models' holdout probabilities"),
    Candidate("blend-random-forest", "blend", {**TOP_N, **FOREST},
              "random forest over the top base models' holdout probabilities"),
    Candidate("blend-svc", "blend", {**TOP_N, "C": 1.0},
              "SVC over the top base models' holdout probabilities"),
]}

# What a retrain job fits when it names no candidates, and what `make up` trains first.
DEFAULT = ("svc-grad",)


def resolve(names: Iterable[str], params: Mapping[str, Mapping[str, Any]] | None = None) -> list[Candidate]:
    """The job's candidates with its parameter overrides, base candidates first; bad names or params refused."""
    names = list(dict.fromkeys(names)) or list(DEFAULT)
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise InvalidInput(f"unknown candidate {', '.join(unknown)}; known: {', '.join(CANDIDATES)}")
    params = params or {}
    stray = set(params) - set(names)
    if stray:
        raise InvalidInput(f"parameters given for {', '.join(sorted(stray))}, which the job does not fit")
    chosen = [CANDIDATES[n].with_params(params.get(n, {})) for n in names]
    bases = [c for c in chosen if c.kind == "base"]
    if len(bases) < len(chosen) and len(bases) < 2:
        raise InvalidInput("ensembles need at least two base candidates in the same job")
    return bases + [c for c in chosen if c.kind != "base"]
