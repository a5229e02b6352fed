"""The hooks' logic, imported unrendered (fast): the rule table and the optional-path table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support import COOKIECUTTER_JSON, TEMPLATE_DIR, load_hook

pre_gen = load_hook("pre_gen_project")
post_gen = load_hook("post_gen_project")

VALID: dict[str, Any] = {
    "service_name": "orders",
    "package_name": "orders",
    "description": "A service.",
    "author": "Platform Team",
    "python_version": "3.12",
    "http_port": "8080",
    "grpc_port": "50051",
    "metrics_port": "9090",
    "drain_delay_seconds": "5",
    "shutdown_timeout_seconds": "20",
    "use_grpc": "yes",
    "use_postgres": "yes",
    "use_redis": "yes",
    "use_consumer": "yes",
    "use_tracing": "yes",
    "use_uvloop": "yes",
    "_template": "/somewhere",
}


def fields_of(problems: list[str]) -> list[str]:
    return [line.split(":", 1)[0] for line in problems]


def test_valid_answers_have_no_problems() -> None:
    assert pre_gen.problems(VALID) == []


def test_every_answer_has_a_rule_and_every_rule_an_answer() -> None:
    asked = {key for key in COOKIECUTTER_JSON if not key.startswith("_")}
    checked = {field for field, _ in pre_gen.CHECKS}
    assert asked == checked


def test_defaults_of_cookiecutter_json_pass() -> None:
    answers = {
        key: (value[0] if isinstance(value, list) else str(value))
        for key, value in COOKIECUTTER_JSON.items()
        if not key.startswith("_")
    }
    answers["package_name"] = answers["service_name"].replace("-", "_")
    assert pre_gen.problems(answers) == []


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({"http_port": True}, ["http_port"]),
        ({"http_port": 8080.0}, ["http_port"]),
        ({"http_port": "1e3"}, ["http_port"]),
        ({"http_port": "+8080"}, ["http_port"]),
        ({"http_port": "8080\n"}, ["http_port"]),
        ({"http_port": "٨٠٨٠"}, ["http_port"]),
        ({"http_port": 1023}, ["http_port"]),
        ({"http_port": None}, ["http_port"]),
        ({"grpc_port": 65536}, ["grpc_port"]),
        ({"http_port": 9000, "grpc_port": "9000"}, ["grpc_port"]),
        ({"metrics_port": 1023}, ["metrics_port"]),
        ({"metrics_port": "8080"}, ["metrics_port"]),
        ({"metrics_port": 50051}, ["metrics_port"]),
        ({"drain_delay_seconds": False}, ["drain_delay_seconds"]),
        ({"drain_delay_seconds": "05"}, ["drain_delay_seconds"]),
        ({"shutdown_timeout_seconds": "0"}, ["shutdown_timeout_seconds"]),
        ({"shutdown_timeout_seconds": 3601}, ["shutdown_timeout_seconds"]),
        ({"drain_delay_seconds": "21"}, ["drain_delay_seconds"]),
        ({"python_version": "3.10"}, ["python_version"]),
        ({"python_version": 3.12}, ["python_version"]),
        ({"use_grpc": "maybe"}, ["use_grpc"]),
        ({"use_grpc": True}, ["use_grpc"]),
        ({"use_redis": "no"}, ["use_postgres", "use_consumer"]),
        ({"use_postgres": "no"}, ["use_redis", "use_consumer"]),
        ({"use_postgres": "no", "use_consumer": "no"}, ["use_redis"]),
        ({"use_postgres": "no", "use_redis": "no"}, ["use_consumer"]),
        ({"use_consumer": "maybe"}, ["use_consumer"]),
        ({"use_tracing": "on"}, ["use_tracing"]),
        ({"use_uvloop": "fast"}, ["use_uvloop"]),
        ({"service_name": "orders\n"}, ["service_name"]),
        ({"service_name": 42}, ["service_name"]),
        ({"package_name": "type"}, ["package_name"]),
        ({"package_name": "match"}, ["package_name"]),
        ({"package_name": "_"}, ["package_name"]),
        ({"package_name": "asyncio"}, ["package_name"]),
        ({"package_name": "pydantic_settings"}, ["package_name"]),
        ({"package_name": "orders\n"}, ["package_name"]),
        ({"description": "line\u2028break"}, ["description"]),
        ({"description": "tab\there"}, ["description"]),
        ({"author": None}, ["author"]),
        ({"author": "x" * 201}, ["author"]),
    ],
)
def test_refused(changes: dict[str, Any], fields: list[str]) -> None:
    assert fields_of(pre_gen.problems({**VALID, **changes})) == fields


@pytest.mark.parametrize(
    "changes",
    [
        {"http_port": 1024, "grpc_port": 65535},
        {"http_port": "9000", "grpc_port": "9000", "use_grpc": "no"},
        {"grpc_port": "9090", "metrics_port": "9090", "use_grpc": "no"},
        {"drain_delay_seconds": 0, "shutdown_timeout_seconds": 1},
        {"drain_delay_seconds": "3599", "shutdown_timeout_seconds": "3600"},
        {"service_name": "a" * 40, "package_name": "a" * 40},
        {"service_name": "a"},
        {"package_name": "_private"},
        {"use_consumer": "no", "use_postgres": "no", "use_redis": "no"},
        {"description": "Équipe « plateforme » — x'''; \"\"\" \\ </script> & {braces}"},
    ],
)
def test_accepted(changes: dict[str, Any]) -> None:
    assert pre_gen.problems({**VALID, **changes}) == []


def test_all_problems_at_once_one_line_each() -> None:
    answers = {
        **VALID,
        "service_name": "Bad",
        "http_port": "80",
        "grpc_port": "abc",
        "drain_delay_seconds": "30",
        "author": "",
    }
    del answers["description"]
    found = pre_gen.problems(answers)
    assert fields_of(found) == [
        "service_name",
        "description",
        "author",
        "http_port",
        "grpc_port",
        "drain_delay_seconds",
    ]
    assert all("\n" not in line for line in found)
    assert "drain_delay_seconds (30)" in found[-1]
    assert "shutdown_timeout_seconds (20)" in found[-1]
    assert "below 1024" in found[3]


def test_long_service_name_message_explains_the_limit() -> None:
    (line,) = pre_gen.problems({**VALID, "service_name": "a" * 41})
    assert "41 characters" in line
    assert "-migrate" in line


def test_optional_path_options_are_yes_no_questions() -> None:
    for option in post_gen.OPTIONAL_PATHS:
        assert COOKIECUTTER_JSON[option] in (["yes", "no"], ["no", "yes"]), option


def test_every_optional_path_exists_in_the_template() -> None:
    """A renamed file must be renamed in OPTIONAL_PATHS too, or it would silently stay."""
    names = {"package_name": "{{cookiecutter.package_name}}"}
    for option, patterns in post_gen.OPTIONAL_PATHS.items():
        for pattern in patterns:
            assert list(TEMPLATE_DIR.glob(pattern.format(**names))), (option, pattern)


def test_remove_unused_removes_only_options_answered_no(tmp_path: Path) -> None:
    for name in [
        "proto/a/b.proto",
        "hatch_build.py",
        "src/pkg/platform/grpc_server.py",
        "src/pkg/items/rpc.py",
        "src/pkg/v1/x.py",
    ]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("", encoding="utf-8")
    (tmp_path / "tests").mkdir()
    for name in ["test_grpc_a.py", "test_b_grpc.py", "test_http.py"]:
        (tmp_path / "tests" / name).write_text("", encoding="utf-8")
    (tmp_path / "src/pkg/app.py").write_text("", encoding="utf-8")

    assert post_gen.remove_unused(tmp_path, {"use_grpc": "yes", "package_name": "pkg"}) == []
    post_gen.remove_unused(tmp_path, {"use_grpc": "no", "package_name": "pkg"})
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["src/pkg/app.py", "tests/test_http.py"]


def test_replay_context_drops_only_volatile_keys() -> None:
    answers = {**VALID, "_output_dir": "/o", "_repo_dir": "/r", "_checkout": None}
    replay = post_gen.replay_context(answers)
    assert replay == {"cookiecutter": VALID}
    assert json.loads(json.dumps(replay)) == replay
