"""Candidates (digits.training.candidates): each records its recipe, overrides are checked by name, a job's list
resolves bases first."""

from __future__ import annotations

import pytest

from digits.errors import InvalidInput
from digits.training import candidates, recipes


def test_candidates_record_their_recipe() -> None:
    base = candidates.CANDIDATES["svc"]
    assert [s for s, _ in recipes.estimator(base, 0).steps] == ["scale", "model"]
    vsv = candidates.CANDIDATES["svc-vsv"].with_params({"virtual_shifts": "8", "rotations_deg": [-10, 10], "C": 5})
    assert vsv.params["deskew"] is True and vsv.params["virtual_shifts"] == "8"
    assert vsv.shifts == 0  # virtual shifts are not the job's augmentation of the whole training set
    final = recipes.estimator(vsv, 0)[-1]
    assert (final.shifts, final.rotations_deg, final.C) == ("8", (-10.0, 10.0), 5)
    undeskewed = candidates.CANDIDATES["svc-deskew"].with_params({"deskew": False})
    assert recipes.estimator(undeskewed, 0).steps[1][0] == "model"


def test_unknown_parameters_are_refused_naming_the_known_ones() -> None:
    with pytest.raises(InvalidInput, match="svc has no parameter gama, tol; it has C, break_ties, gamma, kernel"):
        candidates.CANDIDATES["svc"].with_params({"gama": 1, "tol": 2})
    assert candidates.CANDIDATES["svc"].with_params({"C": 3}).params["C"] == 3
    assert candidates.CANDIDATES["svc"].params["C"] == 10.0  # overrides make a new candidate


def test_job_parameters_shape_the_job_not_the_estimator() -> None:
    shifted = candidates.CANDIDATES["svc-shift"]
    assert shifted.shifts == 4 and candidates.CANDIDATES["svc"].shifts == 0
    assert "shifts" not in recipes.estimator(shifted, 0)[-1].get_params()
    blend = candidates.CANDIDATES["blend-logreg"]
    assert blend.top_n == 3
    final = recipes.estimator(blend, seed=7)  # a blender is its final estimator, not a pipeline over pixels
    assert not hasattr(final, "steps") and final.random_state == 7 and final.C == 1.0


def test_resolve_puts_bases_first_drops_repeats_and_applies_overrides() -> None:
    chosen = candidates.resolve(["vote-soft", "svc", "knn", "svc"], {"knn": {"n_neighbors": 5}})
    assert [c.name for c in chosen] == ["svc", "knn", "vote-soft"]
    assert chosen[1].params["n_neighbors"] == 5
    assert [c.name for c in candidates.resolve([])] == list(candidates.DEFAULT)


@pytest.mark.parametrize(("names", "params", "words"), [
    (["svc", "nope"], None, "unknown candidate nope"),
    (["svc"], {"knn": {"n_neighbors": 5}}, "parameters given for knn, which the job does not fit"),
    (["svc", "vote-hard"], None, "ensembles need at least two base candidates"),
    (["svc"], {"svc": {"bogus": 1}}, "svc has no parameter bogus"),
])
def test_resolve_refuses_what_a_job_cannot_fit(names: list[str], params: dict[str, dict[str, int]] | None,
                                               words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        candidates.resolve(names, params)
