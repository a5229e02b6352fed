"""The data option: the PostgreSQL and Redis pools, and the outbox relay between them."""

from __future__ import annotations

from .assembly import Assembly, Feature
from .db import PostgresPool, PostgresSettings
from .outbox import OutboxRelay, OutboxSettings
from .redis_client import RedisClient, RedisSettings


def _wire(assembly: Assembly) -> None:
    settings, config, readiness = assembly.settings, assembly.config, assembly.readiness
    db = PostgresPool(settings, config[PostgresSettings], readiness)
    redis = RedisClient(settings, config[RedisSettings], readiness)
    assembly.dependencies += [db, redis]
    assembly.provide(db)
    assembly.provide(redis)
    assembly.workers.append(OutboxRelay(db, redis, settings, config[OutboxSettings]))


DATA = Feature("data", wire=_wire, settings=(PostgresSettings, RedisSettings, OutboxSettings))
"""Provides `PostgresPool` and `RedisClient` to the features listed after it."""
