"""The report pages share the drawing page's stylesheet and layout, and escape whatever the registry holds."""

from __future__ import annotations

import re

from digits.platform.corrections import VersionCorrections
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
    corrected = VersionCorrections(HOSTILE, {(1, HOSTILE): 2, (2, "7"): 1}, {"accepted": 2, "pending": 1}, 3, True)
    for html in (reports.model_page(hostile, HOSTILE), reports.models_page([hostile], HOSTILE, set(), [replica]),
                 reports.model_page(hostile, HOSTILE, corrected), reports.model_page(hostile, HOSTILE, None, HOSTILE)):
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


def test_a_report_says_how_many_corrections_were_fitted_on_and_validated_on() -> None:
    parts = [{"source": "sample", "size": 5000}, {"source": "corrections", "size": 50, "fit": 40, "validation": 10}]
    page = reports.model_page(record(report={"dataset": {"parts": parts}}), "v3")
    assert ("Data: <code>sample</code> (5000 digits), <code>corrections</code> (50 digits: 40 fitted on, 10 kept "
            "to validate on).") in page


def test_the_page_shows_what_people_corrected_predicted_by_corrected_digit() -> None:
    corrected = VersionCorrections("v3", {(4, "9"): 5, (4, "not-a-digit"): 1, (7, "1"): 2},
                                   {"accepted": 6, "pending": 2}, 8, True)
    page = compact(reports.model_page(record(), "v3", corrected))
    assert '<h2 id="corrected-title">What people corrected</h2>' in page
    assert "8 corrections of v3's answers, accepted and pending (6 accepted, 2 pending); rejected ones" in page
    head = "".join(f'<th scope="col">{d}</th>' for d in range(10))
    assert f'<th scope="col">predicted</th>{head}<th scope="col">not a digit</th><th scope="col">total</th>' in page
    assert ('<tr><th scope="row">4</th>' + "<td></td>" * 9 + "<td>5</td><td>1</td><td>6</td></tr>") in page
    assert ('<tr><th scope="row">7</th><td></td><td>2</td>' + "<td></td>" * 9 + "<td>2</td></tr>") in page
    assert page.count('<th scope="row">') == 2  # only the digits it predicted that someone corrected
    partial = VersionCorrections("v3", {}, {"accepted": 0, "pending": 0}, 20_000, False)
    assert "No accepted and pending corrections of v3's answers (of the newest 20,000" in reports.model_page(
        record(), "v3", partial)
    unread = reports.model_page(record(), "v3", None, "Redis did not answer")
    assert "could not be read (Redis did not answer)" in unread
