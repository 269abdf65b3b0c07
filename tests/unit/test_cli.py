"""digits.cli: options that cannot work are refused before any call is made; the tables' pure formatting."""

from __future__ import annotations

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
