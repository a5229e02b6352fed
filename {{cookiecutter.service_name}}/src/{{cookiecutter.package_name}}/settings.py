"""Service configuration: every knob is an environment variable, checked before anything starts."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Read from the environment (and an optional `.env` file); names are the upper-cased fields."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    http_host: str = Field(default="0.0.0.0", min_length=1)
    http_port: int = Field(default={{ cookiecutter.http_port }}, ge=1, le=65535)
    grpc_host: str = Field(default="0.0.0.0", min_length=1)
    grpc_port: int = Field(default={{ cookiecutter.grpc_port }}, ge=1, le=65535)

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

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    echo_max_delay_ms: int = Field(default=60_000, ge=0)
    max_request_body_bytes: int = Field(default=1_048_576, ge=1)

    @model_validator(mode="after")
    def _drain_fits_in_timeout(self) -> Settings:
        if self.drain_delay >= self.shutdown_timeout:
            raise ValueError(
                f"DRAIN_DELAY ({self.drain_delay}) must be smaller than "
                f"SHUTDOWN_TIMEOUT ({self.shutdown_timeout})"
            )
        return self


def describe_errors(error: ValidationError) -> list[str]:
    """One line per invalid variable, named as the operator writes it (the env var)."""
    lines = []
    for item in error.errors():
        name = "_".join(str(part) for part in item["loc"]).upper() or "configuration"
        value = f" (got {item['input']!r})" if item["loc"] else ""
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{name}: {message}{value}")
    return lines
