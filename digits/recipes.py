"""Named training recipes: how to build an unfitted estimator, and the parameters that say so.

``svc`` is the production recipe: an RBF SVC, C=10, gamma="scale", on pixels/255.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import SVC

from digits.errors import InvalidInput
from digits.model import scale_pixels


@dataclass(frozen=True)
class Recipe:
    name: str
    build: Callable[[Mapping[str, Any]], Any]
    params: Mapping[str, Any] = field(default_factory=dict)

    def estimator(self) -> Any:
        return self.build(self.params)


def _svc(params: Mapping[str, Any]) -> Pipeline:
    return Pipeline([("scale", FunctionTransformer(scale_pixels)), ("svc", SVC(**params))])


RECIPES: dict[str, Recipe] = {
    # break_ties: a tied one-vs-one vote goes to the class with the larger decision values, not the lower
    # index, so the digit is always the most probable one.
    "svc": Recipe("svc", _svc, {"kernel": "rbf", "C": 10.0, "gamma": "scale", "break_ties": True}),
}

PRODUCTION = "svc"


def get(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise InvalidInput(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}") from None
