"""Model-quality experiments: the recipes of docs/model-quality.md on MNIST's classic validation split and folds.

The 60,000 MNIST training digits are split the classic way: the first 50,000 train, the last 10,000 validate.
Recipes and hyperparameters are chosen on that validation split only (the 10,000 test digits are never read);
the front-runners are then compared on 5 folds of all 60,000, to tell a real gain from noise.

    python -m bench.quality run --only svc-grad svc-grad-deskew      # any candidate, with --params on top
    python -m bench.quality table                                     # the split's table, Pareto front marked
    python -m bench.quality folds --only svc-grad-deskew svc-grad     # 5 folds (StratifiedKFold, seed 0)
    python -m bench.quality folds-table --baseline svc-grad-deskew    # per fold, mean, spread, folds beaten

``run`` executes steps one after another, appending one JSON line per recipe to ``--out``
(bench/results/quality.jsonl) as soon as it is done, so that a long run keeps what it measured. Besides any
candidate's name, the historical steps remain: the seed svc, svc-deskew, a C x gamma grid for svc-deskew on a
10,000-digit subsample (``grid``), the grid's best on all 50,000 (``svc-deskew-tuned``), and pixel-space svc-vsv
with 4 or 8 shifts (``svc-vsv-<shifts>[-default]``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench import writers
from bench.model import default_data_spec
from digits.mnist import CLASSIC_VALIDATION_DIGITS, TRAINING_DIGITS
from digits.modelling.model import DigitModel
from digits.training import datasets, recipes
from digits.training.candidates import CANDIDATES

TRAIN = TRAINING_DIGITS - CLASSIC_VALIDATION_DIGITS
SUBSAMPLE = 10_000
SINGLE_CALLS = 200
GRID_C = (5.0, 10.0, 20.0)
GRID_GAMMA: tuple[float | str, ...] = ("scale", 0.02, 0.03)
TABLE_HEADER = ("recipe", "train", "val. accuracy", "weighted F1", "fit s", "support vectors",
                "fast predict ms/image", "ms/image in a 64-batch", "load avg (before, after)", "Pareto")
STEPS = ("svc", "svc-deskew", "grid", "svc-deskew-tuned", "svc-vsv-4", "svc-vsv-8", "svc-vsv")

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def classic_split(spec: str) -> tuple[F32, I64, F32, I64]:
    data = datasets.load(spec, cache_dir=Path("/tmp"))
    if data.size < TRAINING_DIGITS:
        raise SystemExit(f"{spec}: expected the {TRAINING_DIGITS:,} MNIST training digits, got {data.size}")
    pixels = data.pixels.astype(np.float32)
    return pixels[:TRAIN], data.labels[:TRAIN], pixels[TRAIN:TRAINING_DIGITS], data.labels[TRAIN:TRAINING_DIGITS]


def single_image_ms(predict: Any, rows: F32, calls: int = SINGLE_CALLS, batch: int = 1) -> float:
    """Median wall time of ``predict`` on one image (or ``batch`` images), over ``calls`` different ones, with one
    BLAS thread.

    One thread: a single image is a matrix-vector product that threads do not speed up, and on a loaded
    machine OpenBLAS threads waiting for each other made the figure swing by 30x.
    """
    from threadpoolctl import threadpool_limits

    times = []
    with threadpool_limits(1):
        predict(rows[:batch])  # warm-up
        for i in range(calls):
            start = (i * batch) % (len(rows) - batch + 1)
            chosen = rows[start : start + batch]
            started = time.perf_counter()
            predict(chosen)
            times.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(times)


def measure(recipe: str, candidate: str, params: Mapping[str, Any], x_train: F32, y_train: I64, x_val: F32,
            y_val: I64, *, sklearn_single: bool = False) -> dict[str, Any]:
    from sklearn.metrics import f1_score

    chosen = CANDIDATES[candidate].with_params(params)
    load_before = os.getloadavg()[0]
    model = DigitModel(recipes.estimator(chosen, seed=0))
    started = time.perf_counter()
    model.estimator.fit(x_train, y_train)
    fit_seconds = time.perf_counter() - started
    model.prepare()
    assert model.fast, f"{recipe}: the fast path did not compile"
    labels, _ = model.predict(x_val)
    row: dict[str, Any] = {
        "recipe": recipe, "candidate": candidate, "params": dict(chosen.params), "train_size": len(y_train),
        "validation_size": len(y_val), "accuracy": float(np.mean(labels == y_val)),
        "f1_weighted": float(f1_score(y_val, labels, average="weighted")), "fit_seconds": round(fit_seconds, 1),
        "n_support_vectors": int(model.describe()["n_support_vectors"]),
        "fast_single_ms": round(single_image_ms(model.predict, x_val), 3),
        "fast_batch64_ms_per_image": round(single_image_ms(model.predict, x_val, batch=64) / 64, 4),
    }
    steps = model.estimator.named_steps
    if "gradients" in steps:
        # The feature step alone (on scaled digits, as in the pipeline): one image, and per image of 64.
        scaled = steps["scale"].transform(x_val[:2048])
        row["gradients_single_ms"] = round(single_image_ms(steps["gradients"].transform, scaled), 3)
        row["gradients_batch64_ms_per_image"] = round(
            single_image_ms(steps["gradients"].transform, scaled, batch=64) / 64, 4)
    final = model.estimator[-1]
    if hasattr(final, "n_first_support_vectors_"):
        row["first_support_vectors"] = int(final.n_first_support_vectors_)
        row["virtual_training_size"] = int(final.n_virtual_training_)
        row["gamma_resolved"] = float(final.gamma_)
    elif hasattr(final, "_gamma"):
        row["gamma_resolved"] = float(final._gamma)
    if sklearn_single:
        row["sklearn_single_ms"] = round(single_image_ms(model.estimator.predict, x_val, calls=60), 3)
    row["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return row


def _append(out: Path, row: Mapping[str, Any]) -> None:
    writers.append_row(out, row)
    print(json.dumps(row), flush=True)


def best_grid_point(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    grid = [r for r in rows if r["recipe"].startswith("grid ")]
    if not grid:
        return {"C": 10.0, "gamma": "scale"}
    # Most accurate on validation; then weighted F1; then fewer support vectors (faster to serve).
    best = max(grid, key=lambda r: (r["accuracy"], r["f1_weighted"], -r["n_support_vectors"]))
    return {"C": best["params"]["C"], "gamma": best["params"]["gamma"]}


def run(spec: str, out: Path, only: Sequence[str], subsample: int, params: Mapping[str, Any]) -> None:
    x_train, y_train, x_val, y_val = classic_split(spec)
    steps = only or STEPS
    for step in steps:
        if step == "svc":
            _append(out, measure("svc (seed)", "svc", {}, x_train, y_train, x_val, y_val, sklearn_single=True))
        elif step == "svc-deskew":
            _append(out, measure("svc-deskew", "svc-deskew", {}, x_train, y_train, x_val, y_val))
        elif step == "grid":
            # A stratified-enough subsample: every 5th training digit (the classic order is not sorted by label).
            xs, ys = x_train[:: TRAIN // subsample], y_train[:: TRAIN // subsample]
            for c in GRID_C:
                for gamma in GRID_GAMMA:
                    _append(out, measure(f"grid C={c:g} gamma={gamma}", "svc-deskew", {"C": c, "gamma": gamma},
                                         xs, ys, x_val, y_val))
        elif step == "svc-deskew-tuned":
            best = best_grid_point(writers.read_rows(out))
            _append(out, measure("svc-deskew-tuned", "svc-deskew", best, x_train, y_train, x_val, y_val))
        elif step in CANDIDATES:
            # A candidate as it declares itself, with --params on top (svc-grad, svc-grad-deskew, svc-vsv, ...).
            _append(out, measure(_label(step, params), step, params, x_train, y_train, x_val, y_val))
        elif step.startswith("svc-vsv-"):
            # svc-vsv-<shifts>: with the grid's best C/gamma (from --out); svc-vsv-<shifts>-default: C=10, scale.
            shifts, _, default = step.removeprefix("svc-vsv-").partition("-")
            best = {"C": 10.0, "gamma": "scale"} if default else best_grid_point(writers.read_rows(out))
            # The pixel-space recipe these steps measured before projections existed.
            _append(out, measure(f"svc-vsv ({shifts}, C={best['C']:g}, gamma={best['gamma']})", "svc-vsv",
                                 {**best, "components": 0, "virtual_shifts": shifts}, x_train, y_train, x_val, y_val))
        else:
            raise SystemExit(f"unknown step {step!r}; steps: {', '.join(STEPS)}, svc-vsv-<4|8|4x2|8x2>[-default] "
                             f"or a candidate ({', '.join(CANDIDATES)})")


def _label(candidate: str, params: Mapping[str, Any]) -> str:
    return f"{candidate} {json.dumps(dict(params), sort_keys=True)}" if params else candidate


FOLDS = 5


def folds(spec: str, out: Path, recipes: Sequence[str], params: Mapping[str, Any]) -> None:
    """Each recipe on the same 5 folds of all 60,000 training digits (StratifiedKFold, shuffled, seed 0)."""
    from sklearn.model_selection import StratifiedKFold

    x_train, y_train, x_val, y_val = classic_split(spec)
    pixels, labels = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
    splits = StratifiedKFold(FOLDS, shuffle=True, random_state=0).split(pixels, labels)
    for fold, (fit, held_out) in enumerate(splits):
        for recipe in recipes:
            row = measure(_label(recipe, params), recipe, params, pixels[fit], labels[fit], pixels[held_out],
                          labels[held_out])
            _append(out, {**row, "fold": fold})


def folds_table(rows: Sequence[Mapping[str, Any]], baseline: str) -> str:
    """Accuracy (errors) per fold, the mean and spread, and how many folds each recipe beats the baseline on."""
    by_recipe: dict[str, dict[int, Mapping[str, Any]]] = {}
    for row in rows:
        if "fold" in row:
            by_recipe.setdefault(row["recipe"], {})[row["fold"]] = row
    reference = by_recipe.get(baseline, {})
    header = ["recipe", *(f"fold {k}" for k in range(FOLDS)), "mean", "sd", f"beats {baseline}"]
    table_rows = []
    for recipe, found in by_recipe.items():
        accuracies = [found[k]["accuracy"] for k in sorted(found)]
        cells = [f"{100 * found[k]['accuracy']:.2f}% ({_errors(found[k])})" if k in found else "-"
                 for k in range(FOLDS)]
        wins = sum(_errors(found[k]) < _errors(reference[k]) for k in found if k in reference)
        beats = "-" if recipe == baseline else f"{wins} of {len(set(found) & set(reference))}"
        table_rows.append([recipe, *cells, f"{100 * statistics.mean(accuracies):.3f}%",
                           f"{100 * statistics.pstdev(accuracies):.3f}", beats])
    return writers.markdown_table(header, table_rows, align="l")


def _errors(row: Mapping[str, Any]) -> int:
    return round((1 - float(row["accuracy"])) * int(row["validation_size"]))


def pareto(rows: Sequence[Mapping[str, Any]]) -> set[int]:
    """Indices of rows no other row beats on both accuracy (higher) and single-image predict time (lower)."""
    front = set()
    for i, a in enumerate(rows):
        dominated = any(
            b["accuracy"] >= a["accuracy"] and b["fast_single_ms"] <= a["fast_single_ms"]
            and (b["accuracy"] > a["accuracy"] or b["fast_single_ms"] < a["fast_single_ms"])
            for j, b in enumerate(rows) if j != i
        )
        if not dominated:
            front.add(i)
    return front


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    full = [r for r in rows if r["train_size"] == TRAIN]
    front = pareto(full)
    cells = [(r["recipe"], f"{r['train_size']:,}", f"{100 * r['accuracy']:.2f}%", f"{r['f1_weighted']:.4f}",
              f"{r['fit_seconds']:.0f}", f"{r['n_support_vectors']:,}", f"{r['fast_single_ms']:.2f}",
              f"{r['fast_batch64_ms_per_image']:.3f}" if "fast_batch64_ms_per_image" in r else "-",
              f"{r['load_average'][0]:.1f}, {r['load_average'][1]:.1f}",
              "**yes**" if r in full and full.index(r) in front else "") for r in rows]
    return writers.markdown_table(TABLE_HEADER, cells, align="l" * len(TABLE_HEADER))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "table", "folds", "folds-table"))
    parser.add_argument("--data", default=default_data_spec())
    parser.add_argument("--out", type=Path, default=writers.RESULTS / "quality.jsonl")
    parser.add_argument("--only", nargs="*", default=(), help=f"steps to run, in order (default: {' '.join(STEPS)})")
    parser.add_argument("--subsample", type=int, default=SUBSAMPLE, help="training digits for the grid")
    parser.add_argument("--params", type=json.loads, default={},
                        help='overrides for a candidate step, e.g. \'{"C": 5, "gradients": {"components": 100}}\'')
    parser.add_argument("--baseline", default="svc-grad-deskew", help="folds-table: the recipe to beat")
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args.data, args.out, args.only, args.subsample, args.params)
    elif args.command == "folds":
        folds(args.data, args.out, args.only or ("svc-grad-deskew", "svc-grad"), args.params)
    elif args.command == "folds-table":
        print(folds_table(writers.read_rows(args.out), args.baseline))
    else:
        print(table([r for r in writers.read_rows(args.out) if "fold" not in r]))


if __name__ == "__main__":
    main(sys.argv[1:])
