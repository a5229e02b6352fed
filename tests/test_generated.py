"""Baked projects installed in their own virtualenvs: their checks pass and the service runs.

Slow (virtualenvs, the generated test suite, real processes): marked `slow`. Run with
`-n 2 --dist loadscope`: a class is scheduled on one worker, so each virtualenv is built once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tests.conftest import VARIANTS, Projects
from tests.support import (
    SUPPORTED_PYTHONS,
    Installed,
    check_ok,
    clean_env,
    free_port,
    run,
    tail,
)

pytestmark = pytest.mark.slow

CHECKS = {
    "ruff-check": ["ruff", "check", "."],
    "ruff-format": ["ruff", "format", "--check", "."],
    "mypy": ["mypy"],
    "pytest": ["pytest", "-q", "-p", "no:cacheprovider"],
}


class ProjectChecks:
    """Each concrete Test* class below is one (answers, Python): one virtualenv, one worker."""

    variant: ClassVar[str]
    python_version: ClassVar[str | None] = None  # None: the variant's own python_version

    @pytest.mark.parametrize("check", list(CHECKS))
    def test_passes_its_own_checks(self, projects: Projects, check: str) -> None:
        installed = projects.get(self.variant)
        tool, *args = CHECKS[check]
        if check == "pytest":
            args += VARIANTS[self.variant].pytest_args
        result = run([installed.bin(tool), *args], cwd=installed.project, timeout=900)
        where = f"the {self.variant!r} project (python {installed.python_version})"
        check_ok(result, f"{check} in {where}")

    def test_opentelemetry_is_installed_and_imported_only_with_tracing(
        self, projects: Projects
    ) -> None:
        installed = projects.get(self.variant)
        traced = installed.answers.get("use_tracing", "no") == "yes"
        probe = (
            "import importlib.metadata as m, json, sys\n"
            f"import {installed.package}.cli\n"
            "dists = [d.metadata['Name'] for d in m.distributions()]\n"
            "print(json.dumps({'installed': sorted(n for n in dists if 'opentelemetry' in n),\n"
            "  'imported': sorted(n for n in sys.modules if n.startswith('opentelemetry'))}))"
        )
        result = run([installed.bin("python"), "-c", probe], cwd=installed.project, timeout=120)
        check_ok(result, "the import probe")
        found = json.loads(result.stdout.strip().splitlines()[-1])
        assert bool(found["installed"]) == traced, found
        assert bool(found["imported"]) == traced, found


class ServiceRuns:
    variant: ClassVar[str] = "default"
    python_version: ClassVar[str | None] = None

    def test_serves_and_stops_on_sigterm(self, projects: Projects, tmp_path: Path) -> None:
        installed = projects.get(self.variant, self.python_version)
        serve_and_stop(installed, tmp_path)


class TestDefaultProject(ProjectChecks, ServiceRuns):
    variant = "default"


class TestMinimalProject(ProjectChecks, ServiceRuns):
    variant = "minimal"


class TestBillingProject(ProjectChecks, ServiceRuns):
    variant = "billing"


class TestTracedProject(ProjectChecks):
    variant = "traced"


def test_every_supported_python_runs_the_service() -> None:
    """Each variant's own suite starts its service on the variant's Python."""
    ran = {
        VARIANTS[cls.variant].python_version
        for cls in ServiceRuns.__subclasses__()
        if cls.python_version is None
    }
    assert ran == set(SUPPORTED_PYTHONS)
    checked = {cls.variant for cls in ProjectChecks.__subclasses__()}
    assert checked == set(VARIANTS)


def http_get(url: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"Connection": "close"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, None


def serve_and_stop(installed: Installed, tmp_path: Path) -> None:
    """Start `python -m PACKAGE`, wait for /readyz, echo once, SIGTERM: exit 0 within 10 s."""
    http_port, grpc_port = free_port(), free_port()
    while grpc_port == http_port:
        grpc_port = free_port()
    env = clean_env(
        HTTP_HOST="127.0.0.1",
        GRPC_HOST="127.0.0.1",
        HTTP_PORT=str(http_port),
        GRPC_PORT=str(grpc_port),
        ADMIN_HOST="127.0.0.1",
        ADMIN_PORT="0",
        DRAIN_DELAY="0.2",
        SHUTDOWN_TIMEOUT="5",
    )
    url = f"http://127.0.0.1:{http_port}"
    log_path = tmp_path / "service.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(installed.bin("python")), "-m", installed.package],
            cwd=tmp_path,  # not the project: no .env file there is read
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def output() -> str:
            return tail(log_path.read_text(encoding="utf-8", errors="replace"))

        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:
            assert process.poll() is None, f"exited {process.returncode} early:\n{output()}"
            try:
                status, _ = http_get(f"{url}/readyz")
            except OSError:
                status = None
            if status == 200:
                break
            time.sleep(0.1)
        assert status == 200, f"/readyz not 200 within 30 s (last {status}):\n{output()}"

        assert http_get(f"{url}/v1/echo?msg=hi") == (200, {"msg": "hi"}), output()

        os.kill(process.pid, signal.SIGTERM)
        try:
            code = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 10 s after SIGTERM:\n{output()}")
        assert code == 0, f"exit code {code} after SIGTERM:\n{output()}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
