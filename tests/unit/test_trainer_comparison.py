"""Comparing a job's candidates (services.trainer.comparison): ranking on the holdout, the winner on validation with
its tie-breaks, one failing candidate recorded and skipped, the comparison table's rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from digits.modelling.model import DigitModel
from digits.training import candidates, datasets
from digits.training.candidates import Candidate
from services.trainer.comparison import Fitted, attempt, compare, rank, winner

SVC = candidates.CANDIDATES["svc"]


def fitted(name: str, ok: bool = True, **metrics: Any) -> Fitted:
    model = DigitModel(None) if ok else None
    return Fitted(SVC.with_params({}) if name == "svc" else Candidate(name, "base", {}, name), model, dict(metrics),
                  error="" if ok else "ValueError: no")


def test_rank_is_by_holdout_accuracy_and_skips_failures() -> None:
    a, b = fitted("a", holdout_accuracy=0.90, accuracy=0.99), fitted("b", holdout_accuracy=0.95, accuracy=0.80)
    failed = fitted("c", ok=False)
    assert [f.candidate.name for f in rank([a, failed, b])] == ["b", "a"]


def test_the_winner_is_most_accurate_then_by_f1_then_smaller() -> None:
    def fig(name: str, accuracy: float, f1: float, size: int) -> Fitted:
        return fitted(name, accuracy=accuracy, f1_weighted=f1, serialized_bytes=size)

    assert winner([fig("a", 0.95, 0.90, 10), fig("b", 0.96, 0.80, 99)]).candidate.name == "b"  # type: ignore[union-attr]
    assert winner([fig("a", 0.95, 0.90, 10), fig("b", 0.95, 0.91, 99)]).candidate.name == "b"  # type: ignore[union-attr]
    assert winner([fig("a", 0.95, 0.90, 10), fig("b", 0.95, 0.90, 9)]).candidate.name == "b"  # type: ignore[union-attr]
    assert winner([fitted("x", ok=False), fig("a", 0.5, 0.5, 1)]).candidate.name == "a"  # type: ignore[union-attr]
    assert winner([fitted("x", ok=False)]) is None and winner([]) is None


def test_a_row_has_the_figures_it_knows_and_the_error() -> None:
    row = fitted("svc", accuracy=0.9, fit_seconds=1.5, confusion_matrix=[[1]]).row()
    assert row == {"name": "svc", "kind": "base", "params": dict(SVC.params), "accuracy": 0.9, "fit_seconds": 1.5}
    assert fitted("c", ok=False).row()["error"] == "ValueError: no"


def test_attempt_records_a_failure_instead_of_raising() -> None:
    def explode() -> Fitted:
        raise ValueError("bad parameter")

    outcome = attempt(SVC, explode)
    assert not outcome.ok and outcome.error == "ValueError: bad parameter" and outcome.candidate is SVC


@pytest.fixture(scope="module")
def split(mnist_sample: datasets.Dataset) -> datasets.Split:
    return datasets.split(mnist_sample, seed=0, validation_fraction=0.25, holdout_fraction=0.25, limit=400)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_compare_fits_in_order_and_one_bad_candidate_does_not_sink_the_rest(split: datasets.Split) -> None:
    names = ["logreg", "knn", "svc", "vote-hard"]
    params = {"knn": {"n_neighbors": 10_000}, "logreg": {"max_iter": 50}}  # knn cannot have more neighbours than digits
    chosen = candidates.resolve(names, params)
    started: list[tuple[int, str]] = []
    results = compare(chosen, split, seed=0, starting=lambda i, c: started.append((i, c.name)))
    assert started == [(1, "logreg"), (2, "knn"), (3, "svc"), (4, "vote-hard")]
    by_name = {f.candidate.name: f for f in results}
    assert not by_name["knn"].ok and by_name["knn"].error.startswith("ValueError: ") and "n_neighbors" in by_name[
        "knn"].error
    for name in ("logreg", "svc"):
        metrics = by_name[name].metrics
        assert metrics["train_size"] == len(split.y_train) and 0.5 < metrics["accuracy"] <= 1.0
        assert 0 <= metrics["holdout_accuracy"] <= 1 and metrics["fit_seconds"] >= 0
    vote = by_name["vote-hard"]
    assert vote.ok and set(vote.metrics["members"]) == {"logreg", "svc"}  # the failed one is never a member
    assert "holdout_accuracy" not in vote.metrics and vote.metrics["train_size"] == len(split.y_hold)
    members_seconds = sum(by_name[m].metrics["fit_seconds"] for m in ("logreg", "svc"))
    assert vote.metrics["fit_seconds"] >= members_seconds - 0.002  # each figure is rounded to milliseconds
    assert winner(results) in results and np.isfinite(winner(results).metrics["accuracy"])  # type: ignore[union-attr]
