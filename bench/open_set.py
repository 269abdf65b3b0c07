"""Honest answers, measured: how often the verdict refuses real digits, and how many non-digits it catches.

    python -m bench.open_set                                   # full MNIST next to the repo, else $DIGITS_DATA
    python -m bench.open_set --data sample --per-family 200    # a quick run on the bundled sample

The production recipe is fitted exactly as a retrain job fits it (``services.trainer.comparison.fit_base``, on the
job's split: for MNIST's training files the classic one, the last 10,000 digits validate), its verdict thresholds
calibrated on the job's holdout. Everything reported is then measured on data that no fit and no threshold saw:

- the classic validation digits (as 28x28 pixels, and again drawn as 280x280 PNGs read like an upload);
- ``--per-family`` non-digits of every family (``digits.training.nondigits``), drawn with a seed of their own,
  their two-digit pages made of validation digits.

For every family: the AUROC of telling digits from it by the familiarity score (and, to justify that score, by the
top probability and by the mean of the 10 largest RBF kernel values to the digit support vectors), and the share
answered NOT_A_DIGIT or SEVERAL. For the digits: the verdicts' shares, the error among DIGIT answers, and the
accuracy of the ``digit`` field beside the same recipe fitted without the "not a digit" class.

The model refitted on all 60,000 digits (what a full-MNIST retrain serves; it keeps the split fit's thresholds) is
measured on the held-out non-digits too: it has seen every MNIST digit, so only the non-digit figures are fair.

The table goes to docs/model-quality.md (between the ``open_set`` markers), the figures to
bench/results/open_set.json.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image
from sklearn.metrics import roc_auc_score

from bench import writers
from bench.model import REPO, default_data_spec
from digits.modelling import imaging
from digits.modelling.model import DigitModel
from digits.modelling.verdicts import Answers, Verdict, judge_all
from digits.training import datasets, nondigits, open_set
from digits.training.candidates import CANDIDATES, DEFAULT
from digits.training.datasets import Split
from services.trainer.comparison import Fitted, fit_base, fit_final

MEASURE_PAGES = 3  # the non-digits' seed purpose: never 1 (fitted on) or 2 (calibrated on)
SEED = 0
PNG_DIGITS = 2000
MARK_BEGIN, MARK_END = "<!-- open_set: begin -->", "<!-- open_set: end -->"
DOC = REPO / "docs" / "model-quality.md"

Rows = npt.NDArray[np.float32]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.open_set", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="data spec (default: full MNIST beside the repo, else sample)")
    parser.add_argument("--per-family", type=int, default=1000, help="held-out non-digits per family")
    parser.add_argument("--no-write", action="store_true", help="print only: leave docs/ and bench/results/ alone")
    args = parser.parse_args(argv)
    spec = args.data or default_data_spec()
    started = time.time()
    data = datasets.load(spec, cache_dir=Path("/tmp"))
    split = datasets.split(data, seed=SEED)
    print(f"{spec}: {split.sizes()}", flush=True)
    report = measure(split, args.per_family)
    report.update(data=spec, seconds=round(time.time() - started), date=time.strftime("%Y-%m-%d"))
    table = render(report)
    print(table)
    if not args.no_write:
        (writers.RESULTS / "open_set.json").write_text(json.dumps(report, indent=1) + "\n")
        write_section(DOC, table)
        print(f"wrote {DOC.relative_to(REPO)} and bench/results/open_set.json")


def measure(split: Split, per_family: int) -> dict[str, Any]:
    recipe = CANDIDATES[DEFAULT[0]]
    fitted = _timed("fitting the production recipe on the split", lambda: fit_base(recipe, split, SEED))
    plain = _timed("fitting it without the not-a-digit class",
                   lambda: fit_base(recipe.with_params({"not_a_digit": 0}), split, SEED))
    model = fitted.model
    assert isinstance(model, DigitModel) and model.calibrated is not None
    families = _timed(f"drawing {per_family} held-out non-digits per family",
                      lambda: open_set.non_digits(per_family, (MEASURE_PAGES, SEED), split.x_val))
    report: dict[str, Any] = {
        "recipe": recipe.name, "split": split.sizes(), "thresholds": model.calibrated.describe(),
        "per_family": per_family, "left_out_characters": nondigits.LOOKS_LIKE_DIGITS,
        "calibration": {k: v for k, v in fitted.metrics["verdicts"]["calibration"].items()
                        if k not in ("familiarity_histogram",)},
        "digits": _digits(model, split, plain),
        "png_digits": _png_digits(model, split.x_val[:PNG_DIGITS], split.y_val[:PNG_DIGITS]),
        "families": _families(model, split.x_val, families),
    }
    final, facts = _timed("refitting on every digit", lambda: fit_final(fitted, split, SEED))
    report["final_fit"] = {"train_size": facts["train_size"], "n_support_vectors": facts.get("n_support_vectors"),
                           "families": _families(final, None, families)}
    return report


def _timed(what: str, step: Any) -> Any:
    started = time.time()
    print(f"{what}...", end=" ", flush=True)
    result = step()
    print(f"{time.time() - started:.0f} s", flush=True)
    return result


def _digits(model: DigitModel, split: Split, plain: Fitted) -> dict[str, Any]:
    answers = model.answer(split.x_val)
    verdicts = judge_all(answers, open_set.row_marks(split.x_val), model.calibrated)
    said = np.array([v.value for v in verdicts])
    digit = said == Verdict.DIGIT
    return {"count": len(split.y_val), "shares": open_set.shares(verdicts),
            "refused": float(np.isin(said, (Verdict.NOT_A_DIGIT, Verdict.SEVERAL)).mean()),
            "not_answered_digit": float(np.isin(said, (Verdict.NOT_A_DIGIT, Verdict.UNSURE)).mean()),
            "error_among_digit": float(np.mean(answers.labels[digit] != split.y_val[digit])),
            "errors_among_digit": int(np.sum(answers.labels[digit] != split.y_val[digit])),
            "accuracy": float(np.mean(answers.labels == split.y_val)),
            "accuracy_without_class": float(plain.metrics["accuracy"]),
            "errors_before_reject": int(np.sum(answers.labels != split.y_val))}


def _png_digits(model: DigitModel, pixels: Rows, labels: npt.NDArray[np.int64]) -> dict[str, Any]:
    """Validation digits drawn 280x280, dark on white, and read back as an upload is."""
    readings = []
    for row in pixels:
        page = Image.fromarray(255 - row.reshape(28, 28).astype(np.uint8)).resize((280, 280), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        page.save(buffer, "PNG")
        readings.append(imaging.read_picture(buffer.getvalue(), max_bytes=10**7, max_pixels=10**7))
    rows = np.stack([r.row for r in readings])
    answers = model.answer(rows)
    verdicts = judge_all(answers, np.array([r.marks for r in readings]), model.calibrated)
    digit = np.array([v == Verdict.DIGIT for v in verdicts])
    return {"count": len(labels), "shares": open_set.shares(verdicts),
            "error_among_digit": float(np.mean(answers.labels[digit] != labels[digit])),
            "accuracy": float(np.mean(answers.labels == labels))}


def _families(model: DigitModel, digits: Rows | None, families: dict[str, tuple[Rows, Any]]) -> dict[str, Any]:
    digit_scores = _scores(model, digits) if digits is not None else None
    result = {}
    for family, (rows, found) in families.items():
        answers = model.answer(rows)
        row: dict[str, Any] = {"caught": open_set.caught(judge_all(answers, found, model.calibrated)),
                               "several": float(np.mean(found >= 2))}
        if digit_scores is not None:
            scores = _scores(model, rows, answers)
            row.update({f"auroc_{name}": _auroc(digit_scores[name], scores[name]) for name in scores})
            row.update({f"caught_at_1pct_{name}": _caught_at(digit_scores[name], scores[name], 0.01)
                        for name in scores})
        result[family] = row
    return result


def _scores(model: DigitModel, rows: Rows, answers: Answers | None = None) -> dict[str, npt.NDArray[np.float64]]:
    """Higher means more like a digit: familiarity, the top probability, the mean of the 10 largest RBF kernel
    values to the digits' support vectors."""
    answers = answers or model.answer(rows)
    assert answers.familiarity is not None
    fast = model._fast  # the served arithmetic: its features and its kernel, as inference computes them
    features = np.asarray(fast.transform(rows), dtype=np.float32)
    digit_svs = fast.model._bounds[len(fast.model._served.classes) - 1][1]
    kernel = np.concatenate([fast.model._kernel(features[i : i + 256])[:, :digit_svs]
                             for i in range(0, len(features), 256)])
    top = np.sort(kernel, axis=1)[:, -10:].mean(axis=1)
    return {"familiarity": answers.familiarity, "top_probability": answers.probabilities.max(axis=1).astype(float),
            "kernel": top.astype(float)}


def _auroc(digits: npt.NDArray[np.float64], others: npt.NDArray[np.float64]) -> float:
    truth = np.r_[np.ones(len(digits)), np.zeros(len(others))]
    return float(roc_auc_score(truth, np.r_[digits, others]))


def _caught_at(digits: npt.NDArray[np.float64], others: npt.NDArray[np.float64], flagged: float) -> float:
    """The share of non-digits below the score that flags ``flagged`` of the digits."""
    return float(np.mean(others < np.quantile(digits, flagged)))


def _pct(value: float, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f}%"


def render(report: dict[str, Any]) -> str:
    digits, png, thresholds = report["digits"], report["png_digits"], report["thresholds"]
    families = report["families"]
    names = list(families)
    header = ["", *(name.replace("_", " ") for name in names)]
    rows = [
        ["answered NOT_A_DIGIT or SEVERAL", *(_pct(families[n]["caught"]) for n in names)],
        ["... of which SEVERAL (marks of ink)", *(_pct(families[n]["several"]) for n in names)],
        ["familiarity AUROC", *(_pct(families[n]["auroc_familiarity"], 2) for n in names)],
        ["top probability AUROC / caught at 1% of digits flagged",
         *(f"{_pct(families[n]['auroc_top_probability'])} / {_pct(families[n]['caught_at_1pct_top_probability'])}"
           for n in names)],
        ["top-10 kernel mean AUROC / caught at 1%",
         *(f"{_pct(families[n]['auroc_kernel'])} / {_pct(families[n]['caught_at_1pct_kernel'])}" for n in names)],
        [f"refitted on all {report['final_fit']['train_size']:,} digits: answered NOT_A_DIGIT or SEVERAL",
         *(_pct(report["final_fit"]["families"][n]["caught"]) for n in names)],
    ]
    shares = digits["shares"]
    digit_rows = [
        ["validation digits (28x28 pixels)", f"{digits['count']:,}", _pct(shares["DIGIT"], 2),
         _pct(shares["UNSURE"], 2), _pct(shares["NOT_A_DIGIT"], 2), _pct(shares["SEVERAL"], 2),
         f"{_pct(digits['error_among_digit'], 3)} ({digits['errors_among_digit']})",
         f"{_pct(digits['accuracy'], 2)} ({_pct(digits['accuracy_without_class'], 2)})"],
        ["the same digits drawn as 280x280 PNGs", f"{png['count']:,}", _pct(png["shares"]["DIGIT"], 2),
         _pct(png["shares"]["UNSURE"], 2), _pct(png["shares"]["NOT_A_DIGIT"], 2), _pct(png["shares"]["SEVERAL"], 2),
         _pct(png["error_among_digit"], 3), _pct(png["accuracy"], 2)],
    ]
    return "\n".join([
        MARK_BEGIN,
        f"`python -m bench.open_set` on {report['date']} ({report['data']}; {report['seconds']} s): "
        f"{report['recipe']} fitted on {report['split']['train']:,} digits, its thresholds calibrated on the "
        f"{report['split']['holdout']:,} of the holdout (familiarity {thresholds['familiarity']:.3f}, margin "
        f"{thresholds['margin']:.3f}); measured on the {digits['count']:,} classic validation digits and "
        f"{report['per_family']:,} held-out non-digits per family.",
        "",
        writers.markdown_table(header, rows, align="l"),
        "",
        writers.markdown_table(["digits", "count", "DIGIT", "UNSURE", "NOT_A_DIGIT", "SEVERAL",
                                "error among DIGIT (errors)", "accuracy of `digit` (without the class)"],
                               digit_rows, align="l"),
        "",
        f"Characters left out of the letters family (people write them as digits): "
        f"`{report['left_out_characters']}`.",
        MARK_END,
    ])


def write_section(path: Path, table: str) -> None:
    """Replace the text between the markers in ``path`` (or append it, with a heading, if they are missing)."""
    text = path.read_text()
    if MARK_BEGIN in text and MARK_END in text:
        before, rest = text.split(MARK_BEGIN, 1)
        after = rest.split(MARK_END, 1)[1]
        path.write_text(before + table + after)
    else:
        path.write_text(text.rstrip() + "\n\n## Honest answers: measured\n\n" + table + "\n")


if __name__ == "__main__":
    main()
