"""Configuration: environment variables, aliases, and errors that name the variable."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from {{ cookiecutter.package_name }}.app import SETTINGS
from {{ cookiecutter.package_name }}.echo.settings import EchoSettings
from {{ cookiecutter.package_name }}.platform.settings import (
    InvalidSettingsError,
    Settings,
    describe_errors,
    load,
)

from .service import AllSettings


@pytest.fixture(autouse=True)
def _no_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    """A developer's .env must not change what these tests see."""
    monkeypatch.chdir(str(tmp_path))


def test_defaults_come_from_the_template_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PORT", "GRPC_PORT", "DRAIN_DELAY", "SHUTDOWN_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    settings = AllSettings()
    assert settings.http_port == {{ cookiecutter.http_port }}
{%- if cookiecutter.use_grpc == "yes" %}
    assert settings.grpc_port == {{ cookiecutter.grpc_port }}
{%- endif %}
    assert settings.drain_delay == {{ cookiecutter.drain_delay_seconds }}
    assert settings.shutdown_timeout == {{ cookiecutter.shutdown_timeout_seconds }}


def test_environment_and_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PORT", "9999")
    monkeypatch.setenv("DRAIN_DELAY_SECONDS", "1.5")
    monkeypatch.setenv("SHUTDOWN_TIMEOUT", "7")
    settings = Settings()
    assert (settings.http_port, settings.drain_delay, settings.shutdown_timeout) == (9999, 1.5, 7)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"HTTP_PORT": "http"}, "HTTP_PORT:"),
{%- if cookiecutter.use_grpc == "yes" %}
        ({"GRPC_PORT": "0"}, "GRPC_PORT:"),
{%- endif %}
        ({"SHUTDOWN_TIMEOUT": "0"}, "SHUTDOWN_TIMEOUT:"),
        ({"DRAIN_DELAY": "9", "SHUTDOWN_TIMEOUT": "9"}, "DRAIN_DELAY (9.0) must be smaller"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT:"),
        ({"HTTP_HEADER_TIMEOUT": "0"}, "HTTP_HEADER_TIMEOUT:"),
        ({"HTTP_MAX_IN_FLIGHT": "many"}, "HTTP_MAX_IN_FLIGHT:"),
    ],
)
def test_invalid_values_are_named(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as error:
        AllSettings()
    assert any(expected in line for line in describe_errors(error.value)), describe_errors(
        error.value
    )


def test_feature_settings_keep_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECHO_MAX_DELAY_MS", "1234")
    config = load((Settings, *SETTINGS))
    assert config[EchoSettings].max_delay_ms == 1234
    assert config[Settings].http_port == {{ cookiecutter.http_port }}


def test_every_group_is_checked_and_named_as_the_operator_writes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PORT", "http")
    monkeypatch.setenv("ECHO_MAX_DELAY_MS", "-1")
{%- if cookiecutter.use_postgres == "yes" %}
    monkeypatch.setenv("CACHE_TTL_SECONDS", "0")
    monkeypatch.setenv("CACHE_PREFIX", "items:")
{%- endif %}
    with pytest.raises(InvalidSettingsError) as error:
        load((Settings, *SETTINGS))
    named = [line.partition(":")[0] for line in error.value.lines]
    assert named == [
        "HTTP_PORT",
        "ECHO_MAX_DELAY_MS",
{%- if cookiecutter.use_postgres == "yes" %}
        "CACHE_TTL_SECONDS",
{%- endif %}
    ], error.value.lines


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"ADMIN_PORT": "8000", "HTTP_PORT": "8000"}, "ADMIN_PORT (8000) must differ"),
{%- if cookiecutter.use_grpc == "yes" %}
        ({"ADMIN_PORT": "8001", "GRPC_PORT": "8001"}, "ADMIN_PORT (8001) must differ"),
        (
            {"GRPC_MAX_IN_FLIGHT": "8", "GRPC_MAX_CONCURRENT_RPCS": "8"},
            "GRPC_MAX_CONCURRENT_RPCS (8) must exceed",
        ),
{%- endif %}
{%- if cookiecutter.use_postgres == "yes" %}
        ({"DB_POOL_MIN_SIZE": "5", "DB_POOL_MAX_SIZE": "4"}, "DB_POOL_MIN_SIZE must not exceed"),
{%- endif %}
{%- if cookiecutter.use_consumer == "yes" %}
        ({"CONSUMER_BLOCK_MS": "5000", "REDIS_SOCKET_TIMEOUT": "5"}, "CONSUMER_BLOCK_MS (5000)"),
{%- endif %}
    ],
)
def test_rules_across_variables_are_checked_when_loading(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    """Within a group (a validator) or across groups (`check_with`): one line, naming them."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(InvalidSettingsError) as error:
        load((Settings, *SETTINGS))
    assert [line for line in error.value.lines if expected in line], error.value.lines
