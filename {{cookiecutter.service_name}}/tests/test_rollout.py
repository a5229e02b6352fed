"""Zero downtime across rolling restarts, and a check that can see downtime when there is some.

Runs `scripts/rollout_check.py` (what `make rollout-check` runs, shorter): HAProxy with an active
/readyz check and no retries in front of two replicas, each restarted under steady load (HTTP
keep-alive{% if cookiecutter.use_grpc == "yes" %}, gRPC{% endif %}). With a drain delay no request fails; with DRAIN_DELAY=0 some do.
Needs `haproxy` on PATH: skipped locally without it, failed in CI (CI=true).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .service import drop_isolated, isolated_names
from .support import require_tool

PROJECT = Path(__file__).resolve().parent.parent


def rollout_check(tmp_path: Path, *args: str) -> dict[str, Any]:
    require_tool("haproxy", "(Debian/Ubuntu: apt-get install haproxy)")
    report = tmp_path / "report.json"
    env = {**os.environ, **isolated_names()}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "scripts.rollout_check", "--json", str(report), *args],
            cwd=PROJECT,
            env=env,
            capture_output=True,
            text=True,
            timeout=100,
            check=False,
        )
    finally:
        drop_isolated(env)
    output = result.stdout + result.stderr
    assert report.exists(), output
    data: dict[str, Any] = json.loads(report.read_text(encoding="utf-8"))
    data["output"] = output
    data["exit_code"] = result.returncode
    return data


@pytest.mark.timeout(120)
def test_rolling_restarts_under_load_fail_no_request(tmp_path: Path) -> None:
    # Two rounds: each of the two replicas restarted twice, four restarts in all.
    report = rollout_check(tmp_path, "--rounds", "2", "--drain-delay", "1.5", "--settle", "0.5")
    assert report["exit_code"] == 0, report["output"]
    assert report["total_failures"] == 0, report["output"]
    assert [restart["exit_code"] for restart in report["restarts"]] == [0] * 4, report["output"]
    assert report["requests"]["http"] > 100, report["output"]
{%- if cookiecutter.use_grpc == "yes" %}
    assert report["requests"]["grpc"] > 100, report["output"]
{%- endif %}
    for restart in report["restarts"]:
        # Out of the balancer well inside the drain delay: that is what makes it work.
        assert restart["out_of_balancer_s"] < 1.5, report["output"]
    # Streams: every WebSocket on a restarted replica got its close frame and reconnected.
    streams = report["streams"]
    assert streams["ws_close_frames"] >= 1, report["output"]
    assert streams.get("ws_abnormal_closes", 0) == 0, report["output"]
{%- if cookiecutter.use_postgres == "yes" %}
    # The SSE subscriber was on a restarted replica at least once, resumed by Last-Event-ID, and
    # got every item created across the restarts exactly once, in the stream's order.
    assert streams["sse_final_events"] >= 1, report["output"]
    assert streams["sse_connections"] == streams["sse_final_events"] + 1, report["output"]
    assert streams["items_created"] > 20, report["output"]
    assert streams["sse_events"] == streams["items_created"], report["output"]
    gaps, duplicates, out_of_order = (
        streams["sse_gaps"],
        streams["sse_duplicates"],
        streams["sse_out_of_order"],
    )
    assert (gaps, duplicates, out_of_order) == (0, 0, 0), report["output"]
{%- endif %}


@pytest.mark.timeout(120)
def test_without_drain_delay_the_check_sees_failures(tmp_path: Path) -> None:
    report = rollout_check(
        tmp_path, "--rounds", "1", "--drain-delay", "0", "--settle", "0.5", "--expect-failures"
    )
    assert report["exit_code"] == 0, report["output"]
    assert report["total_failures"] > 0, report["output"]
