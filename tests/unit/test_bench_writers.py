"""The bench's one set of writers: the formats its committed results (bench/results/*.jsonl) and tables use."""

from __future__ import annotations

import json
from pathlib import Path

from bench import writers


def test_rows_are_appended_as_json_lines_and_read_back(tmp_path: Path) -> None:
    out = tmp_path / "results" / "quality.jsonl"
    writers.append_row(out, {"recipe": "svc", "accuracy": 0.98})
    writers.append_row(out, {"recipe": "svc-vsv", "params": {"C": 10.0}})
    assert out.read_text() == '{"recipe": "svc", "accuracy": 0.98}\n{"recipe": "svc-vsv", "params": {"C": 10.0}}\n'
    assert writers.read_rows(out) == [{"recipe": "svc", "accuracy": 0.98}, {"recipe": "svc-vsv", "params": {"C": 10.0}}]
    assert writers.read_rows(tmp_path / "absent.jsonl") == []


def test_the_committed_results_read_back_unchanged() -> None:
    committed = writers.RESULTS / "quality.jsonl"
    rows = writers.read_rows(committed)
    assert rows and "\n".join(json.dumps(row) for row in rows) + "\n" == committed.read_text()


def test_tables_align_their_columns_as_asked() -> None:
    header, rows = ("case", "C", "pred/s"), [("(a) seed", "1", "125"), ("(d) gateway", "64", "2,000")]
    assert writers.markdown_table(header, rows, "l") == (
        "| case | C | pred/s |\n|---|---:|---:|\n| (a) seed | 1 | 125 |\n| (d) gateway | 64 | 2,000 |")
    assert writers.text_table(header, rows, "l") == (
        "case          C  pred/s\n(a) seed      1     125\n(d) gateway  64   2,000")
    assert writers.text_table(header, rows).splitlines()[0] == "       case   C  pred/s"
