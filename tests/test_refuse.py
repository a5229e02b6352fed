"""Bad answers stop the cookiecutter CLI in the pre-generation hook, naming each bad field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import cookiecutter_cli

ERROR_LINE = re.compile(r"^ERROR: ([a-z_]+): ", re.MULTILINE)

# (answers, fields named in stderr). A valid package_name is given where the service name is
# the point, so only the field under test is reported.
CASES: list[tuple[dict[str, str], list[str]]] = [
    ({"service_name": "Orders", "package_name": "orders"}, ["service_name"]),
    ({"service_name": "1orders", "package_name": "orders"}, ["service_name"]),
    ({"service_name": "orders-", "package_name": "orders"}, ["service_name"]),
    ({"service_name": "-orders", "package_name": "orders"}, ["service_name"]),
    ({"service_name": "or_ders", "package_name": "orders"}, ["service_name"]),
    ({"service_name": "order s", "package_name": "orders"}, ["service_name"]),
    ({"service_name": "a" * 41, "package_name": "orders"}, ["service_name"]),
    ({"service_name": "Orders"}, ["service_name", "package_name"]),
    ({"package_name": "class"}, ["package_name"]),
    ({"package_name": "json"}, ["package_name"]),
    ({"package_name": "email"}, ["package_name"]),
    ({"package_name": "grpc"}, ["package_name"]),
    ({"package_name": "tests"}, ["package_name"]),
    ({"package_name": "my-pkg"}, ["package_name"]),
    ({"package_name": "2fast"}, ["package_name"]),
    ({"http_port": "0"}, ["http_port"]),
    ({"http_port": "80"}, ["http_port"]),
    ({"http_port": "70000"}, ["http_port"]),
    ({"http_port": "abc"}, ["http_port"]),
    ({"http_port": "80.5"}, ["http_port"]),
    ({"http_port": "1e3"}, ["http_port"]),
    ({"http_port": "08080"}, ["http_port"]),
    ({"grpc_port": "-1"}, ["grpc_port"]),
    ({"grpc_port": "8080"}, ["grpc_port"]),
    ({"http_port": "9000", "grpc_port": "9000"}, ["grpc_port"]),
    ({"metrics_port": "8080"}, ["metrics_port"]),
    ({"metrics_port": "80"}, ["metrics_port"]),
    ({"drain_delay_seconds": "20"}, ["drain_delay_seconds"]),
    ({"drain_delay_seconds": "30", "shutdown_timeout_seconds": "10"}, ["drain_delay_seconds"]),
    ({"drain_delay_seconds": "1.5"}, ["drain_delay_seconds"]),
    ({"drain_delay_seconds": "-1"}, ["drain_delay_seconds"]),
    ({"shutdown_timeout_seconds": "0", "drain_delay_seconds": "0"}, ["shutdown_timeout_seconds"]),
    ({"shutdown_timeout_seconds": "3601"}, ["shutdown_timeout_seconds"]),
    ({"use_postgres": "no", "use_consumer": "no"}, ["use_redis"]),
    ({"description": ""}, ["description"]),
    ({"description": "two\nlines"}, ["description"]),
    ({"author": "   "}, ["author"]),
    ({"author": "bell\a"}, ["author"]),
    ({"description": "d" * 201}, ["description"]),
    (
        {"service_name": "Bad!", "http_port": "80", "grpc_port": "x", "author": ""},
        ["service_name", "package_name", "author", "http_port", "grpc_port"],
    ),
]


def refuse(tmp_path: Path, answers: dict[str, str]) -> tuple[str, Path]:
    out = tmp_path / "out"
    out.mkdir()
    result = cookiecutter_cli(out, answers, config_dir=tmp_path / "config")
    assert result.returncode != 0, result.stdout
    notice = "pre_gen_project hook script didn't exit successfully"
    assert notice in result.stdout + result.stderr, result.stdout + result.stderr
    return result.stderr, out


@pytest.mark.parametrize(("answers", "fields"), CASES, ids=[str(c[0])[:60] for c in CASES])
def test_refused_in_the_hook(tmp_path: Path, answers: dict[str, str], fields: list[str]) -> None:
    stderr, out = refuse(tmp_path, answers)
    assert ERROR_LINE.findall(stderr) == fields, stderr
    assert list(out.iterdir()) == [], "a refused bake must leave the output directory empty"


def test_messages_explain_the_limits(tmp_path: Path) -> None:
    stderr, _ = refuse(
        tmp_path, {"service_name": "a" * 41, "package_name": "ok", "http_port": "80"}
    )
    assert "at most 40" in stderr
    assert "-migrate" in stderr
    assert "non-root container cannot bind ports below 1024" in stderr


def test_redis_without_postgres_says_why(tmp_path: Path) -> None:
    stderr, _ = refuse(tmp_path, {"use_postgres": "no", "use_consumer": "no"})
    (line,) = [line for line in stderr.splitlines() if line.startswith("ERROR: use_redis")]
    assert "use_postgres=yes" in line
    assert "nothing uses" in line


def test_drain_message_names_both_fields(tmp_path: Path) -> None:
    stderr, _ = refuse(tmp_path, {"drain_delay_seconds": "25"})
    (line,) = [line for line in stderr.splitlines() if line.startswith("ERROR: drain")]
    assert "drain_delay_seconds (25)" in line
    assert "shutdown_timeout_seconds (20)" in line


HOSTILE = [
    'x"; import os',
    "x'''; import os; os.chdir('..'); open('pwned', 'w')'''",
    'x"""; import os; os.chdir(".."); open("pwned", "w")"""',
    "x\\'''; import os; os.chdir('..'); open('pwned', 'w') #",
    "<script>&'x",
]


@pytest.mark.parametrize("field", ["service_name", "package_name"])
@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_answers_are_data(tmp_path: Path, field: str, value: str) -> None:
    """Quotes in an answer cannot end the hook's string: refused, no code run, nothing written."""
    answers = {field: value} if field == "service_name" else {"package_name": value}
    stderr, out = refuse(tmp_path, answers)
    assert field in ERROR_LINE.findall(stderr)
    assert list(tmp_path.rglob("pwned")) == []
    assert list(out.iterdir()) == []


def test_hostile_answer_with_an_absolute_path(tmp_path: Path) -> None:
    """The brief's example: a '/' in service_name makes cookiecutter nest the project directory.

    cookiecutter creates the project directory (and its parents) before the pre-generation hook
    runs, and removes only the innermost one when the hook fails; so empty parent directories
    may remain, but no file is written and the command in the answer never runs.
    """
    marker = tmp_path / "pwned"
    value = f"x'''; import os; os.system('touch {marker}')'''"
    stderr, out = refuse(tmp_path, {"service_name": value})
    assert ERROR_LINE.findall(stderr) == ["service_name", "package_name"]
    assert not marker.exists()
    assert [p for p in out.rglob("*") if not p.is_dir()] == []
