"""The echo feature's settings (read and checked with all others before the service starts)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ..platform.settings import SettingsGroup


class EchoSettings(SettingsGroup):
    """`ECHO_*` variables."""

    model_config = SettingsConfigDict(env_prefix="ECHO_")

    max_delay_ms: int = Field(default=60_000, ge=0, description="Cap on `delay_ms`.")
