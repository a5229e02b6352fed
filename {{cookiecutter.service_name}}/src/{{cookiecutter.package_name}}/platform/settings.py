"""Service configuration: every knob is an environment variable, checked before anything starts."""

from __future__ import annotations

{% if cookiecutter.use_consumer == "yes" -%}
import socket
{% endif -%}
{%- set urls = cookiecutter.use_postgres == "yes" or cookiecutter.use_redis == "yes" -%}
from collections.abc import Iterable, Sequence
from typing import {% if urls %}Annotated, {% endif %}Literal, TypeVar, cast
{%- if urls %}
from urllib.parse import urlsplit
{%- endif %}

from pydantic import {% if urls %}AfterValidator, {% endif %}AliasChoices, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SECRET_SUFFIX = "_url"
"""Settings whose values are never quoted back (a URL can carry a password)."""
{%- if cookiecutter.use_tracing == "yes" %}

HTTP_URL = r"^https?://[^\s/?#]+(/[^\s?#]*)?$"
"""An http(s) URL: the OpenTelemetry endpoints."""
{%- endif %}

{%- if urls %}


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
{%- endif %}


class SettingsGroup(BaseSettings):
    """The one way to declare settings: subclass this in your own module and list the class in
    `app.SETTINGS` (the platform's `Settings` is read too). Every group is read from the
    environment (and an optional `.env` file) and checked before anything starts: an invalid
    value is one line naming its variable, and the process exits 2 before binding a port.

    A field's variable is its upper-cased name, after the class's `env_prefix` if it sets one
    (`EchoSettings`: `env_prefix="ECHO_"`, `max_delay_ms` -> `ECHO_MAX_DELAY_MS`). Components
    get their group with `config[TheirSettings]` in `app.build_components`."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)


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
    return Config(loaded)


class Settings(SettingsGroup):
    """The platform's settings: names are the upper-cased fields."""

    http_host: str = Field(default="0.0.0.0", min_length=1)
    http_port: int = Field(default={{ cookiecutter.http_port }}, ge=1, le=65535)
    grpc_host: str = Field(default="0.0.0.0", min_length=1)
    grpc_port: int = Field(default={{ cookiecutter.grpc_port }}, ge=1, le=65535)
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
{%- if cookiecutter.use_grpc == "yes" %}
    grpc_max_in_flight: int = Field(
        default=256, ge=1, description="Unary RPCs handled at once; more get RESOURCE_EXHAUSTED."
    )
    grpc_max_concurrent_rpcs: int = Field(
        default=1024,
        ge=2,
        description="Every RPC at once (streams and health checks too): grpc's own ceiling.",
    )
{%- endif %}
{%- if cookiecutter.use_postgres == "yes" %}

    database_url: Annotated[str, dependency_url("postgresql", "postgres")] = (
        "postgresql://postgres@127.0.0.1:5432/test"
    )
    database_schema: str = Field(default="public", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    db_pool_min_size: int = Field(default=2, ge=0)
    db_pool_max_size: int = Field(default=10, ge=1)
    db_connect_timeout: float = Field(default=5.0, gt=0)
    db_command_timeout: float = Field(default=30.0, gt=0)
    db_close_timeout: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _pool_sizes(self) -> Settings:
        if self.db_pool_min_size > self.db_pool_max_size:
            raise ValueError("DB_POOL_MIN_SIZE must not exceed DB_POOL_MAX_SIZE")
        return self
{%- endif %}
{%- if cookiecutter.use_redis == "yes" %}

    redis_url: Annotated[str, dependency_url("redis", "rediss", "unix")] = (
        "redis://127.0.0.1:6379/0"
    )
    redis_socket_timeout: float = Field(default=5.0, gt=0)
    events_stream: str = Field(
        default="{{ cookiecutter.service_name }}.events",
        min_length=1,
    )
    outbox_poll_interval: float = Field(default=0.2, gt=0)
    outbox_batch_size: int = Field(default=100, ge=1, le=10_000)
{%- endif %}
{%- if cookiecutter.use_consumer == "yes" %}

    consumer_group: str = Field(
        default="{{ cookiecutter.service_name }}",
        min_length=1,
    )
    consumer_name: str = Field(default_factory=socket.gethostname, min_length=1)
    consumer_concurrency: int = Field(default=8, ge=1, le=1024)
    consumer_batch_size: int = Field(default=256, ge=1, le=10_000)
    consumer_block_ms: int = Field(default=2000, ge=1)
    consumer_claim_idle_ms: int = Field(default=30_000, ge=1)
    consumer_max_deliveries: int = Field(default=5, ge=1)
    dead_letter_stream: str = Field(
        default="{{ cookiecutter.service_name }}.events.dead",
        min_length=1,
    )
{%- endif %}
{%- if cookiecutter.use_tracing == "yes" %}

    # Tracing: the standard OpenTelemetry variable names, checked like every other knob.
    otel_service_name: str = Field(default="{{ cookiecutter.service_name }}", min_length=1)
    otel_traces_exporter: Literal["otlp", "console", "none"] = Field(
        default="otlp", description="otlp: OTLP/HTTP to the endpoint; console: stdout; none."
    )
    otel_sdk_disabled: bool = Field(default=False, description="true: no spans, no export.")
    otel_exporter_otlp_endpoint: str = Field(
        default="http://127.0.0.1:4318",
        pattern=HTTP_URL,
        description="The collector's base URL (spans go to <endpoint>/v1/traces).",
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None, pattern=HTTP_URL, description="The full URL for spans, if not the above."
    )
    otel_exporter_otlp_protocol: Literal["http/protobuf"] = Field(
        default="http/protobuf", description="Only OTLP over HTTP is installed (no gRPC exporter)."
    )
    otel_traces_sampler_arg: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of new traces recorded; a caller's sampled trace is always followed.",
    )
{%- endif %}

    @property
    def writes_access_log(self) -> bool:
        """Access log lines are info lines: at a higher LOG_LEVEL there is nothing to build."""
        return self.access_log and self.log_level in ("debug", "info")

    @model_validator(mode="after")
    def _admin_port_of_its_own(self) -> Settings:
        public = {self.http_port{% if cookiecutter.use_grpc == "yes" %}, self.grpc_port{% endif %}}
        if self.admin_port in public:
            raise ValueError(
                f"ADMIN_PORT ({self.admin_port}) must differ from the public ports: "
                "metrics and task stacks are not for callers"
            )
        return self

    @model_validator(mode="after")
    def _drain_fits_in_timeout(self) -> Settings:
        if self.drain_delay >= self.shutdown_timeout:
            raise ValueError(
                f"DRAIN_DELAY ({self.drain_delay}) must be smaller than "
                f"SHUTDOWN_TIMEOUT ({self.shutdown_timeout})"
            )
        return self
{%- if cookiecutter.use_grpc == "yes" %}

    @model_validator(mode="after")
    def _probes_fit_under_the_ceiling(self) -> Settings:
        if self.grpc_max_concurrent_rpcs <= self.grpc_max_in_flight:
            raise ValueError(
                f"GRPC_MAX_CONCURRENT_RPCS ({self.grpc_max_concurrent_rpcs}) must exceed "
                f"GRPC_MAX_IN_FLIGHT ({self.grpc_max_in_flight}): health checks need room when "
                "unary work is at its limit"
            )
        return self
{%- endif %}
{%- if cookiecutter.use_consumer == "yes" %}

    @model_validator(mode="after")
    def _block_below_socket_timeout(self) -> Settings:
        if self.consumer_block_ms / 1000 >= self.redis_socket_timeout:
            raise ValueError(
                f"CONSUMER_BLOCK_MS ({self.consumer_block_ms}) must stay below "
                f"REDIS_SOCKET_TIMEOUT ({self.redis_socket_timeout} s)"
            )
        return self
{%- endif %}


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
