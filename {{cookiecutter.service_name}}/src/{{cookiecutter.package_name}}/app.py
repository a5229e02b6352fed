"""The one door between the platform and the service's own features: `features()` lists them,
in wiring order. A `Feature` (platform/assembly.py) brings its settings groups, log processors
and migrations; its `wire` adds components, routes and RPCs to the `Assembly`. Add yours to the
list (one line)."""

from __future__ import annotations

from pathlib import Path

from structlog.types import Processor

from .echo.feature import ECHO
from .platform.assembly import Assembly, Feature
from .platform.lifecycle import Component
from .platform.readiness import Readiness
from .platform.settings import Config, SettingsGroup


def features() -> list[Feature]:
    """Wired in this order: a feature uses what the ones before it provide (the items use the
    data option's pools; the RPCs come after the gRPC server)."""
    features: list[Feature] = []
{%- if cookiecutter.use_tracing == "yes" %}

    from .platform.tracing import TRACING

    features.append(TRACING)  # first: it instruments the libraries the others use
{%- endif %}

    features.append(ECHO)
{%- if cookiecutter.use_postgres == "yes" %}

    from .items.feature import ITEMS
    from .platform.data import DATA

    features += [DATA, ITEMS]
{%- endif %}
{%- if cookiecutter.use_consumer == "yes" %}

    from .items.store import ITEM_CREATED, on_item_created, on_items_created
    from .platform.consumer import consumer_feature

    features.append(
        consumer_feature(
            {ITEM_CREATED: on_item_created},  # effect handlers by event type
            group_handlers={ITEM_CREATED: on_items_created},
        )
    )
{%- endif %}
{%- if cookiecutter.use_grpc == "yes" %}

    from .echo.rpc import ECHO_RPC
    from .platform.grpc_server import GRPC

    features += [GRPC, ECHO_RPC]
{%- if cookiecutter.use_postgres == "yes" %}

    from .items.rpc import ITEMS_RPC

    features.append(ITEMS_RPC)
{%- endif %}
{%- endif %}

    return features


FEATURES: tuple[Feature, ...] = tuple(features())

SETTINGS: tuple[type[SettingsGroup], ...] = tuple(
    group for feature in FEATURES for group in feature.settings
)
"""The features' settings groups, read and checked with the platform's before anything starts."""

LOG_PROCESSORS: tuple[Processor, ...] = tuple(
    processor for feature in FEATURES for processor in feature.log_processors
)
"""Run on every log line before rendering."""

MIGRATIONS: tuple[Path, ...] = tuple(
    directory for feature in FEATURES for directory in feature.migrations
)
"""The features' migration directories, applied in this order after the platform's own."""


def build_components(config: Config, readiness: Readiness) -> list[Component]:
    """Every feature wired, in `features()` order; the components in start order (see
    `Assembly.components`)."""
    assembly = Assembly(config, readiness)
    for feature in FEATURES:
        feature.wire(assembly)
    return assembly.components()
