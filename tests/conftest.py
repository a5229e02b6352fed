"""Session fixtures: baked projects with their own virtualenvs, each built once per session.

Under pytest-xdist each worker has its own session, so the slow tests carry an xdist_group mark
naming the (answers, Python) they need and run with `--dist loadgroup`: every virtualenv is
then built by exactly one worker. pip's cache is the user's, shared by all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import DEFAULT_PYTHON, REPO_ROOT, Installed, create_venv


@dataclass(frozen=True)
class Variant:
    answers: dict[str, str]
    python_version: str  # the answer; the project's own checks run on it


VARIANTS: dict[str, Variant] = {
    "default": Variant({}, DEFAULT_PYTHON),
    "no-grpc": Variant({"use_grpc": "no"}, DEFAULT_PYTHON),
    "billing": Variant(
        {
            "service_name": "billing-api",
            "python_version": "3.11",
            "http_port": "9000",
            "grpc_port": "9001",
            "drain_delay_seconds": "0",
            "shutdown_timeout_seconds": "3",
        },
        "3.11",
    ),
}


def group(variant: str, python_version: str) -> pytest.MarkDecorator:
    return pytest.mark.xdist_group(f"{variant}-py{python_version}")


class Projects:
    def __init__(self, cookies_session: Any) -> None:
        self._cookies = cookies_session
        self._installed: dict[tuple[str, str], Installed] = {}

    def get(self, variant: str, python_version: str | None = None) -> Installed:
        """The variant baked and installed on this Python: `.[dev]` on its own Python."""
        spec = VARIANTS[variant]
        version = python_version or spec.python_version
        key = (variant, version)
        if key not in self._installed:
            result = self._cookies.bake(extra_context=spec.answers, template=str(REPO_ROOT))
            assert result.exit_code == 0, result.exception
            extras = "dev" if version == spec.python_version else ""
            installed = create_venv(Path(result.project_path), version, extras=extras)
            installed.answers = dict(spec.answers)
            self._installed[key] = installed
        return self._installed[key]


@pytest.fixture(scope="session")
def projects(cookies_session: Any) -> Projects:
    return Projects(cookies_session)
