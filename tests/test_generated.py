"""Baked projects installed in their own virtualenvs: their checks pass and the service runs.

Slow (virtualenvs, the generated test suite, real processes): marked `slow`.
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
from typing import Any

import pytest

from tests.conftest import VARIANTS, Projects, group
from tests.support import SUPPORTED_PYTHONS, check_ok, clean_env, free_port, run, tail

pytestmark = pytest.mark.slow

CHECKS = {
    "ruff-check": ["ruff", "check", "."],
    "ruff-format": ["ruff", "format", "--check", "."],
    "mypy": ["mypy"],
    "pytest": ["pytest", "-q", "-p", "no:cacheprovider"],
}


@pytest.mark.parametrize(
    ("variant", "check"),
    [
        pytest.param(variant, check, marks=group(variant, spec.python_version))
        for variant, spec in VARIANTS.items()
        for check in CHECKS
    ],
)
def test_generated_project_passes_its_own_checks(
    projects: Projects, variant: str, check: str
) -> None:
    installed = projects.get(variant)
    tool, *args = CHECKS[check]
    result = run([installed.bin(tool), *args], cwd=installed.project, timeout=900)
    check_ok(result, f"{check} in the {variant!r} project (python {installed.python_version})")


def http_get(url: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"Connection": "close"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, None


@pytest.mark.parametrize(
    "python_version",
    [pytest.param(v, marks=group("default", v)) for v in SUPPORTED_PYTHONS],
)
def test_default_service_serves_and_stops_on_sigterm(
    projects: Projects, python_version: str, tmp_path: Path
) -> None:
    installed = projects.get("default", python_version)
    http_port, grpc_port = free_port(), free_port()
    while grpc_port == http_port:
        grpc_port = free_port()
    env = clean_env(
        HTTP_HOST="127.0.0.1",
        GRPC_HOST="127.0.0.1",
        HTTP_PORT=str(http_port),
        GRPC_PORT=str(grpc_port),
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
