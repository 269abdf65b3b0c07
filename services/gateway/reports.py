"""Training reports for people: ``/models`` lists versions, ``/models/<version>`` shows one job's comparison,
the confusion matrix as a heatmap, per-class F1 as bars, the most frequent confusions in words, and how honest its
answers are: the verdict's thresholds, what they did to digits and non-digits, the error-reject curve and the
familiarity scores (``metrics["verdicts"]``, which versions without a calibrated verdict lack).

Pictures are drawn here with matplotlib (Agg, no display) and served as PNG; the pages use no CDN.
"""

from __future__ import annotations

import io
from html import escape
from typing import Any

from digits.mnist import N_CLASSES
from digits.platform.corrections import LIVE_STATUSES, NOT_A_DIGIT, VersionCorrections
from digits.platform.registry import ModelRecord
from services.gateway.replicas import ReplicaStatus

# The drawing page's stylesheet (static/style.css) styles these pages too: one file, and none inline (the
# Content-Security-Policy, default-src 'self', would refuse an inline <style> anyway).
STYLESHEET = "/static/style.css"
# The navigation bar every page ends with, in this order. static/index.html carries nav("/") as written here
# (tests/unit/test_gateway_reports.py keeps the two equal).
PAGES = (("/", "Draw"), ("/models", "Models"))

# The verdicts an answer carries (digits.modelling.verdicts.Verdict, which the gateway does not import), in words.
VERDICTS = (("DIGIT", "a digit"), ("UNSURE", "unsure between two digits"), ("NOT_A_DIGIT", "not a digit"),
            ("SEVERAL", "several digits side by side"))

COLUMNS = [
    ("accuracy", "accuracy", "{:.4f}"), ("f1_weighted", "weighted F1", "{:.4f}"),
    ("fit_seconds", "fit s", "{:.1f}"), ("predict_ms_per_image", "ms / image", "{:.3f}"),
    ("serialized_bytes", "size MB", None), ("n_support_vectors", "support vectors", "{:d}"),
]


def nav(path: str) -> str:
    """The navigation bar for the page at ``path``: its own item is the current page, and a page below an item
    (``/models/v3`` below ``/models``) marks that item as the current section."""

    def current(href: str) -> str:
        if path == href:
            return ' aria-current="page"'
        return ' aria-current="true"' if href != "/" and path.startswith(href + "/") else ""

    items = "".join(f'<li><a href="{href}"{current(href)}>{label}</a></li>' for href, label in PAGES)
    return f'<nav class="site-nav" aria-label="Pages"><ul>{items}</ul></nav>'


def _page(path: str, title: str, heading: str, intro: str, body: str) -> str:
    """The drawing page's layout: a header under the navigation bar, the page's panels. ``heading``, ``intro`` and
    ``body`` are HTML whose untrusted parts the caller has escaped."""
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="color-scheme" content="light dark">'
            f'<title>{escape(title)}</title><link rel="icon" href="data:,">'
            f'<link rel="stylesheet" href="{STYLESHEET}"></head><body>'
            f'<header>{nav(path)}<h1>{heading}</h1><p>{intro}</p></header><main class="report">{body}</main>'
            "</body></html>")


def _panel(anchor: str, title: str, content: str) -> str:
    return (f'<section class="panel" aria-labelledby="{anchor}"><h2 id="{anchor}">{title}</h2>{content}'
            "</section>")


def _cell(row: dict[str, Any], key: str, fmt: str | None) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    if key == "serialized_bytes":
        return f"{value / 1e6:.1f}"
    return fmt.format(value) if fmt else escape(str(value))


def _marks(record: ModelRecord, active: str, pinned: set[str]) -> str:
    marks = [word for word, on in (("active", record.version == active), ("pinned", record.version in pinned),
                                   ("pruned", bool(record.pruned_at))) if on]
    return f" ({', '.join(marks)})" if marks else ""


def _replicas_section(replicas: list[ReplicaStatus], active: str) -> str:
    """Which version each replica serves; a replica that disagrees with the active pointer is called out."""
    if not replicas:
        return _panel("replicas-title", "Replicas", "<p>No inference replica has reported in the last few seconds.</p>")
    rows = "".join(
        f'<tr class="{"" if s.version == active else "disagree"}"><td>{escape(s.id)}</td><td>{escape(s.version or "-")}'
        f"</td><td>{escape(s.state)}</td><td>{escape(s.error)}</td></tr>"
        for s in replicas
    )
    behind = [s.id for s in replicas if s.version != active]
    warning = (f"<p><b>{len(behind)} of {len(replicas)} replicas do not serve the active version {escape(active)}"
               "</b> (see their state).</p>" if behind else
               f"<p>All {len(replicas)} replicas serve {escape(active)}.</p>")
    table = f"<table><tr><th>replica</th><th>serves</th><th>state</th><th>why</th></tr>{rows}</table>"
    return _panel("replicas-title", "Replicas", warning + table)


def models_page(records: list[ModelRecord], active: str, pinned: set[str], replicas: list[ReplicaStatus]) -> str:
    rows = "".join(
        f'<tr class="{"active" if r.version == active else ""}"><td><a href="/models/{escape(r.version)}">'
        f'{escape(r.version)}</a>{_marks(r, active, pinned)}</td><td>{escape(r.kind)}</td>'
        + "".join(f"<td>{_cell(r.metrics, k, f)}</td>" for k, _, f in COLUMNS[:3])
        + f"<td>{escape(str(r.dataset.get('source', '')))} ({escape(str(r.dataset.get('size', '?')))})</td>"
        f"<td>{escape(r.created_at)}</td></tr>"
        for r in records
    )
    head = "".join(f"<th>{escape(label)}</th>" for _, label, _ in COLUMNS[:3])
    versions = (f"<table><tr><th>version</th><th>kind</th>{head}<th>data</th><th>created</th></tr>{rows}"
                "</table>")
    intro = f"Active: <b>{escape(active or 'none')}</b>. Figures are on each job's own validation digits."
    body = _replicas_section(replicas, active) + _panel("versions-title", "Versions", versions)
    return _page("/models", "Digits: models", "Models", intro, body)


def model_page(record: ModelRecord, active: str, corrected: VersionCorrections | None = None,
               corrections_error: str = "") -> str:
    """One version's page; ``corrected``: what people corrected of its answers (None: not read, and
    ``corrections_error`` says why)."""
    report, metrics = record.report, record.metrics
    candidates = report.get("candidates") or [{"name": record.kind, **metrics}]
    winner = report.get("winner", record.kind)
    head = "".join(f"<th>{escape(label)}</th>" for _, label, _ in COLUMNS)
    rows = "".join(
        f'<tr class="{"win" if c["name"] == winner else ""}"><td>{escape(c["name"])}'
        f'{" (winner)" if c["name"] == winner else ""}</td>'
        + ("".join(f"<td>{_cell(c, k, f)}</td>" for k, _, f in COLUMNS) if "error" not in c
           else f'<td colspan="{len(COLUMNS)}">failed: {escape(c["error"])}</td>')
        + "</tr>"
        for c in candidates
    )
    confusions = "".join(f"<li>{escape(s)}</li>" for s in metrics.get("confusions", []))
    split = report.get("split", {})
    state = "active" if record.version == active else "not active"
    version = escape(record.version)
    heading = f"{version}: {escape(record.kind)} ({state})"
    intro = (
        f"Trained {escape(record.created_at)} on <code>{escape(str(record.dataset.get('source')))}</code> "
        f"({escape(str(record.dataset.get('size')))} digits, sha256 "
        f"{escape(str(record.dataset.get('digest', ''))[:12])}): {escape(str(split.get('train', '?')))} to fit, "
        f"{escape(str(split.get('holdout', '?')))} holdout, {escape(str(split.get('validation', '?')))} validation"
        + (f" ({escape(str(split['validated_on']))})" if "validated_on" in split else "") + ". "
        f"Job <code>{escape(record.job_id)}</code>, code <code>{escape(record.code_version)}</code>."
        + _data_parts(report.get("dataset") or {})
    )
    candidates_table = (f"<p>Gate: {escape(str(report.get('gate', '')))}</p>"
                        f"<table><tr><th>candidate</th>{head}</tr>{rows}</table>")
    figures = (
        f'<ul>{confusions}</ul><div class="figs"><img src="/models/{version}/confusion.png" width="460" '
        f'height="400" alt="Confusion matrix of {version}"><img src="/models/{version}/f1.png" width="460" '
        f'height="400" alt="F1 by digit of {version}"></div>'
    )
    body = (_panel("candidates-title", "Candidates of this job", candidates_table)
            + _panel("validation-title", f"{version} on the validation digits", figures)
            + _panel("honest-title", "Honest answers", _honest(record))
            + _panel("corrected-title", "What people corrected", _corrected(record.version, corrected,
                                                                             corrections_error)))
    return _page(f"/models/{record.version}", f"Digits: {record.version}", heading, intro, body)


def _verdicts(record: ModelRecord) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """What the trainer saw calibrating the version's verdict and judging the validation digits with it; None for
    a version without a calibrated verdict (an ensemble, a recipe without the "not a digit" class, a version stored
    before verdicts existed)."""
    verdicts = record.metrics.get("verdicts")
    if not isinstance(verdicts, dict) or not isinstance(verdicts.get("calibration"), dict):
        return None
    validation = verdicts.get("validation")
    return verdicts["calibration"], validation if isinstance(validation, dict) else {}


def _dict(facts: dict[str, Any], key: str) -> dict[str, Any]:
    """``facts[key]`` if it is a dict (as the trainer writes it), else an empty one."""
    value = facts.get(key)
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _numbers(values: Any) -> list[float] | None:
    """A list of numbers as the record holds it, or None if it is anything else."""
    if not isinstance(values, list) or not values:
        return None
    numbers = [_number(v) for v in values]
    return None if any(n is None for n in numbers) else [n for n in numbers if n is not None]


def _share(value: Any, digits: int = 2) -> str:
    number = _number(value)
    return "-" if number is None else f"{number:.{digits}%}"


def _count(value: Any) -> str:
    number = _number(value)
    return "?" if number is None else f"{number:,.0f}"


def _family(name: str) -> str:
    return escape(name.replace("_", " "))


def _honest(record: ModelRecord) -> str:
    """The thresholds, the verdicts' shares on the validation and holdout digits, the error among DIGIT answers, the
    non-digits caught per family, and the two pictures; or that the version has no calibrated verdict."""
    version = escape(record.version)
    facts = _verdicts(record)
    if facts is None:
        return (f"<p>{version} has no calibrated verdict: it answers DIGIT, or SEVERAL when digit-sized marks stand "
                "side by side, and never UNSURE or NOT_A_DIGIT. (Ensembles, recipes without the \"not a digit\" "
                "class and versions trained before verdicts existed have none.)</p>")
    calibration, validation = facts
    thresholds = _dict(calibration, "thresholds")
    familiarity, margin = (_number(thresholds.get(name)) for name in ("familiarity", "margin"))
    shown = ["-" if value is None else f"{value:.3f}" for value in (familiarity, margin)]
    kept = (" The served model was refitted on every digit (these too) and keeps these thresholds; the figures are "
            "the split fit's." if record.fitted_on == "all" else "")
    intro = (f"<p>Thresholds: familiarity <b>{shown[0]}</b> (below it, NOT_A_DIGIT) and margin <b>{shown[1]}</b> "
             f"(below it, UNSURE), calibrated on {_count(calibration.get('digits'))} holdout digits and "
             f"{_count(calibration.get('non_digits_per_family'))} non-digits of each family, none of which "
             f"{version} was fitted on.{kept}</p>")
    on_validation = _dict(validation, "verdicts")
    on_holdout = _dict(calibration, "digits_verdicts")
    rows = "".join(f'<tr><th scope="row">{name} <small>({words})</small></th><td>{_share(on_validation.get(name))}'
                   f"</td><td>{_share(on_holdout.get(name))}</td></tr>" for name, words in VERDICTS)
    shares = (f'<table class="verdicts"><caption>How the digits were answered</caption><tr><th scope="col">verdict'
              f'</th><th scope="col">validation digits ({_count(validation.get("digits"))})</th>'
              f'<th scope="col">holdout digits ({_count(calibration.get("digits"))})</th></tr>{rows}</table>'
              f"<p>Wrong among the validation digits answered DIGIT: <b>{_share(validation.get('error_among_digit'))}"
              f"</b> (among all of them: {_share(validation.get('error'))}); among the holdout digits answered "
              f"DIGIT: {_share(calibration.get('error_among_digit'))}.</p>")
    caught = _dict(calibration, "non_digits_caught")
    families = "".join(f'<tr><th scope="row">{_family(str(family))}</th><td>{_share(share, 1)}</td></tr>'
                       for family, share in caught.items())
    non_digits = (f'<table class="caught"><caption>Non-digits answered NOT_A_DIGIT or SEVERAL, not passed off as '
                  f'a digit</caption><tr><th scope="col">family</th><th scope="col">caught</th></tr>{families}'
                  "</table>" if families else "")
    figures = (f'<div class="figs"><img src="/models/{version}/error-reject.png" width="460" height="400" '
               f'alt="Error among the digits kept against the share rejected, for {version}">'
               f'<img src="/models/{version}/familiarity.png" width="460" height="400" '
               f'alt="Familiarity scores of digits and non-digits, with the threshold, for {version}"></div>')
    return intro + shares + non_digits + figures


def _corrected(version: str, corrected: VersionCorrections | None, error: str) -> str:
    """A confusion table of the corrections people sent about this version's answers: the digit it predicted
    (rows) by the digit they said it was, or "not a digit" (columns)."""
    shown = escape(version)
    if corrected is None:
        return f"<p>The corrections of {shown} could not be read ({escape(error or 'no store')}).</p>"
    statuses = " and ".join(LIVE_STATUSES)
    scope = ("" if corrected.complete else
             f" (of the newest {corrected.read:,} {statuses} corrections of every version: there are more)")
    if not corrected.total:
        return f"<p>No {statuses} corrections of {shown}'s answers{scope}.</p>"
    counted = ", ".join(f"{corrected.by_status[s]:,} {s}" for s in LIVE_STATUSES)
    labels = [*(str(d) for d in range(N_CLASSES)), NOT_A_DIGIT]
    head = "".join(f'<th scope="col">{escape("not a digit" if label == NOT_A_DIGIT else label)}</th>'
                   for label in labels)
    rows = []
    for predicted in range(N_CLASSES):
        cells = [corrected.counts.get((predicted, label), 0) for label in labels]
        if not any(cells):
            continue
        rows.append(f'<tr><th scope="row">{predicted}</th>'
                    + "".join(f"<td>{count or ''}</td>" for count in cells) + f"<td>{sum(cells):,}</td></tr>")
    others = sum(n for (predicted, _), n in corrected.counts.items() if not 0 <= predicted < N_CLASSES)
    note = f" {others:,} more name no digit it predicted." if others else ""
    return (f"<p>{corrected.total:,} corrections of {shown}'s answers, {statuses} ({counted}); rejected ones are "
            f"left out{scope}. Unlike the validation figures beside them, these are answers people sent back: "
            f"they say where {shown} goes wrong in use, not how often.{note}</p>"
            f'<table class="corrected"><caption>Predicted digit (rows) by the digit people said it was '
            f'(columns)</caption><tr><th scope="col">predicted</th>{head}<th scope="col">total</th></tr>'
            f'{"".join(rows)}</table>')


def _data_parts(data: dict[str, Any]) -> str:
    """A combination's parts and the files a folder skipped (the job's report names them), if any."""
    parts = data.get("parts") or []
    if len(parts) < 2 and not data.get("skipped"):
        return ""
    listed = ", ".join(f"<code>{escape(str(p.get('source')))}</code> ({escape(str(p.get('size')))} digits"
                       + (f": {escape(str(p['fit']))} fitted on, {escape(str(p['validation']))} kept to validate on"
                          if "fit" in p and "validation" in p else "")
                       + (f", {escape(str(p['skipped']))} {'file' if p['skipped'] == 1 else 'files'} skipped"
                          if p.get("skipped") else "") + ")"
                       for p in parts)
    skipped = "".join(f"<li><code>{escape(str(f.get('path')))}</code>: {escape(str(f.get('reason')))}</li>"
                      for p in parts for f in p.get("skipped_files", []))
    return f" Data: {listed}." + (f" Files skipped:<ul>{skipped}</ul>" if skipped else "")


def confusion_png(record: ModelRecord) -> bytes:
    import numpy as np
    from matplotlib.figure import Figure

    matrix = np.array(record.metrics.get("confusion_matrix") or np.zeros((N_CLASSES, N_CLASSES)))
    figure = Figure(figsize=(4.6, 4.0), dpi=100)
    axes = figure.subplots()
    image = axes.imshow(np.log1p(matrix), cmap="Blues")
    for (true, read), count in np.ndenumerate(matrix):
        if count:
            color = "white" if count > matrix.max() / 2 else "black"
            axes.text(read, true, str(count), ha="center", va="center", fontsize=6.5, color=color)
    axes.set(xticks=range(N_CLASSES), yticks=range(N_CLASSES), xlabel="read as", ylabel="true digit",
             title=f"{record.version}: confusion matrix")
    figure.colorbar(image, ax=axes, label="log(1 + count)")
    figure.tight_layout()
    return _png(figure)


def f1_png(record: ModelRecord) -> bytes:
    from matplotlib.figure import Figure

    scores = record.metrics.get("f1_per_class") or [0.0] * 10
    figure = Figure(figsize=(4.6, 4.0), dpi=100)
    axes = figure.subplots()
    bars = axes.bar(range(N_CLASSES), scores, color="#4a7fb5")
    axes.bar_label(bars, labels=[f"{s:.3f}" for s in scores], fontsize=7, rotation=90, padding=2)
    axes.set(xticks=range(N_CLASSES), xlabel="digit", ylabel="F1", ylim=(min(scores) - 0.05, 1.0),
             title=f"{record.version}: F1 by digit")
    figure.tight_layout()
    return _png(figure)


def error_reject_png(record: ModelRecord) -> bytes:
    """The error among the holdout digits kept as the smallest margins are rejected, and where the version's
    verdict stands (its share not answered DIGIT, its error among those that were)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.6, 4.0), dpi=100)
    axes = figure.subplots()
    facts = _verdicts(record)
    curve = facts[0].get("error_reject_curve") if facts else None
    points = [(_number(p.get("rejected")), _number(p.get("error"))) for p in curve if isinstance(p, dict)] \
        if isinstance(curve, list) else []
    drawn = [(100 * r, 100 * e) for r, e in points if r is not None and e is not None]
    if facts is None or not drawn:
        return _nothing_to_draw(figure, axes, f"{record.version} has no calibrated verdict")
    calibration = facts[0]
    axes.plot(*zip(*drawn, strict=True), marker="o", color="#4a7fb5", clip_on=False,  # a point at 0 stays whole
              label="the smallest margins rejected")
    answered = _dict(calibration, "digits_verdicts")
    digit, error = _number(answered.get("DIGIT")), _number(calibration.get("error_among_digit"))
    if digit is not None and error is not None:
        axes.plot([100 * (1 - digit)], [100 * error], marker="*", markersize=14, linestyle="none", color="#c0392b",
                  clip_on=False, label=f"its verdict: {1 - digit:.2%} not DIGIT")
    axes.set(xlabel="holdout digits rejected (%)", ylabel="error among the digits kept (%)",
             title=f"{record.version}: error against reject")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return _png(figure)


def familiarity_png(record: ModelRecord) -> bytes:
    """How the familiarity scores of the holdout digits and of each family of non-digits fall, in shares per bin,
    with the version's threshold (below it, NOT_A_DIGIT)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.6, 4.0), dpi=100)
    axes = figure.subplots()
    facts = _verdicts(record)
    histogram = facts[0].get("familiarity_histogram") if facts else None
    edges = _numbers(histogram.get("edges")) if isinstance(histogram, dict) else None
    if facts is None or not isinstance(histogram, dict) or edges is None or len(edges) < 2:
        return _nothing_to_draw(figure, axes, f"{record.version} has no calibrated verdict")
    groups = {name: shares for name, values in histogram.items()
              if name != "edges" and (shares := _numbers(values)) is not None and len(shares) == len(edges) - 1}
    for name, shares in sorted(groups.items(), key=lambda group: group[0] != "digits"):  # the digits first
        if name == "digits":
            axes.stairs(shares, edges, fill=True, alpha=0.35, color="#4a7fb5", label="digits")
        else:
            axes.stairs(shares, edges, linewidth=1.3, label=str(name).replace("_", " "))
    thresholds = _dict(facts[0], "thresholds")
    threshold = _number(thresholds.get("familiarity"))
    if threshold is not None:
        axes.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    axes.set(xlabel="familiarity (below the threshold: NOT_A_DIGIT)", ylabel="share of each group",
             title=f"{record.version}: familiarity scores")
    axes.legend(fontsize=7)
    figure.tight_layout()
    return _png(figure)


def _nothing_to_draw(figure: Any, axes: Any, message: str) -> bytes:
    axes.axis("off")
    axes.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return _png(figure)


def _png(figure: Any) -> bytes:
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
