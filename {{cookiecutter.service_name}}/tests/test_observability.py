"""The shipped Grafana dashboard and Prometheus alert rules: valid, and about metrics that exist.

The metric names in every query are compared with the real /metrics output of the admin server.
The alert rules are checked and unit-tested (observability/alerts.test.yaml) by `promtool`, which
ships with Prometheus: without it on PATH those tests skip locally and fail in CI (CI=true).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest
import yaml

from {{ cookiecutter.package_name }}.platform.admin_server import AdminServer
from {{ cookiecutter.package_name }}.platform.settings import Settings

from .metrics_support import SUFFIXES, Samples
from .support import require_tool

OBSERVABILITY = Path(__file__).resolve().parent.parent / "observability"
PROMQL_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan"})


def dashboard_queries() -> list[str]:
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text("utf-8"))
    assert dashboard["title"] == "{{ cookiecutter.service_name }}"
    queries = []
    for panel in dashboard["panels"]:
        assert panel["title"]
        assert panel["gridPos"]["w"] > 0
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        queries += [target["expr"] for target in panel["targets"]]
    return queries


def alert_queries() -> list[str]:
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text("utf-8"))
    [group] = rules["groups"]
    queries = []
    for rule in group["rules"]:
        assert re.fullmatch(r"[A-Z][A-Za-z]+", rule["alert"]), rule
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        queries.append(rule["expr"])
    assert "ShutdownOverBudget" in [rule["alert"] for rule in group["rules"]]
    return queries


def metric_names(query: str) -> set[str]:
    """The metrics a PromQL query reads: words that are not functions, labels or keywords."""
    query = re.sub(r'"(?:[^"\\]|\\.)*"', "", query)
    query = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", query)
    query = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", query)
    words = re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()", query)
    return {word for word in words if word not in PROMQL_KEYWORDS}


def test_metric_names_are_found_in_queries() -> None:
    query = 'sum by (le, route) (rate(http_x_bucket{status=~"5.."}[5m])) > 0 and on(a) y_total'
    assert metric_names(query) == {"http_x_bucket", "y_total"}


@pytest.fixture
async def served_metrics() -> Samples:
    admin = AdminServer(Settings(admin_host="127.0.0.1", admin_port=0))
    await admin.start()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{admin.port}/metrics") as response,
        ):
            return Samples(await response.text())
    finally:
        await admin.close()


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
async def test_every_metric_used_is_served(source: str, served_metrics: Samples) -> None:
    queries = dashboard_queries() if source == "dashboard" else alert_queries()
    used = set().union(*(metric_names(query) for query in queries))
    assert len(used) >= 3, used
    assert used <= served_metrics.names(), sorted(used - served_metrics.names())


async def test_every_service_metric_is_shown_or_alerted_on(served_metrics: Samples) -> None:
    """Metrics nobody looks at are noise: each of the service's own is used somewhere."""
    queries = [*dashboard_queries(), *alert_queries()]
    used: set[str] = set().union(*(metric_names(query) for query in queries))
    runtime = ("python_", "process_")  # the client library's own
    ours = {name for name in served_metrics.families if not name.startswith(runtime)}
    shown = {name for name in ours if {name + suffix for suffix in SUFFIXES} & used}
    assert shown == ours, sorted(ours - shown)


# -- promtool ------------------------------------------------------------------------------------


def promtool(*args: str | Path, cwd: Path = OBSERVABILITY) -> subprocess.CompletedProcess[str]:
    found = require_tool(
        "promtool",
        "to check the alert rules (it ships with Prometheus: the release archives, or "
        "/usr/bin/promtool of Debian's prometheus package)",
    )
    return subprocess.run(
        [found, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def alert_names(rules: Path) -> set[str]:
    [group] = yaml.safe_load(rules.read_text("utf-8"))["groups"]
    return {rule["alert"] for rule in group["rules"]}


def test_alert_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", "alerts.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    rules = len(alert_names(OBSERVABILITY / "alerts.yaml"))
    assert f"SUCCESS: {rules} rules found" in result.stdout, result.stdout


def test_alert_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", "alerts.test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout, result.stdout


def seconds(duration: str) -> int:
    """A Prometheus duration as promtool writes it ("90s", "1h5m") in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert duration, "empty duration"
    assert parts is not None, duration
    hours, minutes, secs = (int(part or 0) for part in parts.groups())
    return hours * 3600 + minutes * 60 + secs


@pytest.mark.parametrize("mutation", ["always", "never"])
def test_unit_tests_see_every_alert_fire_and_stay_quiet(mutation: str, tmp_path: Path) -> None:
    """Rules that always fire fail a quiet case of each alert; rules that never fire, a firing one.

    So the unit tests cannot pass whatever the rules say: each alert is shown both ways.
    """
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text("utf-8"))
    for rule in rules["groups"][0]["rules"]:
        rule["expr"] = "vector(1)" if mutation == "always" else "vector(1) < 0"
        rule.pop("for", None)
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(rules), "utf-8")
    shutil.copy(OBSERVABILITY / "alerts.test.yaml", tmp_path)
    result = promtool("test", "rules", "alerts.test.yaml", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    tests = yaml.safe_load((OBSERVABILITY / "alerts.test.yaml").read_text("utf-8"))["tests"]
    cases = {
        (case["alertname"], seconds(case["eval_time"]), bool(case["exp_alerts"]))
        for group in tests
        for case in group["alert_rule_test"]
    }
    expected = mutation == "never"  # the cases this mutation must fail: firing or quiet ones
    failed = {
        name
        for name, time in re.findall(r"alertname: (\w+), time: (\w+),", output)
        if (name, seconds(time), expected) in cases
        and (name, seconds(time), not expected) not in cases
    }
    assert failed == alert_names(OBSERVABILITY / "alerts.yaml"), output
