"""deploy/monitoring: Prometheus accepts the configuration and the rules, the rules' own tests pass, and the
dashboard and the alerts ask only for metrics that Digits exports.

promtool comes from Debian's `prometheus` package (.ci/run installs it).
"""

from __future__ import annotations

import importlib
import itertools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

from digits.modelling.verdicts import Verdict
from digits.stack import compose
from digits.stack.local import local_env

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "digits.json"
# Series Prometheus itself writes for every target.
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added",
                 "scrape_samples_post_metric_relabeling"}
# Series names of each metric type, from the family name.
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum", "_created"), "info": ("_info",), "unknown": ("",)}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
                "group_right", "inf", "nan"}


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: apt-get install prometheus (Debian's package; .ci/run installs it)"
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=120, check=False)


def exported_metric_names() -> set[str]:
    """Every series name Digits' processes export: the modules that define prometheus_client metrics are
    imported (which registers them), then the default registry is read."""
    for path in [*REPO.glob("digits/**/*.py"), *REPO.glob("services/**/*.py")]:
        if re.search(r"^(from prometheus_client import|import prometheus_client)", path.read_text(), re.MULTILINE):
            importlib.import_module(".".join(path.relative_to(REPO).with_suffix("").parts))
    return {family.name + suffix for family in REGISTRY.collect() for suffix in SUFFIXES[family.type]}


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects (dashboard variables allowed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\$\w+", " ", text)  # label matchers, ranges, $variables
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text):
        followed_by = text[match.end():].lstrip()[:1]
        if followed_by != "(" and match.group() not in PROMQL_WORDS:
            names.add(match.group())
    return names


def dashboard_queries() -> Iterator[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            assert selector, f"${variable['name']}: {query}"
            yield selector[1]


def alert_expressions() -> Iterator[tuple[str, str]]:
    for group in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]


def test_the_metric_name_reader_sees_names_not_functions_labels_or_keywords() -> None:
    expression = ('histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{job=~"x", le!="1e3"}[5m]))) '
                  '/ on (instance) group_left (version) b_info offset 1h > bool 2 unless $var or c:d')
    assert metric_names(expression) == {"a_bucket", "b_info", "c:d"}


def test_prometheus_accepts_the_compose_configuration_and_its_rules() -> None:
    result = promtool("check", "config", MONITORING / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alerts.yml" in result.stdout


def test_prometheus_accepts_the_kubernetes_configuration(tmp_path: Path) -> None:
    path = MONITORING / "prometheus-kubernetes.yml"
    result = promtool("check", "config", path)
    if "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        # Debian's Prometheus is built without Kubernetes discovery: check the rest of the file (relabelling,
        # rules) with the discovery replaced by a static target.
        config = yaml.safe_load(path.read_text())
        for job in config["scrape_configs"]:
            assert [sd["role"] for sd in job.pop("kubernetes_sd_configs")] == ["pod"]
            job["static_configs"] = [{"targets": ["pod:8080"]}]
        (tmp_path / path.name).write_text(yaml.safe_dump(config))
        shutil.copy(MONITORING / "alerts.yml", tmp_path / "alerts.yml")
        result = promtool("check", "config", tmp_path / path.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_rules_are_valid_and_pass_their_tests() -> None:
    checked = promtool("check", "rules", MONITORING / "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", MONITORING / "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    tests = yaml.safe_load((MONITORING / "alerts.test.yml").read_text())["tests"]
    covered = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])
               if case.get("exp_alerts")}
    assert {name for name, _ in alert_expressions()} <= covered, "every alert has a test in which it fires"
    assert {"DigitsNoReplicaReady", "DigitsNoInferenceTargetUp", "DigitsHighErrorRatio", "DigitsHighPredictLatency",
            "DigitsShedding", "DigitsRetrainJobFailed", "DigitsModelRefused", "DigitsCorrectionRateHigh",
            "DigitsNotADigitShareJumped"} <= covered


def test_the_dashboard_queries_parse(tmp_path: Path) -> None:
    """Each query becomes a recording rule (variables filled in) for promtool to parse."""
    values = {"$__rate_interval": "5m", "$instance": ".*", "$version": ".*"}
    rules = []
    for number, query in enumerate(dashboard_queries()):
        for variable, value in values.items():
            query = query.replace(variable, value)
        assert "$" not in query, query
        rules.append({"record": f"dashboard:query_{number}", "expr": query})
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = promtool("check", "rules", tmp_path / "dashboard.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_queries_name_only_metrics_that_digits_exports(source: str) -> None:
    exported = exported_metric_names() | SCRAPE_SERIES
    assert {"grpc_server_started_total", "grpc_server_handled_total", "grpc_server_handling_seconds_bucket",
            "digits_http_request_duration_seconds_bucket", "digits_model_info", "digits_gateway_shed_total",
            "digits_training_jobs_failed", "digits_verdicts_total"} <= exported
    queries = list(dashboard_queries()) if source == "dashboard" else [e for _, e in alert_expressions()]
    used = {name: query for query in queries for name in metric_names(query)}
    assert used
    unknown = {name: query for name, query in used.items() if name not in exported}
    assert not unknown, f"not exported by Digits: {unknown}"


def test_the_dashboard_shows_the_golden_signals_per_service_version_and_replica() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Overview", "Rate", "Errors", "Latency", "Saturation"]
    queries = " ".join(dashboard_queries())
    for grouping in ("grpc_service", "version", "instance"):
        assert re.search(rf"by \([^)]*\b{grouping}\b", queries), grouping
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "instance", "version"}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_no_two_panels_overlap_and_every_panel_fits_the_grid() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        place = panel["gridPos"]
        assert place["x"] >= 0 and place["x"] + place["w"] <= 24, panel["title"]
        for cell in itertools.product(range(place["x"], place["x"] + place["w"]),
                                      range(place["y"], place["y"] + place["h"])):
            assert cell not in taken, f"{panel['title']!r} overlaps {taken[cell]!r} at {cell}"
            taken[cell] = panel["title"]


def test_the_verdicts_the_queries_name_are_the_ones_inference_answers() -> None:
    """A verdict renamed in the code would leave the alert, the panel and its colours matching nothing."""
    answered = {verdict.value for verdict in Verdict}
    dashboard = json.loads(DASHBOARD.read_text())
    panel = next(p for p in dashboard["panels"] if p["title"] == "Verdicts by version")
    (query,) = (target["expr"] for target in panel["targets"])
    assert "digits_verdicts_total" in metric_names(query)
    assert "sum by (version, verdict)" in query and panel["fieldConfig"]["defaults"]["unit"] == "percentunit"
    coloured = {re.sub(r"^\^(\w+) \.\*$", r"\1", o["matcher"]["options"]) for o in panel["fieldConfig"]["overrides"]}
    assert coloured == answered
    named = set(re.findall(r'verdict="(\w+)"', " ".join([*dashboard_queries(), *(e for _, e in alert_expressions())])))
    assert named and named <= answered
    assert "NOT_A_DIGIT" in dict(alert_expressions())["DigitsNotADigitShareJumped"]


def test_the_monitoring_profile_runs_pinned_images_on_the_shipped_files() -> None:
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    monitoring = {name: body for name, body in services.items() if "monitoring" in body.get("profiles", [])}
    assert set(monitoring) == {"prometheus", "grafana"}
    for name, body in monitoring.items():
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", body["image"]), f"{name}: pin a version, not {body['image']}"
        for volume in body["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name}: {source}"
    assert not set(monitoring) & set(compose.load(env=local_env({}))), "local mode runs no profile-only service"
