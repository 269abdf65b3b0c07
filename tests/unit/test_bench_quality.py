"""bench.quality's pure parts: the Pareto front, the split's table, the folds table and the grid's best point."""

from __future__ import annotations

from typing import Any

from bench.quality import TABLE_HEADER, TRAIN, best_grid_point, folds_table, pareto, table


def row(recipe: str, accuracy: float, single_ms: float, train_size: int = TRAIN, **more: Any) -> dict[str, Any]:
    return {"recipe": recipe, "train_size": train_size, "accuracy": accuracy, "f1_weighted": accuracy - 0.0001,
            "fit_seconds": 61.4, "n_support_vectors": 12_345, "fast_single_ms": single_ms,
            "load_average": [0.52, 1.96], **more}


def test_the_front_keeps_rows_no_other_beats_on_both_accuracy_and_speed() -> None:
    rows = [row("accurate", 0.99, 2.0), row("fast", 0.98, 1.0), row("beaten", 0.97, 1.5),
            row("accurate again", 0.99, 2.0), row("as fast, worse", 0.975, 1.0), row("as good, slower", 0.99, 2.5)]
    assert pareto(rows) == {0, 1, 3}  # equal rows do not beat each other; one better figure and no worse is needed
    assert pareto([]) == set() and pareto(rows[:1]) == {0}


def test_the_table_marks_the_front_among_full_training_runs_only() -> None:
    rows = [row("svc (seed)", 0.9792, 3.0, fast_batch64_ms_per_image=0.25), row("svc-grad", 0.9850, 1.2),
            row("grid C=5 gamma=scale", 0.999, 0.1, train_size=10_000)]
    lines = table(rows).splitlines()
    assert lines[0] == "| " + " | ".join(TABLE_HEADER) + " |"
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert cells[0] == ["svc (seed)", "50,000", "97.92%", "0.9791", "61", "12,345", "3.00", "0.250", "0.5, 2.0", ""]
    assert cells[1][-3:] == ["-", "0.5, 2.0", "**yes**"]  # no batch figure measured: a dash
    # A grid point on a 10,000-digit subsample is no rival for full runs, and is never on the front itself.
    assert cells[2][:2] == ["grid C=5 gamma=scale", "10,000"] and cells[2][-1] == ""


def fold(recipe: str, k: int, errors: int, size: int = 12_000) -> dict[str, Any]:
    return {"recipe": recipe, "fold": k, "accuracy": 1 - errors / size, "validation_size": size}


def test_the_folds_table_counts_the_folds_each_recipe_beats_the_baseline_on() -> None:
    base = [fold("base", k, e) for k, e in enumerate((60, 60, 60, 60, 60))]
    rival = [fold("rival", k, e) for k, e in enumerate((50, 59, 60, 70, 40))]
    partial = [fold("partial", 0, 10), fold("partial", 3, 10)]
    text = folds_table([*base, *rival, *partial, row("split only", 0.99, 1.0)], baseline="base")
    lines = text.splitlines()
    assert lines[0] == "| recipe | fold 0 | fold 1 | fold 2 | fold 3 | fold 4 | mean | sd | beats base |"
    by_recipe = {cells[0]: cells for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    assert set(by_recipe) == {"base", "rival", "partial"}  # rows without a fold are not folds
    assert by_recipe["base"][1:] == ["99.50% (60)"] * 5 + ["99.500%", "0.000", "-"]
    assert by_recipe["rival"][-1] == "3 of 5"  # fewer errors on folds 0, 1 and 4; a draw is no win
    assert by_recipe["rival"][-3] == f"{100 * (1 - 279 / 60_000):.3f}%"
    assert by_recipe["partial"][1:6] == ["99.92% (10)", "-", "-", "99.92% (10)", "-"]
    assert by_recipe["partial"][-1] == "2 of 2"


def test_the_grid_point_chosen_is_the_most_accurate_then_the_best_f1_then_the_smallest() -> None:
    def point(c: float, gamma: float | str, accuracy: float, f1: float, support: int) -> dict[str, Any]:
        return {"recipe": f"grid C={c:g} gamma={gamma}", "params": {"C": c, "gamma": gamma}, "accuracy": accuracy,
                "f1_weighted": f1, "n_support_vectors": support}

    assert best_grid_point([]) == {"C": 10.0, "gamma": "scale"}  # no grid run yet: the default
    grid = [point(5.0, "scale", 0.98, 0.98, 100), point(10.0, 0.02, 0.99, 0.97, 300),
            point(20.0, 0.03, 0.99, 0.98, 500), point(10.0, 0.03, 0.99, 0.98, 400),
            {"recipe": "svc-deskew", "params": {}, "accuracy": 1.0, "f1_weighted": 1.0, "n_support_vectors": 1}]
    assert best_grid_point(grid) == {"C": 10.0, "gamma": 0.03}
