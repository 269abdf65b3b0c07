"""What the client returns: plain frozen dataclasses (``dataclasses.asdict`` gives their JSON), never protobufs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from digits.v1 import feedback_pb2, models_pb2, recognizer_pb2, training_pb2

# RQ's statuses after which a job changes no more (digits.training.jobs.TERMINAL).
JOB_ENDED = frozenset({"finished", "failed", "canceled", "stopped"})
# digits.v1.Verdict in words, as the gateway's JSON says them; VERDICT_UNSPECIFIED (not judged) is None.
VERDICTS = {recognizer_pb2.VERDICT_DIGIT: "DIGIT", recognizer_pb2.VERDICT_UNSURE: "UNSURE",
            recognizer_pb2.VERDICT_NOT_A_DIGIT: "NOT_A_DIGIT", recognizer_pb2.VERDICT_SEVERAL: "SEVERAL"}


@dataclass(frozen=True)
class Prediction:
    digit: int
    confidence: float
    probabilities: tuple[float, ...]
    version: str
    # The 784 bytes (uint8, row-major, light ink on dark) the model saw, when asked for.
    model_input: bytes | None = None
    # The gateway's name for this answer: what `correct` points at.
    prediction_id: str = ""
    # What the answer means (digits.v1.Verdict in a word): "DIGIT", "UNSURE" (digit or runner_up, too close to
    # call), "NOT_A_DIGIT" or "SEVERAL" (`marks` digit-sized marks side by side); None when nobody judged it.
    # `digit`, `confidence` and `probabilities` are answered whatever the verdict.
    verdict: str | None = None
    # The next most likely digit.
    runner_up: int = 0
    # The scores behind the verdict, None when the version computes none: how much the input looks like a digit
    # (below the version's threshold: NOT_A_DIGIT), and the decision between digit and runner_up (below: UNSURE).
    familiarity: float | None = None
    margin: float | None = None
    # How many digit-sized marks of ink stand side by side in the input (2 or more: SEVERAL).
    marks: int = 0


@dataclass(frozen=True)
class Correction:
    prediction_id: str
    # "pending" (waits for an admin), "accepted" (in the `corrections` data set) or "rejected".
    status: str
    # The true digit; None when it is not a digit at all.
    digit: int | None
    not_a_digit: bool
    predicted_digit: int
    model_version: str
    created_at: str
    # Who sent it (an address).
    caller: str
    reviewed_at: str
    reviewed_by: str
    # The 784 bytes the model saw: `correction(id)` only.
    model_input: bytes | None = None
    # False when `correct` found the same correction already there (a retry): nothing new was stored.
    created: bool = False


@dataclass(frozen=True)
class CorrectionList:
    corrections: list[Correction]
    # How many are stored, by status, and the most the store holds.
    pending: int
    accepted: int
    rejected: int
    capacity: int


@dataclass(frozen=True)
class Dataset:
    source: str
    size: int
    digest: str


@dataclass(frozen=True)
class Model:
    version: str
    kind: str
    active: bool
    accuracy: float
    f1_weighted: float
    dataset: Dataset
    created_at: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    parent: str
    sha256: str
    blob_size: int
    job_id: str
    code_version: str
    pinned: bool
    pruned_at: str
    key_id: str
    fitted_on: str
    # The job's report (every candidate, the split, the gate's reason): filled by ``model(version)`` only.
    report: dict[str, Any]


@dataclass(frozen=True)
class Replica:
    id: str
    version: str
    sha256: str
    state: str
    error: str
    seen_seconds_ago: float


@dataclass(frozen=True)
class ModelList:
    models: list[Model]
    active_version: str
    replicas: list[Replica]

    @property
    def replicas_behind(self) -> list[Replica]:
        """The replicas that do not serve the active version."""
        return [r for r in self.replicas if r.version != self.active_version]


@dataclass(frozen=True)
class Activation:
    previous_version: str
    active_version: str


@dataclass(frozen=True)
class Promotion:
    action: str
    from_version: str
    to_version: str
    why: str
    when: str
    job: str


@dataclass(frozen=True)
class Job:
    id: str
    status: str
    stage: str
    progress: float
    error: str
    version: str
    outcome: str
    enqueued_at: str
    started_at: str
    ended_at: str
    spec: dict[str, Any]
    result: dict[str, Any]

    @property
    def ended(self) -> bool:
        return self.status in JOB_ENDED

    @property
    def activated(self) -> bool:
        return self.outcome.startswith("activated")


def prediction(reply: recognizer_pb2.PredictResponse) -> Prediction:
    return Prediction(digit=reply.digit, confidence=reply.confidence, probabilities=tuple(reply.probabilities),
                      version=reply.version, model_input=reply.model_input or None, prediction_id=reply.prediction_id,
                      verdict=VERDICTS.get(reply.verdict), runner_up=reply.runner_up,
                      familiarity=reply.familiarity if reply.HasField("familiarity") else None,
                      margin=reply.margin if reply.HasField("margin") else None, marks=reply.marks)


def predictions(reply: recognizer_pb2.PredictBatchResponse) -> list[Prediction]:
    return [prediction(r) for r in reply.responses]


def model(reply: models_pb2.Model) -> Model:
    return Model(
        version=reply.version, kind=reply.kind, active=reply.active, accuracy=reply.accuracy,
        f1_weighted=reply.f1_weighted,
        dataset=Dataset(reply.dataset.source, reply.dataset.size, reply.dataset.digest),
        created_at=reply.created_at, params=_json(reply.params_json), metrics=_json(reply.metrics_json),
        parent=reply.parent, sha256=reply.sha256, blob_size=reply.blob_size, job_id=reply.job_id,
        code_version=reply.code_version, pinned=reply.pinned, pruned_at=reply.pruned_at, key_id=reply.key_id,
        fitted_on=reply.fitted_on, report=_json(reply.report_json),
    )


def model_list(reply: models_pb2.ListModelsResponse) -> ModelList:
    replicas = [Replica(r.id, r.version, r.sha256, r.state, r.error, r.seen_seconds_ago) for r in reply.replicas]
    return ModelList([model(m) for m in reply.models], reply.active_version, replicas)


def activation(reply: models_pb2.Activation) -> Activation:
    return Activation(reply.previous_version, reply.active_version)


def promotions(reply: models_pb2.ListPromotionsResponse) -> list[Promotion]:
    return [Promotion(p.action, p.from_version, p.to_version, p.why, p.when, p.job) for p in reply.promotions]


def job(reply: training_pb2.Job) -> Job:
    return Job(
        id=reply.id, status=reply.status, stage=reply.stage, progress=reply.progress, error=reply.error,
        version=reply.version, outcome=reply.outcome, enqueued_at=reply.enqueued_at, started_at=reply.started_at,
        ended_at=reply.ended_at, spec=_json(reply.spec_json), result=_json(reply.result_json),
    )


def jobs(reply: training_pb2.ListJobsResponse) -> list[Job]:
    return [job(j) for j in reply.jobs]


def correction(reply: feedback_pb2.Correction) -> Correction:
    not_a_digit = reply.WhichOneof("truth") == "not_a_digit"
    return Correction(
        prediction_id=reply.prediction_id, status=reply.status, digit=None if not_a_digit else reply.digit,
        not_a_digit=not_a_digit, predicted_digit=reply.predicted_digit, model_version=reply.model_version,
        created_at=reply.created_at, caller=reply.caller, reviewed_at=reply.reviewed_at,
        reviewed_by=reply.reviewed_by, model_input=reply.model_input or None, created=reply.created,
    )


def correction_list(reply: feedback_pb2.ListCorrectionsResponse) -> CorrectionList:
    return CorrectionList([correction(c) for c in reply.corrections], reply.pending, reply.accepted, reply.rejected,
                          reply.capacity)


def deleted(reply: feedback_pb2.DeleteCorrectionResponse) -> str:
    return reply.prediction_id


def _json(text: str) -> dict[str, Any]:
    value = json.loads(text) if text else {}
    return value if isinstance(value, dict) else {"value": value}
