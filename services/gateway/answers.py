"""An answer's verdict as the gateway's JSON surfaces say it (``/api/predict``, the Open Inference Protocol).

The verdict travels as the ``digits.v1.Verdict`` enum; outside gRPC it is a plain word, ``DIGIT``, ``UNSURE``,
``NOT_A_DIGIT`` or ``SEVERAL``, and ``None`` (JSON null) for ``VERDICT_UNSPECIFIED``: an answer nobody judged (from
a replica older than verdicts). Mapped from the wire's enum, never from ``digits.modelling.verdicts``, which the
gateway does not load.
"""

from __future__ import annotations

from typing import Any, Final

from digits.v1 import recognizer_pb2 as pb

WORDS: Final[dict[int, str]] = {
    pb.VERDICT_DIGIT: "DIGIT", pb.VERDICT_UNSURE: "UNSURE", pb.VERDICT_NOT_A_DIGIT: "NOT_A_DIGIT",
    pb.VERDICT_SEVERAL: "SEVERAL",
}


def verdict_word(answer: pb.PredictResponse) -> str | None:
    """The verdict in a word; None when the answer was not judged (or carries a verdict newer than this gateway)."""
    return WORDS.get(answer.verdict)


def familiarity(answer: pb.PredictResponse) -> float | None:
    return answer.familiarity if answer.HasField("familiarity") else None


def margin(answer: pb.PredictResponse) -> float | None:
    return answer.margin if answer.HasField("margin") else None


def verdict_fields(answer: pb.PredictResponse) -> dict[str, Any]:
    """The verdict's keys of a JSON prediction: verdict, runner_up, familiarity, margin (null when unset), marks."""
    return {"verdict": verdict_word(answer), "runner_up": answer.runner_up, "familiarity": familiarity(answer),
            "margin": margin(answer), "marks": answer.marks}
