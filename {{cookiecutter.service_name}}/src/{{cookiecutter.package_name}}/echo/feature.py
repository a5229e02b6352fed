"""The echo feature as app.py lists it: its settings and its HTTP routes."""

from __future__ import annotations

from ..platform.assembly import Assembly, Feature
from .routes import echo_routes
from .settings import EchoSettings


def _wire(assembly: Assembly) -> None:
    assembly.http_routes.append(echo_routes(assembly.config[EchoSettings].max_delay_ms))


ECHO = Feature("echo", wire=_wire, settings=(EchoSettings,))
