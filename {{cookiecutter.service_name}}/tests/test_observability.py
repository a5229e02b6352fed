"""The shipped Grafana dashboard and Prometheus alert rules: valid, and about metrics that exist.

The metric names in every query are compared with the real /metrics output of the admin server.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import pytest
import yaml

from {{ cookiecutter.package_name }}.admin_server import AdminServer
from {{ cookiecutter.package_name }}.settings import Settings

from .metrics_support import SUFFIXES, Samples

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
