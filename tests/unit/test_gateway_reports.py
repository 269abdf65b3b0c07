"""The report pages share the drawing page's stylesheet and layout, and escape whatever the registry holds."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from digits.modelling.verdicts import Verdict
from digits.platform.corrections import VersionCorrections
from digits.platform.registry import ModelRecord
from digits.settings import Settings
from services.gateway import reports
from services.gateway.http import STATIC, create_app
from services.gateway.replicas import ReplicaStatus

HOSTILE = '<script>alert("x")</script>'
PNG = b"\x89PNG\r\n\x1a\n"
# What the trainer records for a version with a calibrated verdict (digits.training.open_set), in small.
VERDICTS = {
    "calibration": {
        "thresholds": {"familiarity": -0.4123, "margin": 0.2309}, "digits": 1200,
        "digits_verdicts": {"DIGIT": 0.9725, "UNSURE": 0.015, "NOT_A_DIGIT": 0.0075, "SEVERAL": 0.005},
        "error_among_digit": 0.0111,
        "error_reject_curve": [{"rejected": 0.0, "error": 0.021}, {"rejected": 0.01, "error": 0.015},
                               {"rejected": 0.1, "error": 0.004}],
        "non_digits_per_family": 200,
        "non_digits_caught": {"letters": 0.62, "scribbles": 0.91, "two_digits": 0.97},
        "familiarity_histogram": {"edges": [-3.0, -1.0, 1.0, 3.0], "digits": [0.0, 0.1, 0.9],
                                  "letters": [0.3, 0.5, 0.2], "scribbles": [0.8, 0.2, 0.0],
                                  "two_digits": [0.1, 0.5, 0.4]},
    },
    "validation": {"digits": 1000, "verdicts": {"DIGIT": 0.971, "UNSURE": 0.016, "NOT_A_DIGIT": 0.008,
                                                 "SEVERAL": 0.005}, "error_among_digit": 0.012, "error": 0.021},
}


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
    hostile_verdicts = record(metrics={"verdicts": {
        "calibration": {"thresholds": {"familiarity": HOSTILE, "margin": [HOSTILE]}, "digits": HOSTILE,
                        "digits_verdicts": {"DIGIT": HOSTILE}, "non_digits_caught": {HOSTILE: HOSTILE},
                        "error_reject_curve": [HOSTILE, {"rejected": HOSTILE}],
                        "familiarity_histogram": {"edges": [HOSTILE, 1], HOSTILE: [HOSTILE]}},
        "validation": HOSTILE}})
    for draw in (reports.error_reject_png, reports.familiarity_png):  # drawn as a version without a verdict
        assert draw(hostile_verdicts).startswith(PNG)
    replica = ReplicaStatus(HOSTILE, HOSTILE, "", HOSTILE, HOSTILE, 0.0)
    corrected = VersionCorrections(HOSTILE, {(1, HOSTILE): 2, (2, "7"): 1}, {"accepted": 2, "pending": 1}, 3, True)
    for html in (reports.model_page(hostile, HOSTILE), reports.models_page([hostile], HOSTILE, set(), [replica]),
                 reports.model_page(hostile, HOSTILE, corrected), reports.model_page(hostile, HOSTILE, None, HOSTILE),
                 reports.model_page(hostile_verdicts, "v3")):
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


def calibrated(**fields: object) -> ModelRecord:
    return record(metrics={"accuracy": 0.979, "verdicts": VERDICTS}, **fields)


def test_the_page_shows_the_thresholds_and_what_they_did_to_digits_and_non_digits() -> None:
    page = compact(reports.model_page(calibrated(), "v3"))
    assert '<h2 id="honest-title">Honest answers</h2>' in page
    assert ("Thresholds: familiarity <b>-0.412</b> (below it, NOT_A_DIGIT) and margin <b>0.231</b> (below it, "
            "UNSURE), calibrated on 1,200 holdout digits and 200 non-digits of each family") in page
    assert ('<th scope="col">validation digits (1,000)</th><th scope="col">holdout digits (1,200)</th>' in page)
    assert '<th scope="row">NOT_A_DIGIT <small>(not a digit)</small></th><td>0.80%</td><td>0.75%</td>' in page
    assert "answered DIGIT: <b>1.20%</b> (among all of them: 2.10%); among the holdout digits answered DIGIT: 1.11%" \
        in page
    assert '<tr><th scope="row">two digits</th><td>97.0%</td></tr>' in page
    for chart in ("error-reject.png", "familiarity.png"):
        assert f'<img src="/models/v3/{chart}"' in page
    assert "no calibrated verdict" not in page
    assert "refitted on every digit" in reports.model_page(calibrated(fitted_on="all"), "v3")


def test_a_version_without_a_calibrated_verdict_says_so_and_draws_nothing_of_it() -> None:
    records: list[dict[str, Any]] = [{"accuracy": 0.98}, {"verdicts": {}},
                                      {"verdicts": {"validation": VERDICTS["validation"]}}]
    for metrics in records:
        page = reports.model_page(record(metrics=metrics), "v3")
        assert '<h2 id="honest-title">Honest answers</h2>' in page
        assert "v3 has no calibrated verdict: it answers DIGIT, or SEVERAL when" in page
        assert "Thresholds:" not in page and ".png" in page and "error-reject.png" not in page


def test_the_verdicts_the_page_names_are_the_ones_inference_answers() -> None:
    assert [name for name, _ in reports.VERDICTS] == [verdict.value for verdict in Verdict]


@pytest.mark.parametrize("draw", [reports.error_reject_png, reports.familiarity_png])
def test_the_honest_answers_charts_are_pngs_that_draw_the_record(draw: Any) -> None:
    drawn, empty = draw(calibrated()), draw(record())
    assert drawn.startswith(PNG) and empty.startswith(PNG)
    assert len(drawn) > 2 * len(empty)  # a curve or histograms with axes, not the one sentence of an empty record


class Records:
    """The one call the chart routes make of the registry."""

    def get(self, version: str) -> ModelRecord:
        return calibrated(version=version)


def test_the_gateway_serves_the_charts_as_png() -> None:
    async def run() -> None:
        app = create_app(None, Records(), None, None, Settings(), lambda: True)  # type: ignore[arg-type]
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            for chart in ("error-reject.png", "familiarity.png"):
                response = await client.get(f"/models/v7/{chart}")
                assert response.status == 200 and response.content_type == "image/png", chart
                assert (await response.read()).startswith(PNG)

    asyncio.run(run())
