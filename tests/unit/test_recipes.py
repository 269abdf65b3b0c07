"""digits.training.recipes: every candidate of the catalogue that is made of one estimator has exactly one builder,
and each builds an unfitted estimator of the kind it names."""

from __future__ import annotations

from sklearn.base import clone

from digits.training import candidates, recipes


def test_every_candidate_but_the_votes_has_a_builder() -> None:
    votes = {name for name, c in candidates.CANDIDATES.items() if c.kind == "vote"}
    assert set(recipes.BUILDERS) == set(candidates.CANDIDATES) - votes


def test_each_builds_an_unfitted_estimator_a_pipeline_for_bases() -> None:
    for name in recipes.BUILDERS:
        candidate = candidates.CANDIDATES[name]
        built = recipes.estimator(candidate, seed=3)
        clone(built)  # a well-formed, unfitted scikit-learn estimator
        steps = [s for s, _ in built.steps] if candidate.kind == "base" else []
        if candidate.kind == "base":
            assert steps[0] == "scale" and steps[-1] == "model", name
            assert ("gradients" in steps) == ("gradients" in candidate.params), name
            assert ("deskew" in steps) == candidate.deskew, name
        else:
            assert not hasattr(built, "steps"), name
