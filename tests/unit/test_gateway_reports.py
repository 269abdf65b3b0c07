"""The report pages share the drawing page's stylesheet and layout, and escape whatever the registry holds."""

from __future__ import annotations

import re

from digits.platform.registry import ModelRecord
from services.gateway import reports
from services.gateway.http import STATIC
from services.gateway.replicas import ReplicaStatus

HOSTILE = '<script>alert("x")</script>'


def record(**fields: object) -> ModelRecord:
    values: dict[str, object] = {
        "version": "v3", "kind": "svc", "params": {}, "metrics": {"accuracy": 0.98, "confusions": ["4 read as 9"]},
        "dataset": {"source": "mnist", "size": 1000, "digest": "ab" * 32}, "created_at": "2025-01-01T00:00:00Z",
        "parent": "", "sha256": "", "signature": "", "blob_size": 0,
    }
    return ModelRecord(**{**values, **fields})  # type: ignore[arg-type]


def pages() -> dict[str, str]:
    replica = ReplicaStatus("inference-1", "v3", "", "serving", "", 0.0)
    return {
        "/": (STATIC / "index.html").read_text(),
        "/models": reports.models_page([record()], "v3", set(), [replica]),
        "/models/v3": reports.model_page(record(), "v3"),
    }


def compact(html: str) -> str:
    return re.sub(r">\s+<", "><", html)


def test_every_page_links_the_one_stylesheet_and_carries_no_css_of_its_own() -> None:
    assert (STATIC / reports.STYLESHEET.removeprefix("/static/")).is_file()
    for path, html in pages().items():
        assert re.findall(r'<link rel="stylesheet" href="([^"]+)">', html) == [reports.STYLESHEET], path
        assert "<style" not in html and " style=" not in html, path


def test_every_page_ends_with_the_same_navigation_bar_its_own_item_marked() -> None:
    for path, html in pages().items():
        assert compact(reports.nav(path)) in compact(html), f"{path}: the navigation bar drifted from reports.nav"
    assert 'href="/" aria-current="page">Draw' in reports.nav("/")
    assert 'href="/models" aria-current="page">Models' in reports.nav("/models")
    on_report = reports.nav("/models/v3")
    assert 'href="/models" aria-current="true">Models' in on_report  # the section, not the page
    assert on_report.count("aria-current") == 1


def test_what_the_registry_holds_is_escaped() -> None:
    hostile = record(
        version="v3", kind=HOSTILE, created_at=HOSTILE, job_id=HOSTILE, code_version=HOSTILE,
        metrics={"confusions": [HOSTILE]}, dataset={"source": HOSTILE, "size": HOSTILE, "digest": HOSTILE},
        report={"gate": HOSTILE, "winner": HOSTILE, "split": {"train": HOSTILE, "validated_on": HOSTILE},
                "candidates": [{"name": HOSTILE}, {"name": "knn", "error": HOSTILE}],
                "dataset": {"skipped": 1, "parts": [{"source": HOSTILE, "size": HOSTILE, "skipped": HOSTILE,
                                                     "skipped_files": [{"path": HOSTILE, "reason": HOSTILE}]}]}},
    )
    replica = ReplicaStatus(HOSTILE, HOSTILE, "", HOSTILE, HOSTILE, 0.0)
    for html in (reports.model_page(hostile, HOSTILE), reports.models_page([hostile], HOSTILE, set(), [replica])):
        assert "<script" not in html
        assert "&lt;script&gt;" in html


def test_a_report_lists_the_parts_of_its_data_and_the_files_a_folder_skipped() -> None:
    parts = [{"source": "sample", "size": 5000}, {"source": "folder:/mine", "size": 300, "skipped": 1,
                                                  "skipped_files": [{"path": "3/bad.png", "reason": "not an image"}]}]
    page = reports.model_page(record(report={"dataset": {"skipped": 1, "parts": parts}}), "v3")
    assert ("Data: <code>sample</code> (5000 digits), <code>folder:/mine</code> (300 digits, 1 file skipped)."
            in page) and "<li><code>3/bad.png</code>: not an image</li>" in page
    one = reports.model_page(record(report={"dataset": {"parts": [{"source": "sample", "size": 5000}]}}), "v3")
    assert "Data:" not in one  # one source, nothing skipped: the intro says it all
