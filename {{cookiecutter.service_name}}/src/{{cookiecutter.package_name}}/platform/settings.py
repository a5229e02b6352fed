"""Service configuration: every knob is an environment variable, checked before anything starts.

`Settings` holds the platform's own knobs; each option and feature declares its group next to the
code that uses it (`PostgresSettings` in db.py, `GrpcSettings` in grpc_server.py, ...), listed by
its `Feature` in app.py."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, TypeVar, cast
from urllib.parse import urlsplit

from pydantic import AfterValidator, AliasChoices, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SECRET_SUFFIX = "_url"
"""Settings whose values are never quoted back (a URL can carry a password)."""


def dependency_url(*schemes: str) -> AfterValidator:
    """A dependency's URL: one of `schemes`, a numeric port. The messages never quote the URL
    (it carries the password)."""

    def check(url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in schemes:
            raise ValueError(f"must be a URL starting with {schemes[0]}://")
        try:
            parts.port  # noqa: B018 (parsing the port is the check)
        except ValueError:
            raise ValueError("has a port that is not a number from 0 to 65535") from None
        return url

    return AfterValidator(check)


class SettingsGroup(BaseSettings):
    """The one way to declare settings: subclass this in your own module and list the class in
    `app.SETTINGS` (the platform's `Settings` is read too). Every group is read from the
    environment (and an optional `.env` file) and checked before anything starts: an invalid
    value is one line naming its variable, and the process exits 2 before binding a port.

    A field's variable is its upper-cased name, after the class's `env_prefix` if it sets one
    (`EchoSettings`: `env_prefix="ECHO_"`, `max_delay_ms` -> `ECHO_MAX_DELAY_MS`). A feature
    lists its groups in its `Feature(settings=...)`; its `wire` gets them with
    `assembly.config[TheirSettings]`. A rule between two variables of one group is a pydantic
    `model_validator`; a rule across groups is `check_with`."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    def check_with(self, config: Config) -> list[str]:
        """Problems between this group and the others, once every group has been read: one
        message each, naming the variables (none by default)."""
        return []


Group = TypeVar("Group", bound=SettingsGroup)


class Config:
    """Every settings group, read and checked: `config[EchoSettings]` is that group's values."""

    def __init__(self, groups: Iterable[SettingsGroup]) -> None:
        self._groups: dict[type[SettingsGroup], SettingsGroup] = {type(g): g for g in groups}

    def __getitem__(self, group: type[Group]) -> Group:
        return cast(Group, self._groups[group])


class InvalidSettingsError(Exception):
    """Some variables are invalid: `lines` names each, as `describe_errors` does."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def load(groups: Sequence[type[SettingsGroup]]) -> Config:
    """Read every group; InvalidSettingsError with the problems of all of them at once."""
    loaded: list[SettingsGroup] = []
    lines: list[str] = []
    for group in groups:
        try:
            loaded.append(group())
        except ValidationError as error:
            lines.extend(describe_errors(error, group.model_config.get("env_prefix", "")))
    if lines:
        raise InvalidSettingsError(lines)
    config = Config(loaded)
    lines = [
        f"configuration: {problem}" for group in loaded for problem in group.check_with(config)
    ]
    if lines:
        raise InvalidSettingsError(lines)
    return config


class Settings(SettingsGroup):
    """The platform's settings: names are the upper-cased fields."""

    http_host: str = Field(default="0.0.0.0", min_length=1)
    http_port: int = Field(default={{ cookiecutter.http_port }}, ge=1, le=65535)
    admin_host: str = Field(default="0.0.0.0", min_length=1)
    admin_port: int = Field(
        default={{ cookiecutter.metrics_port }},
        ge=0,
        le=65535,
        description="/metrics (and /debug/tasks), never on the public port (0: any free port).",
    )
    debug_tasks: bool = Field(
        default=False,
        description="Serve every task's stack at /debug/tasks on the admin port (SIGUSR1 logs it).",
    )

    drain_delay: float = Field(
        default={{ cookiecutter.drain_delay_seconds }},
        ge=0,
        validation_alias=AliasChoices("drain_delay", "drain_delay_seconds"),
        description="Seconds between readiness off and listeners closed.",
    )
    shutdown_timeout: float = Field(
        default={{ cookiecutter.shutdown_timeout_seconds }},
        gt=0,
        validation_alias=AliasChoices("shutdown_timeout", "shutdown_timeout_seconds"),
        description="Seconds from the first signal to process exit, drain delay included.",
    )

{%- if cookiecutter.use_uvloop == "yes" %}
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
{%- endif %}
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    access_log: bool = Field(default=True, description="One log line per request and RPC.")

    max_request_body_bytes: int = Field(default=1_048_576, ge=1)
    http_header_timeout: float = Field(
        default=10.0, gt=0, description="Seconds a client has to send a request's head."
    )
    http_body_timeout: float = Field(
        default=30.0, gt=0, description="Seconds a client has to send a request's body (408)."
    )
    http_keepalive_timeout: float = Field(
        default=75.0, gt=0, description="Seconds an idle keep-alive connection stays open."
    )
    http_drain_read_timeout: float = Field(
        default=1.0,
        ge=0,
        description="Once the listeners close, seconds a client still sending its request has.",
    )
    http_max_in_flight: int = Field(
        default=256, ge=1, description="HTTP requests handled at once; more get 503."
    )
    request_timeout: float = Field(
        default=10.0, gt=0, description="Budget of an HTTP request for its database/Redis calls."
    )
    dependency_connect_timeout: float = Field(
        default=120.0, gt=0, description="Give up connecting to a dependency after this long."
    )
    dependency_max_backoff: float = Field(default=5.0, gt=0)

    @property
    def writes_access_log(self) -> bool:
        """Access log lines are info lines: at a higher LOG_LEVEL there is nothing to build."""
        return self.access_log and self.log_level in ("debug", "info")

    @model_validator(mode="after")
    def _admin_port_of_its_own(self) -> Settings:
        if problems := self.admin_port_clashes(self.http_port):
            raise ValueError(problems[0])
        return self

    def admin_port_clashes(self, *public_ports: int) -> list[str]:
        """The problem, if ADMIN_PORT is one of `public_ports` (the servers' ports)."""
        if self.admin_port not in public_ports:
            return []
        return [
            f"ADMIN_PORT ({self.admin_port}) must differ from the public ports: "
            "metrics and task stacks are not for callers"
        ]

    @model_validator(mode="after")
    def _drain_fits_in_timeout(self) -> Settings:
        if self.drain_delay >= self.shutdown_timeout:
            raise ValueError(
                f"DRAIN_DELAY ({self.drain_delay}) must be smaller than "
                f"SHUTDOWN_TIMEOUT ({self.shutdown_timeout})"
            )
        return self


def describe_errors(error: ValidationError, env_prefix: str = "") -> list[str]:
    """One line per invalid variable, named as the operator writes it (the env var: pydantic's
    `loc` is the field, without the group's `env_prefix`)."""
    lines = []
    for item in error.errors():
        field = "_".join(str(part) for part in item["loc"])
        name = (env_prefix + field).upper() if field else "configuration"
        quoted = item["loc"] and not field.endswith(SECRET_SUFFIX)
        value = f" (got {item['input']!r})" if quoted else ""
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{name}: {message}{value}")
    return lines
