"""digits.client.types: replies become plain dataclasses, and the client agrees with the server on final states."""

from __future__ import annotations

from digits.client import types
from digits.training import jobs
from digits.v1 import feedback_pb2, models_pb2, recognizer_pb2, training_pb2


def test_replies_become_plain_dataclasses() -> None:
    reply = models_pb2.Model(version="v3", kind="svc", params_json='{"C": 5}', metrics_json='{"accuracy": 0.9}',
                             dataset=models_pb2.Dataset(source="sample", size=5000, digest="ab"), active=True,
                             report_json="")
    model = types.model(reply)
    assert (model.version, model.params, model.metrics, model.report, model.dataset.size) == \
        ("v3", {"C": 5}, {"accuracy": 0.9}, {}, 5000)
    answer = types.prediction(recognizer_pb2.PredictResponse(digit=7, confidence=0.5, probabilities=[0.1] * 10,
                                                             version="v3", prediction_id="c" * 32))
    assert answer.digit == 7 and answer.model_input is None and len(answer.probabilities) == 10
    assert answer.prediction_id == "c" * 32
    zero = types.correction(feedback_pb2.Correction(prediction_id="c" * 32, status="pending", digit=0,
                                                    predicted_digit=6, created=True))
    assert (zero.digit, zero.not_a_digit, zero.predicted_digit, zero.created, zero.model_input) == (
        0, False, 6, True, None)
    nothing = types.correction(feedback_pb2.Correction(not_a_digit=True, model_input=bytes(784)))
    assert nothing.digit is None and nothing.not_a_digit and nothing.model_input == bytes(784)
    listed = types.correction_list(feedback_pb2.ListCorrectionsResponse(corrections=[feedback_pb2.Correction()],
                                                                        pending=1, capacity=10))
    assert len(listed.corrections) == 1 and (listed.pending, listed.accepted, listed.capacity) == (1, 0, 10)
    job = types.job(training_pb2.Job(id="j", status="finished", outcome="activated: better", result_json='{"a": 1}'))
    assert job.ended and job.activated and job.result == {"a": 1} and job.spec == {}


def test_a_prediction_carries_its_verdict_in_words_and_unset_scores_as_none() -> None:
    unsure = types.prediction(recognizer_pb2.PredictResponse(digit=4, verdict=recognizer_pb2.VERDICT_UNSURE,
                                                              runner_up=9, familiarity=0.0, margin=0.25, marks=1))
    assert (unsure.verdict, unsure.runner_up, unsure.familiarity, unsure.margin, unsure.marks) == (
        "UNSURE", 9, 0.0, 0.25, 1)
    several = types.prediction(recognizer_pb2.PredictResponse(verdict=recognizer_pb2.VERDICT_SEVERAL, marks=3))
    assert (several.verdict, several.familiarity, several.margin, several.marks) == ("SEVERAL", None, None, 3)
    words = {types.prediction(recognizer_pb2.PredictResponse(verdict=v)).verdict
             for v in recognizer_pb2.Verdict.values()}
    assert words == {None, "DIGIT", "UNSURE", "NOT_A_DIGIT", "SEVERAL"}  # None: not judged
    assert types.prediction(recognizer_pb2.PredictResponse(verdict=99)).verdict is None  # type: ignore[arg-type]


def test_a_prediction_built_by_position_as_before_still_works() -> None:
    old = types.Prediction(7, 0.9, (0.1,) * 10, "v3", None, "c" * 32)
    assert (old.prediction_id, old.verdict, old.runner_up, old.familiarity, old.margin, old.marks) == (
        "c" * 32, None, 0, None, None, 0)


def test_the_client_knows_which_job_states_are_final() -> None:
    assert {s.value for s in jobs.TERMINAL} == types.JOB_ENDED
