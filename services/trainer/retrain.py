"""The retrain jobs.

``run`` fits every candidate of a job in one worker. With ``parallel``, the gateway enqueues one
``fit_candidate`` job per base candidate and a ``select_and_promote`` job that depends on all of them,
so that N workers fit N candidates at once; the fan-in builds the ensembles and promotes.

Either way the registry sees nothing until the end, and then one transaction: a job that fails, times out
or is stopped leaves no partial version behind. Before that transaction the winner is serialized, loaded back
from those very bytes and made to serve a few validation digits exactly as it did in memory: what is registered
is what every replica will load.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from rq import get_current_job
from rq.job import JobStatus

from digits.errors import IntegrityError, NotServable
from digits.modelling import storage
from digits.modelling.model import DigitModel, check_round_trip, ready_to_serve
from digits.platform.registry import Registry
from digits.settings import get_settings
from digits.training import datasets, jobs
from digits.training.candidates import Candidate
from services.trainer import gate
from services.trainer.comparison import Fitted, attempt, compare, fit_base, fit_final, fit_one, winner

log = logging.getLogger(__name__)

SCRATCH_TTL_SECONDS = 24 * 3600
SERVED_CHECK_ROWS = 64


@dataclass
class JobSetup:
    """What every job function works with: its spec, the registry, progress reporting, the data and its split."""

    spec: jobs.RetrainSpec
    job_id: str
    progress: jobs.Progress
    registry: Registry
    data: datasets.Dataset
    split: datasets.Split


def set_up(raw_spec: dict[str, Any]) -> JobSetup:
    """Read the spec, connect to the registry, load the data and split it (reporting progress as it goes)."""
    spec = jobs.RetrainSpec.from_dict(raw_spec)
    job = get_current_job()
    progress = jobs.Progress(job)
    settings = get_settings()
    registry = Registry.from_settings(settings)
    progress("loading data", 0.02)
    # The registry's connection is the trainer's Redis user, which may read the corrections (digits:*).
    data = datasets.load(spec.data or settings.data, cache_dir=settings.cache_dir,
                         limits=datasets.ImageLimits(settings.max_image_bytes, settings.max_image_pixels),
                         redis_client=registry.redis)
    if data.skipped_count:
        log.warning("files skipped", extra={"dataset": data.source, "skipped": data.skipped_count})
    split = datasets.split(data, seed=spec.seed, validation_fraction=spec.validation_fraction,
                           holdout_fraction=spec.holdout_fraction, limit=spec.limit)
    progress("split", 0.05, dataset=data.source, split=split.sizes(), skipped=data.skipped_count)
    return JobSetup(spec, job.id if job else "", progress, registry, data, split)


def run(raw_spec: dict[str, Any]) -> dict[str, Any]:
    """Fit and compare every candidate here, then promote the winner."""
    setup = set_up(raw_spec)
    candidates = setup.spec.resolved()

    def starting(index: int, candidate: Candidate) -> None:
        setup.progress(f"fitting {candidate.name} ({index}/{len(candidates)})",
                       0.05 + 0.8 * (index - 1) / len(candidates), candidate=candidate.name)

    fitted = compare(candidates, setup.split, setup.spec.seed, starting)
    return promote(setup, fitted)


def fit_candidate(raw_spec: dict[str, Any], name: str, group: str) -> dict[str, Any]:
    """Fan-out: fit one base candidate and leave its model (signed) for the fan-in job."""
    setup = set_up(raw_spec)
    candidate = next(c for c in setup.spec.resolved() if c.name == name)
    setup.progress(f"fitting {name}", 0.1, candidate=name)
    fitted = fit_base(candidate, setup.split, setup.spec.seed)
    setup.registry.put_scratch(f"{group}:{name}", storage.dump(fitted.model), SCRATCH_TTL_SECONDS)
    setup.progress("done", 1.0)
    return {"candidate": name, "metrics": fitted.metrics}


def select_and_promote(raw_spec: dict[str, Any], group: str) -> dict[str, Any]:
    """Fan-in: gather the base candidates' models (tolerating failed ones), fit the ensembles, promote."""
    setup = set_up(raw_spec)
    candidates = setup.spec.resolved()
    bases = [_gathered(setup, c, group) for c in candidates if c.kind == "base"]
    fitted = list(bases)
    for candidate in (c for c in candidates if c.kind != "base"):
        setup.progress(f"fitting {candidate.name}", 0.85, candidate=candidate.name)
        fitted.append(attempt(candidate, partial(fit_one, candidate, bases, setup.split, setup.spec.seed)))
    return promote(setup, fitted)


def _gathered(setup: JobSetup, candidate: Candidate, group: str) -> Fitted:
    job = jobs.fetch(jobs.candidate_job_id(group, candidate.name), setup.registry.redis)
    if job.get_status() != JobStatus.FINISHED:
        return Fitted(candidate, error=jobs.view(job).error or f"its job ended {job.get_status()}")
    try:
        model = ready_to_serve(storage.load(setup.registry.take_scratch(f"{group}:{candidate.name}")), candidate.name)
    except (IntegrityError, NotServable) as error:
        return Fitted(candidate, error=str(error))
    return Fitted(candidate, model, dict((job.return_value() or {})["metrics"]))


def promote(setup: JobSetup, fitted: list[Fitted]) -> dict[str, Any]:
    """Register the winner and activate it if it passes the gate; the result says what happened and why."""
    best = winner(fitted)
    if best is None:
        reasons = "; ".join(f"{f.candidate.name}: {f.error}" for f in fitted)
        raise RuntimeError(f"every candidate failed ({reasons})")
    assert best.model is not None
    served, fitted_on, metrics = best.model, "split", dict(best.metrics)
    if setup.spec.final_fit and isinstance(best.model, DigitModel):
        setup.progress(f"refitting {best.candidate.name} on every digit", 0.86)
        served, metrics["final_fit"] = fit_final(best, setup.split, setup.spec.seed)
        fitted_on = "all"
    setup.progress("loading the winner back from its blob", 0.88)
    blob = storage.dump(served)
    served_check = check_round_trip(served, blob, setup.split.x_val[:SERVED_CHECK_ROWS])
    setup.progress("comparing with the active model", 0.9)
    digits = gate.JobDigits.of(setup.data, setup.split)
    verdict = gate.judge(setup.registry, digits, best.model, best.metrics, setup.spec.min_gain,
                         get_settings().cache_dir)
    active, activate, why = verdict.active, verdict.activate, verdict.why
    if not setup.spec.may_activate:
        activate, why = False, f"a training token started the job, and such jobs never change the active model ({why})"
    elif setup.spec.no_activate:
        activate, why = False, f"the job asked for --no-activate ({why})"
    report = _report(setup, fitted, best, verdict)

    setup.progress("registering", 0.95)
    record = setup.registry.register(
        blob, kind=best.candidate.name, params=dict(best.candidate.params), metrics=metrics,
        dataset=setup.data.record(), split=setup.split.spec, fitted_on=fitted_on, served_check=served_check,
        parent=active.version if active else "", job_id=setup.job_id, code_version=_code_version(),
        report=report, fitted_digits=digits.fitted(fitted_on),
    )
    outcome = f"registered {record.version}, not activated: {why}"
    if activate:
        expected = active.version if active else None
        if setup.registry.activate(record.version, expected=expected, why=why, job=setup.job_id):
            outcome = f"activated {record.version}: {why}"
        else:
            outcome = f"registered {record.version}, not activated: another promotion changed the active model"
    pruned = setup.registry.prune(get_settings().registry_keep)
    log.info("retrain done", extra={"version": record.version, "outcome": outcome, "winner": best.candidate.name,
                                    "pruned": pruned})
    setup.progress("done", 1.0)
    return {"version": record.version, "outcome": outcome, "winner": best.candidate.name,
            "accuracy": best.metrics["accuracy"], "f1_weighted": best.metrics["f1_weighted"],
            "fit_seconds": best.metrics["fit_seconds"], "fitted_on": fitted_on,
            "final_fit": metrics.get("final_fit"), "candidates": [f.row() for f in fitted],
            "dataset": setup.data.report(setup.split), "pruned": pruned}


def _report(setup: JobSetup, fitted: list[Fitted], best: Fitted, verdict: gate.Verdict) -> dict[str, Any]:
    """What a person needs to judge the job: every candidate side by side, the winner, the gate."""
    return {
        "job": setup.job_id,
        "spec": setup.spec.to_dict(),
        # Its parts with their sizes, the files a folder skipped, named with the reason, and how many of the
        # corrections were fitted on and how many validated on.
        "dataset": setup.data.report(setup.split),
        "split": {**setup.split.sizes(), "validated_on": setup.split.validated_on()},
        "candidates": [f.row() for f in fitted],
        "winner": best.candidate.name,
        # The active version's figures on the digits the gate compared on, and how many (services/trainer/gate.py).
        "active": verdict.report,
        "gate": verdict.why,
    }


def _code_version() -> str:
    """The code the trainer runs: DIGITS_CODE_VERSION in images (no checkout there), else the git commit."""
    configured = get_settings().code_version
    if configured:
        return configured
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=2,
                             cwd=Path(__file__).parent, check=False)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"
