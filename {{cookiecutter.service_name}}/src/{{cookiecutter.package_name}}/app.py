"""Assembly: which components the service has, in start order. Add yours here (one line)."""

from __future__ import annotations

{% if cookiecutter.use_grpc == "yes" -%}
from .grpc_server import GrpcServer
{% endif -%}
from .http_server import HttpServer
from .lifecycle import Component
from .readiness import Readiness
from .settings import Settings


def build_components(settings: Settings, readiness: Readiness) -> list[Component]:
    """Started in this order, closed in reverse; dependencies (pools) go before servers."""
    return [
        HttpServer(settings, readiness),
{%- if cookiecutter.use_grpc == "yes" %}
        GrpcServer(settings, readiness),
{%- endif %}
    ]
