"""The generated benchmarks run end to end (`make bench ARGS="--quick ..."`, one figure).

A smoke test of the machinery only: it asserts that a dated section with a well-formed table is
added on top of the report, earlier runs and the findings kept, never a timing target (those are
the benchmark's business, on a quiet machine).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import Projects
from tests.support import check_ok, run

pytestmark = pytest.mark.slow

HEADER = "| figure | baseline | service | ratio | client CPU | target | verdict |"
MARKER = "<!-- end of generated results: the text below is kept by `make bench` -->"
EARLIER = "# Benchmarks\n\n## 2000-01-01 00:00 UTC\n\nan earlier run\n"
FINDINGS = "## Findings\n\nwritten by hand\n"
VERDICTS = ("met", "**missed**", "\u2013")


class TestBenchSmoke:
    def test_quick_lifecycle_figure_adds_a_dated_table(
        self, projects: Projects, tmp_path: Path
    ) -> None:
        installed = projects.get("default")
        output = tmp_path / "benchmarks.md"
        output.write_text(f"{EARLIER}\n{MARKER}\n\n{FINDINGS}", encoding="utf-8")
        args = f"--quick --only lifecycle --output {output}"
        command = ["make", "--no-print-directory", "bench", f"ARGS={args}"]
        result = run(command, cwd=installed.project)
        check_ok(result, f"make bench ARGS='{args}'")
        report = output.read_text(encoding="utf-8")
        # The servers ran as the image runs them: the runtime dependencies, no development tools.
        assert "servers from `.venv-bench` (runtime dependencies only" in report, report
        runtime = installed.project / ".venv-bench" / "bin" / "python"
        for module, present in ((installed.package, True), ("pytest", False), ("rich", False)):
            probe = run([runtime, "-c", f"import {module}"])
            assert (probe.returncode == 0) is present, (module, probe.stderr)

        results, marker, kept = report.partition(MARKER)
        assert marker, report
        assert kept.strip() == FINDINGS.strip(), report
        new, _, earlier = results.partition("\n## 2000-01-01 00:00 UTC\n")
        assert "an earlier run" in earlier, report
        assert re.match(r"# Benchmarks\n\n## \d{4}-\d\d-\d\d \d\d:\d\d UTC \(`--quick`", new), new
        assert re.search(r"^Machine: .+, \d+ cores, .+ load average", new, re.MULTILINE), new

        table = [line for line in new.splitlines() if line.startswith("|")]
        assert table[:2] == [HEADER, "|---|---|---|---|---|---|---|"], new
        rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]
        assert all(len(row) == 7 and row[6] in VERDICTS for row in rows), table
        figures = [row[0] for row in rows]
        for figure in ("spawn → /readyz 200", "SIGTERM → exit, idle", "idle RSS after start"):
            assert any(name.startswith(figure) for name in figures), figures
            assert figure in result.stdout
