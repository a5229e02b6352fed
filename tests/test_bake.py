"""Baking with default and non-default answers: files, rendered answers, replay file."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    COOKIECUTTER_JSON,
    REPO_ROOT,
    VOLATILE_KEYS,
    check_ok,
    cookiecutter_cli,
    text_files,
    tree,
)

# Jinja left in the output; `${{ ... }}` is a GitHub Actions expression (kept with {% raw %}).
UNRENDERED = re.compile(r"(?<!\$)\{\{|\{%")

HOSTILE_TEXT = "x'''; import os; os.chdir('..'); open('pwned', 'w')''' \"\"\" \\ </b> & é"

ANSWER_SETS: dict[str, dict[str, str]] = {
    "default": {},
    "billing": {
        "service_name": "billing-api",
        "python_version": "3.11",
        "http_port": "9000",
        "grpc_port": "9001",
        "drain_delay_seconds": "0",
        "shutdown_timeout_seconds": "3",
    },
    "no-grpc": {"service_name": "ledger", "use_grpc": "no", "python_version": "3.13"},
    "no-grpc-same-ports": {"use_grpc": "no", "http_port": "8080", "grpc_port": "8080"},
    "long-name": {"service_name": "inventory-reconciliation-worker-eu-west1"},
    "own-package": {"service_name": "payments", "package_name": "pay_core"},
    "hostile-text": {"description": HOSTILE_TEXT, "author": HOSTILE_TEXT},
}


def expected_answers(overrides: dict[str, str]) -> dict[str, str]:
    answers = {
        key: value[0] if isinstance(value, list) else str(value)
        for key, value in COOKIECUTTER_JSON.items()
        if not key.startswith("_")
    }
    answers.update(overrides)
    if "package_name" not in overrides:
        answers["package_name"] = answers["service_name"].replace("-", "_")
    return answers


def grpc_paths(package: str) -> list[str]:
    return [
        "proto",
        "hatch_build.py",
        f"src/{package}/platform/grpc_server.py",
        f"src/{package}/echo/rpc.py",
        f"src/{package}/items/rpc.py",
        f"src/{package}/v1",
        "tests/test_shutdown_grpc.py",
        "tests/test_grpc_api.py",
    ]


@pytest.fixture(params=list(ANSWER_SETS), scope="module")
def baked(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, str], Path]:
    """One bake per answer set through the CLI, shared by the checks below."""
    overrides = ANSWER_SETS[request.param]
    work = tmp_path_factory.mktemp(f"bake-{request.param}")
    result = cookiecutter_cli(work / "out", overrides, config_dir=work / "config")
    check_ok(result, f"cookiecutter {overrides}")
    answers = expected_answers(overrides)
    project = work / "out" / answers["service_name"]
    assert project.is_dir(), list((work / "out").iterdir())
    assert not (work / "out" / "pwned").exists()
    assert not list(work.rglob("pwned"))
    return answers, project


def test_bake_default_with_pytest_cookies(cookies: Any) -> None:
    result = cookies.bake(template=str(REPO_ROOT))
    assert result.exit_code == 0, result.exception
    assert result.exception is None
    project = Path(result.project_path)
    assert project.name == "orders"
    assert (project / "src/orders/__main__.py").is_file()
    assert (project / "src/orders/platform/grpc_server.py").is_file()


def test_bake_with_pytest_cookies_integer_answers(cookies: Any) -> None:
    result = cookies.bake(
        template=str(REPO_ROOT),
        extra_context={"http_port": 9100, "grpc_port": 9101, "drain_delay_seconds": 0},
    )
    assert result.exit_code == 0, result.exception
    settings = (Path(result.project_path) / "src/orders/platform/settings.py").read_text(
        encoding="utf-8"
    )
    assert "default=9100," in settings
    grpc = (Path(result.project_path) / "src/orders/platform/grpc_server.py").read_text(
        encoding="utf-8"
    )
    assert "default=9101," in grpc


def test_expected_files(baked: tuple[dict[str, str], Path]) -> None:
    answers, project = baked
    package = answers["package_name"]
    for name in [
        "pyproject.toml",
        "README.md",
        ".gitignore",
        ".cookiecutter.json",
        f"src/{package}/__init__.py",
        f"src/{package}/__main__.py",
        f"src/{package}/platform/settings.py",
        f"src/{package}/platform/http_server.py",
        f"src/{package}/echo/routes.py",
        f"src/{package}/app.py",
        "tests/test_shutdown_http.py",
    ]:
        assert (project / name).is_file(), name
    grpc = grpc_paths(package)
    if answers["use_grpc"] == "yes":
        assert all((project / name).exists() for name in grpc)
        assert (project / f"proto/{package}/v1/echo.proto").is_file()
    else:
        assert [name for name in grpc if (project / name).exists()] == []
        assert list(project.rglob("*grpc*")) == []
        pyproject = (project / "pyproject.toml").read_text(encoding="utf-8")
        assert "grpc" not in pyproject
        assert "grpc" not in (project / f"src/{package}/app.py").read_text(encoding="utf-8")


def test_http_streams_files(baked: tuple[dict[str, str], Path]) -> None:
    check_http_streams_files(*baked)


def test_http_streams_files_without_the_items_example(tmp_path: Path) -> None:
    overrides = {"use_postgres": "no", "use_redis": "no", "use_consumer": "no"}
    result = cookiecutter_cli(tmp_path / "out", overrides, config_dir=tmp_path / "config")
    check_ok(result, f"cookiecutter {overrides}")
    check_http_streams_files(expected_answers(overrides), tmp_path / "out" / "orders")


def check_http_streams_files(answers: dict[str, str], project: Path) -> None:
    """The WebSocket echo is always there; the SSE item events come with the items example."""
    package = answers["package_name"]
    for name in [
        f"src/{package}/platform/http_streams.py",
        f"src/{package}/echo/ws.py",
        "tests/test_shutdown_streams.py",
    ]:
        assert (project / name).is_file(), name
    sse = [f"src/{package}/items/events.py", "tests/test_items_events.py"]
    pyproject = (project / "pyproject.toml").read_text(encoding="utf-8")
    lock = (project / "uv.lock").read_text(encoding="utf-8")
    if answers["use_postgres"] == "yes":
        assert all((project / name).is_file() for name in sse)
        assert '"aiohttp-sse==' in pyproject
        assert 'name = "aiohttp-sse"' in lock
    else:
        assert [name for name in sse if (project / name).exists()] == []
        assert "aiohttp-sse" not in pyproject
        assert "aiohttp-sse" not in lock
        assert ".items" not in (project / f"src/{package}/app.py").read_text("utf-8")


def test_nothing_left_unrendered(baked: tuple[dict[str, str], Path]) -> None:
    _, project = baked
    files = text_files(project)
    assert len(files) > 10
    leftovers = [
        str(path.relative_to(project))
        for path in files
        if UNRENDERED.search(path.read_text(encoding="utf-8"))
    ]
    assert leftovers == []
    assert [p for p in project.rglob("*") if "{" in p.name] == []


def test_python_compiles(baked: tuple[dict[str, str], Path]) -> None:
    _, project = baked
    sources = sorted(project.rglob("*.py"))
    assert sources
    for path in sources:
        compile(path.read_text(encoding="utf-8"), str(path), "exec", dont_inherit=True)


def test_answers_show_up(baked: tuple[dict[str, str], Path]) -> None:
    answers, project = baked
    package = answers["package_name"]
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["name"] == answers["service_name"]
    assert pyproject["project"]["description"] == answers["description"]
    assert pyproject["project"]["authors"] == [{"name": answers["author"]}]
    assert pyproject["project"]["scripts"] == {answers["service_name"]: f"{package}.cli:run"}
    assert pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == [f"src/{package}"]

    settings = (project / f"src/{package}/platform/settings.py").read_text(encoding="utf-8")
    assert f"Field(default={answers['http_port']}, ge=1" in settings
    if answers["use_grpc"] == "yes":  # GRPC_PORT is the gRPC option's, next to its server
        grpc = (project / f"src/{package}/platform/grpc_server.py").read_text(encoding="utf-8")
        assert f"Field(default={answers['grpc_port']}, ge=1" in grpc
    else:
        assert "grpc_port" not in settings
    assert f"default={answers['drain_delay_seconds']},\n" in settings
    assert f"default={answers['shutdown_timeout_seconds']},\n" in settings

    readme = (project / "README.md").read_text(encoding="utf-8")
    assert answers["description"] in readme
    assert answers["service_name"] in (project / "README.md").read_text(encoding="utf-8")


def test_replay_file(baked: tuple[dict[str, str], Path]) -> None:
    answers, project = baked
    replay = json.loads((project / ".cookiecutter.json").read_text(encoding="utf-8"))
    assert list(replay) == ["cookiecutter"]
    recorded = replay["cookiecutter"]
    assert not VOLATILE_KEYS & set(recorded)
    assert recorded["_template"] == str(REPO_ROOT)
    assert {k: v for k, v in recorded.items() if not k.startswith("_")} == answers


def test_replay_regenerates_the_same_project(
    baked: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    answers, project = baked
    result = cookiecutter_cli(
        tmp_path / "again",
        replay_file=project / ".cookiecutter.json",
        config_dir=tmp_path / "config",
    )
    check_ok(result, "cookiecutter --replay-file .cookiecutter.json")
    assert tree(tmp_path / "again" / answers["service_name"]) == tree(project)


SRC = REPO_ROOT / "{{cookiecutter.service_name}}" / "src"
JINJA_IF = re.compile(r"\{%-?\s*if\b")
MAX_JINJA_IFS_IN_SRC = 10
"""Options are modules: an option contributes whole files (OPTIONAL_PATHS keeps or removes them),
and `app.py` is where the few blocks left belong (issue 16)."""


def jinja_ifs(root: Path) -> dict[str, int]:
    counts = {
        str(path.relative_to(root)): len(JINJA_IF.findall(path.read_text(encoding="utf-8")))
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.suffix in {".py", ".sql", ".pyi"}
    }
    return {path: count for path, count in counts.items() if count}


def test_few_jinja_blocks_in_src() -> None:
    counts = jinja_ifs(SRC)
    assert sum(counts.values()) <= MAX_JINJA_IFS_IN_SRC, counts
