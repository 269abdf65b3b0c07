"""Model-quality experiments: the recipes of docs/model-quality.md on MNIST's classic validation split.

The 60,000 MNIST training digits are split the classic way: the first 50,000 train, the last 10,000 validate.
Recipes and hyperparameters are chosen on that validation split only (the 10,000 test digits are never read).

    python -m bench.quality run   --data idx:/work/shared/data/mnist --out bench/results/quality.jsonl
    python -m bench.quality table --out bench/results/quality.jsonl

``run`` executes a plan, one recipe after another, appending one JSON line per recipe as soon as it is done
(so a long run keeps what it measured): the seed svc, svc-deskew, a C x gamma grid for svc-deskew on a
10,000-digit subsample of the training share, the grid's best on all 50,000 (svc-deskew-tuned), then svc-vsv
with 4 and 8 one-pixel shifts using the chosen C/gamma (on pixels), and last the production recipe ``svc-vsv``
as the candidate declares it (``--params '{"components": 80}'`` overrides its parameters). ``--only`` picks
steps; ``table`` prints the markdown table with the Pareto front (validation accuracy vs single-image fast-path
predict time) marked.
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
from digits import datasets
from digits.candidates import CANDIDATES
from digits.mnist import TRAINING_DIGITS
from digits.model import DigitModel

TRAIN = 50_000
SUBSAMPLE = 10_000
SINGLE_CALLS = 200
GRID_C = (5.0, 10.0, 20.0)
GRID_GAMMA: tuple[float | str, ...] = ("scale", 0.02, 0.03)
TABLE_HEADER = ("recipe", "train", "val. accuracy", "weighted F1", "fit s", "support vectors",
                "fast predict ms/image", "load avg (before, after)", "Pareto")
STEPS = ("svc", "svc-deskew", "grid", "svc-deskew-tuned", "svc-vsv-4", "svc-vsv-8", "svc-vsv")

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def classic_split(spec: str) -> tuple[F32, I64, F32, I64]:
    data = datasets.load(spec, cache_dir=Path("/tmp"))
    if data.size < TRAINING_DIGITS:
        raise SystemExit(f"{spec}: expected the {TRAINING_DIGITS:,} MNIST training digits, got {data.size}")
    pixels = data.pixels.astype(np.float32)
    return pixels[:TRAIN], data.labels[:TRAIN], pixels[TRAIN:TRAINING_DIGITS], data.labels[TRAIN:TRAINING_DIGITS]


def single_image_ms(predict: Any, rows: F32, calls: int = SINGLE_CALLS) -> float:
    """Median wall time of ``predict`` on one image, over ``calls`` different images, with one BLAS thread.

    One thread: a single image is a matrix-vector product that threads do not speed up, and on a loaded
    machine OpenBLAS threads waiting for each other made the figure swing by 30x.
    """
    from threadpoolctl import threadpool_limits

    times = []
    with threadpool_limits(1):
        predict(rows[:1])  # warm-up
        for i in range(calls):
            one = rows[i % len(rows) : i % len(rows) + 1]
            started = time.perf_counter()
            predict(one)
            times.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(times)


def measure(recipe: str, candidate: str, params: Mapping[str, Any], x_train: F32, y_train: I64, x_val: F32,
            y_val: I64, *, sklearn_single: bool = False) -> dict[str, Any]:
    from sklearn.metrics import f1_score

    chosen = CANDIDATES[candidate].with_params(params)
    load_before = os.getloadavg()[0]
    model = DigitModel(chosen.estimator(seed=0))
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
    }
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
        elif step == "svc-vsv":
            # The production recipe as the candidate declares it, with --params on top.
            chosen = CANDIDATES["svc-vsv"].with_params(params)
            label = ", ".join(f"{k}={v}" for k, v in chosen.params.items() if k not in ("deskew", "break_ties",
                                                                                        "rotations_deg"))
            _append(out, measure(f"svc-vsv ({label})", "svc-vsv", params, x_train, y_train, x_val, y_val))
        elif step.startswith("svc-vsv-"):
            # svc-vsv-<shifts>: with the grid's best C/gamma (from --out); svc-vsv-<shifts>-default: C=10, scale.
            shifts, _, default = step.removeprefix("svc-vsv-").partition("-")
            best = {"C": 10.0, "gamma": "scale"} if default else best_grid_point(writers.read_rows(out))
            # The pixel-space recipe these steps measured before projections existed.
            _append(out, measure(f"svc-vsv ({shifts}, C={best['C']:g}, gamma={best['gamma']})", "svc-vsv",
                                 {**best, "components": 0, "virtual_shifts": shifts}, x_train, y_train, x_val, y_val))
        else:
            raise SystemExit(f"unknown step {step!r}; steps: {', '.join(STEPS)}, svc-vsv or svc-vsv-<4|8|4x2|8x2>")


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
              f"{r['load_average'][0]:.1f}, {r['load_average'][1]:.1f}",
              "**yes**" if r in full and full.index(r) in front else "") for r in rows]
    return writers.markdown_table(TABLE_HEADER, cells, align="l" * len(TABLE_HEADER))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "table"))
    parser.add_argument("--data", default="idx:/work/shared/data/mnist")
    parser.add_argument("--out", type=Path, default=writers.RESULTS / "quality.jsonl")
    parser.add_argument("--only", nargs="*", default=(), help=f"steps to run, in order (default: {' '.join(STEPS)})")
    parser.add_argument("--subsample", type=int, default=SUBSAMPLE, help="training digits for the grid")
    parser.add_argument("--params", type=json.loads, default={},
                        help='overrides for the svc-vsv step, e.g. \'{"components": 80}\'')
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args.data, args.out, args.only, args.subsample, args.params)
    else:
        print(table(writers.read_rows(args.out)))


if __name__ == "__main__":
    main(sys.argv[1:])
