"""Session fixtures: baked projects with their own virtualenvs, each built once per session.

Under pytest-xdist each worker has its own session, so the slow tests are grouped in one class per
(answers, Python) and run with `--dist loadscope`, which sends a class to a single worker: every
virtualenv is then built once. (`--dist loadgroup` with xdist_group marks would be the usual tool,
but pytest-xdist 3.8 cannot rename node ids under pytest 9, so it silently does not group.)
uv's cache is the user's, shared by all of them.

The longest classes and modules are collected first (LONGEST_FIRST) and `make test` passes
`--no-loadscope-reorder`, so xdist hands them out first. Its default order, most tests first,
started the baked projects' own suites (a few tests of minutes each) only after ~3.5 minutes of
quick modules, and the run ended with one worker on a project's suite and the others idle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import DEFAULT_PYTHON, REPO_ROOT, Installed, install


@dataclass(frozen=True)
class Variant:
    answers: dict[str, str]
    python_version: str  # the answer; the project's own checks run on it
    pytest_args: str = ""  # PYTEST_ARGS: the default bake runs everything; the others skip `slow`


VARIANTS: dict[str, Variant] = {
    "default": Variant({}, DEFAULT_PYTHON),
    # Every option off: the echo-only service, on the newest Python.
    "minimal": Variant(
        {
            "service_name": "echo",
            "python_version": "3.13",
            "use_grpc": "no",
            "use_postgres": "no",
            "use_redis": "no",
            "use_consumer": "no",
        },
        "3.13",
        "-m 'not slow'",
    ),
    # Non-default numbers, the longest name allowed, Postgres without gRPC or the consumer,
    # traced, on asyncio's own event loop.
    "billing": Variant(
        {
            "service_name": "billing-service-name-of-the-maximum-size",
            "python_version": "3.11",
            "http_port": "9000",
            "grpc_port": "9001",
            "drain_delay_seconds": "0",
            "shutdown_timeout_seconds": "3",
            "use_grpc": "no",
            "use_consumer": "no",
            "use_tracing": "yes",
            "use_uvloop": "no",
        },
        "3.11",
        "-m 'not slow'",
    ),
    # Every option on, tracing too: the trace from a request through the outbox to the consumer.
    "traced": Variant({"use_tracing": "yes"}, DEFAULT_PYTHON, "-m 'not slow'"),
}


class Projects:
    def __init__(self, cookies_session: Any) -> None:
        self._cookies = cookies_session
        self._installed: dict[str, Installed] = {}

    def get(self, variant: str) -> Installed:
        """The variant baked and installed by its own `make install` (on its answer's Python)."""
        spec = VARIANTS[variant]
        if variant not in self._installed:
            result = self._cookies.bake(extra_context=spec.answers, template=str(REPO_ROOT))
            assert result.exit_code == 0, result.exception
            installed = install(Path(result.project_path), spec.python_version)
            installed.answers = dict(spec.answers)
            self._installed[variant] = installed
        return self._installed[variant]


@pytest.fixture(scope="session")
def projects(cookies_session: Any) -> Projects:
    return Projects(cookies_session)


# Classes and modules, longest first (durations of a `make test` run; the rest keep their order).
# xdist gives a worker its next class as soon as the current one has at most two tests left, so a
# two-test class gets its successor at once: TestTracedProject is followed by the combinations,
# which then run on the traced project's virtualenv instead of installing the same one again.
LONGEST_FIRST = (
    "tests/test_generated.py::TestDefaultProject",  # make install, the whole suite, run, pre-commit
    "tests/test_generated.py::TestTracedProject",
    "tests/test_generated.py::TestBillingProject",
    "tests/test_combinations.py::TestEveryAcceptedCombination",
    "tests/test_generated.py::TestMinimalProject",
    "tests/test_refuse.py",
    "tests/test_deploy.py",
    "tests/test_bake.py",
    "tests/test_reproducible.py",
    "tests/test_update.py",
    "tests/test_bench.py",
)


def longest_first_rank(nodeid: str) -> int:
    for rank, scope in enumerate(LONGEST_FIRST):
        if nodeid.startswith(f"{scope}::"):
            return rank
    return len(LONGEST_FIRST)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: longest_first_rank(item.nodeid))  # stable: same order inside
