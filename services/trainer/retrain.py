"""The retrain job: load data, split, fit the recipe, evaluate, compare with the active model, register,
and activate through the promotion gate.

Nothing is written to the registry until the very end, and then in one transaction, so a job that
fails, times out or is stopped leaves no partial version behind.
"""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rq import get_current_job

from digits import datasets, recipes
from digits.errors import IntegrityError
from digits.evaluation import beats, evaluate
from digits.jobs import Progress, RetrainSpec
from digits.model import DigitModel
from digits.registry import Registry
from digits.settings import get_settings

log = logging.getLogger(__name__)


def run(raw_spec: dict[str, Any]) -> dict[str, Any]:
    """RQ entry point; returns the job's result (version, outcome, figures)."""
    spec = RetrainSpec.from_dict(raw_spec)
    job = get_current_job()
    settings = get_settings()
    registry = Registry.from_url(settings.redis_url, settings.registry_key)
    return retrain(spec, registry, Progress(job), job_id=job.id if job else "", cache_dir=settings.cache_dir,
                   default_data=settings.data)


def retrain(
    spec: RetrainSpec, registry: Registry, progress: Progress, *, job_id: str, cache_dir: Path, default_data: str
) -> dict[str, Any]:
    progress("loading data", 0.02)
    data = datasets.load(spec.data or default_data, cache_dir=cache_dir)
    progress("splitting", 0.05, dataset=data.source)
    parts = datasets.split(data, seed=spec.seed, validation_fraction=spec.validation_fraction, limit=spec.limit)
    x_train, y_train, x_val, y_val = parts.x_train, parts.y_train, parts.x_val, parts.y_val

    recipe = recipes.get(spec.recipe)
    progress(f"fitting {recipe.name} on {len(y_train)} digits", 0.1)
    started = time.perf_counter()
    model = DigitModel(recipe.estimator())
    model.estimator.fit(x_train, y_train)
    fit_seconds = time.perf_counter() - started

    progress("calibrating and evaluating", 0.8)
    model.calibrate(x_val, y_val)
    model.prepare()
    metrics = {**evaluate(model, x_val, y_val), "fit_seconds": round(fit_seconds, 3), "train_size": len(y_train)}

    progress("comparing with the active model", 0.9)
    active, activate, why = _gate(registry, metrics, x_val, y_val)
    if spec.no_activate:
        activate, why = False, f"not activated: the job asked for --no-activate ({why})"

    progress("registering", 0.95)
    record = registry.register(
        model, kind=recipe.name, params=dict(recipe.params), metrics=metrics, dataset=data.record(),
        parent=active or "", job_id=job_id, code_version=_code_version(),
        report={"spec": spec.to_dict(), "gate": why},
    )
    outcome = f"registered {record.version}, not activated: {why}"
    if activate:
        if registry.activate(record.version, expected=active, why=why, job=job_id):
            outcome = f"activated {record.version}: {why}"
        else:
            outcome = f"registered {record.version}, not activated: another promotion changed the active model"
    log.info("retrain done", extra={"version": record.version, "outcome": outcome, "accuracy": metrics["accuracy"]})
    progress("done", 1.0)
    return {"version": record.version, "outcome": outcome, "accuracy": metrics["accuracy"],
            "f1_weighted": metrics["f1_weighted"], "fit_seconds": metrics["fit_seconds"],
            "dataset": data.record()}


def _gate(
    registry: Registry, metrics: dict[str, Any], x_val: npt.NDArray[np.float32], y_val: npt.NDArray[np.int64]
) -> tuple[str | None, bool, str]:
    """(active version, activate?, why): re-evaluates the active model on this job's split for a fair comparison."""
    active = registry.active_version()
    if active is None:
        return None, True, "no model was active"
    try:
        _, active_model = registry.load(active)
    except IntegrityError as error:
        return active, True, f"the active model {active} cannot be verified ({error})"
    assert isinstance(active_model, DigitModel)
    active_model.prepare()
    better, why = beats(metrics, evaluate(active_model, x_val, y_val))
    return active, better, f"{why} (vs {active})"


def _code_version() -> str:
    """The git commit the trainer runs, when it runs from a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=2,
                             cwd=Path(__file__).parent, check=False)
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"
