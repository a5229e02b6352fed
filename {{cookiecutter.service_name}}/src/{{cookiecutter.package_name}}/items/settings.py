"""The items feature's settings (read and checked with all others before the service starts)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ..platform.settings import SettingsGroup


class ItemsSettings(SettingsGroup):
    """`CACHE_*` variables: the item cache in Redis."""

    model_config = SettingsConfigDict(env_prefix="CACHE_")

    ttl_seconds: int = Field(default=300, ge=1, description="How long a cached item lives.")
    prefix: str = Field(
        default="{{ cookiecutter.service_name }}:",
        description="Key prefix.",
    )
