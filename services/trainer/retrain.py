"""The retrain jobs.

``run`` fits every candidate of a job in one worker. With ``parallel``, the gateway enqueues one
``fit_candidate`` job per base candidate and a ``select_and_promote`` job that depends on all of them,
so that N workers fit N candidates at once; the fan-in builds the ensembles and promotes.

Either way the registry sees nothing until the end, and then one transaction: a job that fails, times out
or is stopped leaves no partial version behind.
"""

from __future__ import annotations

import logging
import os
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

from rq import get_current_job
from rq.job import Job, JobStatus

from digits import datasets, jobs
from digits.errors import IntegrityError
from digits.evaluation import beats, evaluate
from digits.model import ServedModel
from digits.registry import Registry
from digits.settings import get_settings
from services.trainer.comparison import Fitted, attempt, compare, fit_base, fit_one, winner

log = logging.getLogger(__name__)

SCRATCH_TTL_SECONDS = 24 * 3600


class Context:
    """What every job function needs: its spec, the registry, progress reporting, the data split."""

    def __init__(self, raw_spec: dict[str, Any]) -> None:
        self.spec = jobs.RetrainSpec.from_dict(raw_spec)
        self.job = get_current_job()
        self.job_id = self.job.id if self.job else ""
        self.progress = jobs.Progress(self.job)
        settings = get_settings()
        self.registry = Registry.from_url(settings.redis_url, settings.registry_key.get_secret_value())
        self.progress("loading data", 0.02)
        self.data = datasets.load(self.spec.data or settings.data, cache_dir=settings.cache_dir)
        self.split = datasets.split(self.data, seed=self.spec.seed, validation_fraction=self.spec.validation_fraction,
                                    holdout_fraction=self.spec.holdout_fraction, limit=self.spec.limit)
        self.progress("split", 0.05, dataset=self.data.source, split=self.split.sizes())


def run(raw_spec: dict[str, Any]) -> dict[str, Any]:
    """Fit and compare every candidate here, then promote the winner."""
    context = Context(raw_spec)
    candidates = context.spec.resolved()
    done = 0

    def report(stage: str) -> None:
        nonlocal done
        context.progress(stage, 0.05 + 0.8 * done / len(candidates), candidate=stage.split()[1])
        done += 1

    fitted = compare(candidates, context.split, context.spec.seed, report)
    return promote(context, fitted)


def fit_candidate(raw_spec: dict[str, Any], name: str, group: str) -> dict[str, Any]:
    """Fan-out: fit one base candidate and leave its model (signed) for the fan-in job."""
    context = Context(raw_spec)
    candidate = next(c for c in context.spec.resolved() if c.name == name)
    context.progress(f"fitting {name}", 0.1, candidate=name)
    fitted = fit_base(candidate, context.split, context.spec.seed)
    context.registry.put_scratch(f"{group}:{name}", fitted.model, SCRATCH_TTL_SECONDS)
    context.progress("done", 1.0)
    return {"candidate": name, "metrics": fitted.metrics}


def select_and_promote(raw_spec: dict[str, Any], group: str) -> dict[str, Any]:
    """Fan-in: gather the base candidates' models (tolerating failed ones), fit the ensembles, promote."""
    context = Context(raw_spec)
    candidates = context.spec.resolved()
    bases = [_gathered(context, c, group) for c in candidates if c.kind == "base"]
    fitted = list(bases)
    for candidate in (c for c in candidates if c.kind != "base"):
        context.progress(f"fitting {candidate.name}", 0.85, candidate=candidate.name)
        fitted.append(attempt(candidate, partial(fit_one, candidate, bases, context.split, context.spec.seed)))
    return promote(context, fitted)


def _gathered(context: Context, candidate: Any, group: str) -> Fitted:
    job = Job.fetch(jobs.candidate_job_id(group, candidate.name), connection=context.registry.redis)
    if job.get_status() != JobStatus.FINISHED:
        return Fitted(candidate, error=jobs.view(job).error or f"its job ended {job.get_status()}")
    try:
        model = context.registry.take_scratch(f"{group}:{candidate.name}")
    except IntegrityError as error:
        return Fitted(candidate, error=str(error))
    assert isinstance(model, ServedModel)
    model.prepare()
    return Fitted(candidate, model, dict((job.return_value() or {})["metrics"]))


def promote(context: Context, fitted: list[Fitted]) -> dict[str, Any]:
    """Register the winner and activate it if it passes the gate; the result says what happened and why."""
    best = winner(fitted)
    if best is None:
        reasons = "; ".join(f"{f.candidate.name}: {f.error}" for f in fitted)
        raise RuntimeError(f"every candidate failed ({reasons})")
    assert best.model is not None
    context.progress("comparing with the active model", 0.9)
    active, activate, why, active_metrics = _gate(context, best.metrics)
    if context.spec.no_activate:
        activate, why = False, f"the job asked for --no-activate ({why})"
    report = _report(context, fitted, best, active, active_metrics, why)

    context.progress("registering", 0.95)
    record = context.registry.register(
        best.model, kind=best.candidate.name, params=dict(best.candidate.params), metrics=best.metrics,
        dataset=context.data.record(), parent=active or "", job_id=context.job_id, code_version=_code_version(),
        report=report,
    )
    outcome = f"registered {record.version}, not activated: {why}"
    if activate:
        if context.registry.activate(record.version, expected=active, why=why, job=context.job_id):
            outcome = f"activated {record.version}: {why}"
        else:
            outcome = f"registered {record.version}, not activated: another promotion changed the active model"
    log.info("retrain done", extra={"version": record.version, "outcome": outcome, "winner": best.candidate.name})
    context.progress("done", 1.0)
    return {"version": record.version, "outcome": outcome, "winner": best.candidate.name,
            "accuracy": best.metrics["accuracy"], "f1_weighted": best.metrics["f1_weighted"],
            "fit_seconds": best.metrics["fit_seconds"], "candidates": [f.row() for f in fitted],
            "dataset": context.data.record()}


def _gate(context: Context, metrics: dict[str, Any]) -> tuple[str | None, bool, str, dict[str, Any] | None]:
    """(active version, activate?, why, active's figures): the active model is re-evaluated on this split."""
    active = context.registry.active_version()
    if active is None:
        return None, True, "no model was active", None
    try:
        _, model = context.registry.load(active)
    except IntegrityError as error:
        return active, True, f"the active model {active} cannot be verified ({error})", None
    assert isinstance(model, ServedModel)
    model.prepare()
    active_metrics = evaluate(model, context.split.x_val, context.split.y_val)
    better, why = beats(metrics, active_metrics, context.spec.min_gain)
    return active, better, f"{why} (vs {active})", active_metrics


def _report(context: Context, fitted: list[Fitted], best: Fitted, active: str | None,
            active_metrics: dict[str, Any] | None, why: str) -> dict[str, Any]:
    """What a person needs to judge the job: every candidate side by side, the winner, the gate."""
    return {
        "job": context.job_id,
        "spec": context.spec.to_dict(),
        "dataset": context.data.record(),
        "split": context.split.sizes(),
        "candidates": [f.row() for f in fitted],
        "winner": best.candidate.name,
        "active": {"version": active, "accuracy": active_metrics["accuracy"],
                   "f1_weighted": active_metrics["f1_weighted"]} if active and active_metrics else None,
        "gate": why,
    }


def _code_version() -> str:
    """The git commit the trainer runs (DIGITS_CODE_VERSION in images, where there is no checkout)."""
    if os.environ.get("DIGITS_CODE_VERSION"):
        return os.environ["DIGITS_CODE_VERSION"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=2,
                             cwd=Path(__file__).parent, check=False)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"
