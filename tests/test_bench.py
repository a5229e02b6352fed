"""The generated benchmarks run end to end (`python -m bench --quick`, one figure).

A smoke test of the machinery only: it asserts that a table is printed and written, never a
timing target (those are the benchmark's business, on a quiet machine).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Projects
from tests.support import check_ok, run

pytestmark = pytest.mark.slow


class TestBenchSmoke:
    def test_quick_lifecycle_figure_writes_a_table(
        self, projects: Projects, tmp_path: Path
    ) -> None:
        installed = projects.get("default")
        output = tmp_path / "benchmarks.md"
        args = ["--quick", "--only", "lifecycle", "--output", str(output)]
        result = run([installed.bin("python"), "-m", "bench", *args], cwd=installed.project)
        check_ok(result, "python -m bench --quick --only lifecycle")
        report = output.read_text(encoding="utf-8")
        assert "| figure | baseline | service | ratio | target | verdict |" in report
        for figure in ("spawn → /readyz 200", "SIGTERM → exit, idle", "idle RSS after start"):
            assert figure in report, report
            assert figure in result.stdout
        assert "skipped" not in report, report
