"""digits.cli: options that cannot work are refused before any call is made; the tables' pure formatting."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from digits import cli
from digits.client import types
from digits.v1 import models_pb2, training_pb2


def test_the_cli_refuses_options_it_cannot_use_before_calling(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--tls-ca", str(tmp_path / "missing.pem"), "models"]) == 2
    assert "missing.pem" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # plaintext and TLS at once
        cli.main(["--insecure", "--tls-ca", str(tmp_path / "ca.pem"), "models"])
    with pytest.raises(SystemExit) as shown:
        cli.main(["--version"])
    assert shown.value.code == 0 and capsys.readouterr().out.startswith("digits ")


def test_tables_pad_every_column_to_its_widest_cell(capsys: pytest.CaptureFixture[str]) -> None:
    cli._table(["JOB", "STATUS", "WHY"], [["j-1", "finished", ""], ["job-22", "failed", "out of memory"]])
    assert capsys.readouterr().out.splitlines() == [
        "JOB     STATUS    WHY",
        "j-1     finished",  # trailing padding is trimmed
        "job-22  failed    out of memory",
    ]


def test_a_candidates_figures_or_why_it_failed() -> None:
    row = {"accuracy": 0.98765, "f1_weighted": 0.9876, "fit_seconds": 61.44, "predict_ms_per_image": 0.1234,
           "serialized_bytes": 12_345_678}
    assert cli._figures(row) == ["0.9877", "0.9876", "61.4", "0.123", "12.3", "-"]
    assert cli._figures({**row, "n_support_vectors": 9000})[-1] == "9000"
    assert cli._figures({"error": "x" * 100}) == ["failed: " + "x" * 60, "", "", "", "", ""]


def test_notes_and_exit_codes() -> None:
    assert cli._note(types.model(models_pb2.Model(version="v1", pinned=True, pruned_at="2025-01-01"))) == \
        "pinned, pruned"
    assert cli._note(types.model(models_pb2.Model(version="v2"))) == ""
    assert cli._exit_code(types.job(training_pb2.Job(id="j", status="finished"))) == 0
    assert [cli._exit_code(types.job(training_pb2.Job(id="j", status=s))) for s in ("failed", "canceled")] == [1, 1]


def test_models_show_lists_the_parts_of_the_data_and_skipped_files(capsys: pytest.CaptureFixture[str]) -> None:
    cli._show_data_parts({"parts": [{"source": "sample", "size": 5000}]})
    assert capsys.readouterr().out == ""
    cli._show_data_parts({"skipped": 1, "parts": [
        {"source": "sample", "size": 5000},
        {"source": "folder:/mine", "size": 300, "skipped": 1,
         "skipped_files": [{"path": "3/bad.png", "reason": "not an image"}]}]})
    assert capsys.readouterr().out.splitlines() == [
        "  data: sample, 5000 digits", "  data: folder:/mine, 300 digits, 1 file skipped",
        "    skipped 3/bad.png: not an image"]


def test_models_show_names_the_verdict_thresholds_and_validation_shares(capsys: pytest.CaptureFixture[str]) -> None:
    cli._show_verdicts({"verdicts": {
        "calibration": {"thresholds": {"familiarity": -0.41234, "margin": 0.2309}},
        "validation": {"verdicts": {"DIGIT": 0.971, "UNSURE": 0.016, "NOT_A_DIGIT": 0.008, "SEVERAL": 0.005},
                       "error_among_digit": 0.012}}})
    cli._show_verdicts({"accuracy": 0.98})
    assert capsys.readouterr().out.splitlines() == [
        "  verdict thresholds: familiarity -0.412, margin 0.231",
        "  validation verdicts: DIGIT 97.10%, UNSURE 1.60%, NOT_A_DIGIT 0.80%, SEVERAL 0.50%; wrong among DIGIT 1.20%",
        "  verdicts: no calibrated thresholds; answers DIGIT or SEVERAL only",
    ]


def test_a_corrections_digit_is_0_to_9_or_not_a_digit() -> None:
    assert [cli._truth(str(d)) for d in range(10)] == list(range(10))
    assert cli._truth("not-a-digit") is None and cli._truth("NOT_A_DIGIT") is None
    for bad in ("10", "-1", "seven", "", "7.0"):
        with pytest.raises(argparse.ArgumentTypeError, match="0 to 9 or not-a-digit"):
            cli._truth(bad)


def test_a_correction_is_shown_with_what_the_model_saw(capsys: pytest.CaptureFixture[str]) -> None:
    ink = bytes([255 if 10 <= i % 28 < 14 else 0 for i in range(784)])  # a vertical bar: a 1
    correction = types.Correction("d" * 32, "pending", 1, False, 7, "v3", "2026-01-01T00:00:00+00:00", "10.0.0.1",
                                  "", "", ink)
    cli._show_correction(correction)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{'d' * 32}: pending; it is 1, model v3 said 7"
    drawing = [line for line in lines if line.startswith("  |")]
    assert len(drawing) == 28 and all(line == "  |" + " " * 20 + "@" * 8 + " " * 28 + "|" for line in drawing)
    assert cli._correction_row(correction)["model_input"] == list(ink)  # JSON: numbers, not bytes


def test_ids_after_an_option_are_still_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def corrections(client: object, args: argparse.Namespace) -> int:
        seen.append(args.ids)
        return 0

    monkeypatch.setattr(cli, "_corrections", corrections)
    for argv in (["corrections", "accept", "--json", "a", "b"], ["corrections", "accept", "a", "--json", "b"],
                 ["corrections", "--json", "accept", "a", "b"]):
        assert cli.main(["--gateway", "127.0.0.1:1", *argv]) == 0
    assert seen == [["a", "b"]] * 3
    with pytest.raises(SystemExit):
        cli.main(["--gateway", "127.0.0.1:1", "models", "list", "--bogus"])


def answer(verdict: str | None, **fields: object) -> types.Prediction:
    given: dict[str, object] = {"digit": 4, "confidence": 0.55, "probabilities": (0.1,) * 10, "version": "v2",
                                "prediction_id": "e" * 32, "verdict": verdict, "runner_up": 9,
                                "familiarity": 1.23456, "margin": 0.01234, "marks": 1, **fields}
    return types.Prediction(**given)  # type: ignore[arg-type]


def test_predict_says_each_verdict_in_words() -> None:
    figures = f"confidence 0.55, model v2, id {'e' * 32}"
    assert cli._read_as(answer("DIGIT")) == f"4 ({figures})"
    assert cli._read_as(answer(None)) == f"4 ({figures})"  # not judged: the digit, as before verdicts
    assert cli._read_as(answer("UNSURE")) == f"4 or maybe 9 (unsure, {figures})"
    assert cli._read_as(answer("NOT_A_DIGIT")) == f"not a digit (reads most like 4, {figures})"
    assert cli._read_as(answer("SEVERAL", marks=3)) == f"several digits (3 marks, {figures})"


def test_predict_json_rows_have_the_http_predictions_verdict_keys() -> None:
    row = cli._prediction_row(Path("x.png"), answer("UNSURE"))
    assert row == {"file": "x.png", "digit": 4, "confidence": 0.55, "version": "v2", "prediction_id": "e" * 32,
                   "verdict": "UNSURE", "runner_up": 9, "familiarity": 1.2346, "margin": 0.0123, "marks": 1}
    unscored = cli._prediction_row(Path("y.png"), answer(None, familiarity=None, margin=None))
    assert (unscored["verdict"], unscored["familiarity"], unscored["margin"]) == (None, None, None)
    assert json.loads(json.dumps(unscored))["verdict"] is None  # null in the JSON line


def test_predict_prints_a_line_per_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    answers = {"a.png": answer("SEVERAL", marks=2), "b.png": answer("NOT_A_DIGIT", digit=8)}

    class FakeClient:
        def predict(self, path: Path) -> types.Prediction:
            return answers[path.name]

    args = argparse.Namespace(files=[tmp_path / "a.png", tmp_path / "b.png"], json=False)
    assert cli._predict(FakeClient(), args) == 0  # type: ignore[arg-type]
    first, second = capsys.readouterr().out.splitlines()
    assert first.startswith(f"{tmp_path / 'a.png'}: several digits (2 marks, confidence")
    assert second.startswith(f"{tmp_path / 'b.png'}: not a digit (reads most like 8, confidence")
    args.json = True
    assert cli._predict(FakeClient(), args) == 0  # type: ignore[arg-type]
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["verdict"], r["marks"], r["digit"]) for r in rows] == [("SEVERAL", 2, 4), ("NOT_A_DIGIT", 1, 8)]
