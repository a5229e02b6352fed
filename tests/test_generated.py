"""Baked projects installed in their own virtualenvs: their checks pass and the service runs.

Slow (virtualenvs, the generated test suite, real processes): marked `slow`. Run with
`-n 3 --dist loadscope`: a class is scheduled on one worker, so each virtualenv is built once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
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
    make,
    run,
    tail,
)

pytestmark = pytest.mark.slow

MAKE_TEST_TIMEOUT = 900


class ProjectChecks:
    """Each concrete Test* class below is one answer set: one virtualenv, one worker."""

    variant: ClassVar[str]

    # The run's own 900 s bound, not pytest-timeout's 600 s default (a busy machine took 600+ s
    # for the default project's whole suite).
    @pytest.mark.timeout(MAKE_TEST_TIMEOUT + 60)
    def test_make_test_passes(self, projects: Projects) -> None:
        """The generated README's `make test`: uv.lock check, ruff, mypy --strict, pytest."""
        installed = projects.get(self.variant)
        args = VARIANTS[self.variant].pytest_args
        make(installed.project, "test", timeout=MAKE_TEST_TIMEOUT, PYTEST_ARGS=args)

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

    def test_make_run_serves_and_stops_on_sigterm(self, projects: Projects, tmp_path: Path) -> None:
        serve_and_stop(projects.get(self.variant), tmp_path)


class TestDefaultProject(ProjectChecks, ServiceRuns):
    variant = "default"

    def test_pre_commit_hooks_pass_offline(self, projects: Projects, tmp_path: Path) -> None:
        """The bake's .pre-commit-config.yaml runs the locked tools of .venv, without network."""
        project = projects.get(self.variant).project
        if not (project / ".git").exists():
            check_ok(run(["git", "init", "-q"], cwd=project), "git init")
        check_ok(run(["git", "add", "-A"], cwd=project), "git add")
        env = clean_env(PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"), UV_OFFLINE="1")
        hooks = run(
            [project / ".venv/bin/pre-commit", "run", "--all-files", "--show-diff-on-failure"],
            cwd=project,
            env=env,
            timeout=600,
        )
        check_ok(hooks, "pre-commit run --all-files")
        ran = {line.split("...")[0].strip() for line in hooks.stdout.splitlines() if "..." in line}
        assert {"ruff check", "mypy --strict", "hadolint", "dependabot schema"} <= ran, ran
        assert "Skipped" not in "".join(
            line for line in hooks.stdout.splitlines() if line.startswith(("ruff", "mypy"))
        ), hooks.stdout


class TestMinimalProject(ProjectChecks, ServiceRuns):
    variant = "minimal"


class TestBillingProject(ProjectChecks, ServiceRuns):
    variant = "billing"


class TestTracedProject(ProjectChecks):
    variant = "traced"


def test_every_supported_python_runs_the_service() -> None:
    """`make install`, `make test` and `make run` run on every supported Python."""
    ran = {VARIANTS[cls.variant].python_version for cls in ServiceRuns.__subclasses__()}
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


def child_of(pid: int) -> int | None:
    """The process that `pid` started, if exactly one (make's recipe: the service itself)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found[0] if len(found) == 1 else None


def serve_and_stop(installed: Installed, tmp_path: Path) -> None:
    """`make run` as the README says (on its own ports, schema and streams), wait for /readyz,
    echo once, SIGTERM to the service: it exits 0 within 10 s, and so does make."""
    http_port, grpc_port = free_port(), free_port()
    while grpc_port == http_port:
        grpc_port = free_port()
    isolated = f"t_make_run_{uuid.uuid4().hex[:12]}"
    env = clean_env(
        HTTP_HOST="127.0.0.1",
        GRPC_HOST="127.0.0.1",
        HTTP_PORT=str(http_port),
        GRPC_PORT=str(grpc_port),
        ADMIN_HOST="127.0.0.1",
        ADMIN_PORT="0",
        DRAIN_DELAY="0.2",
        SHUTDOWN_TIMEOUT="5",
        DATABASE_SCHEMA=isolated,
        EVENTS_STREAM=f"{isolated}:events",
        DEAD_LETTER_STREAM=f"{isolated}:dead",
        CONSUMER_GROUP=isolated,
        CACHE_PREFIX=f"{isolated}:",
    )
    url = f"http://127.0.0.1:{http_port}"
    log_path = tmp_path / "make-run.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "run"],
            cwd=installed.project,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def output() -> str:
            return tail(log_path.read_text(encoding="utf-8", errors="replace"))

        deadline = time.monotonic() + 60
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
        assert status == 200, f"/readyz not 200 within 60 s (last {status}):\n{output()}"

        assert http_get(f"{url}/v1/echo?msg=hi") == (200, {"msg": "hi"}), output()

        service = child_of(process.pid)
        assert service is not None, f"make run has no single child process:\n{output()}"
        cmdline = Path(f"/proc/{service}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1:3] == [b"-m", installed.package.encode()], cmdline
        os.kill(service, signal.SIGTERM)
        try:
            code = process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"make run still running 10 s after SIGTERM:\n{output()}")
        assert code == 0, f"make run exited {code} after SIGTERM:\n{output()}"
        assert "shutdown_complete" in output(), output()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        forget(isolated, installed)


def forget(isolated: str, installed: Installed) -> None:
    """Drop what the run created in the shared PostgreSQL and Redis."""
    if installed.answers.get("use_postgres", "yes") == "yes":
        drop = f'DROP SCHEMA IF EXISTS "{isolated}" CASCADE'
        run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc", drop], timeout=60)
    if installed.answers.get("use_redis", "yes") == "yes":
        keys = [f"{isolated}:events", f"{isolated}:dead"]
        run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "DEL", *keys], timeout=60)
