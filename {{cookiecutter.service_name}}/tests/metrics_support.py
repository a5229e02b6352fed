"""Scraping the admin port's /metrics, for the metrics tests."""

from __future__ import annotations

import asyncio
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from .service import Service
from .support import wait_until

SUFFIXES = ("", "_total", "_bucket", "_count", "_sum", "_created", "_info")


class Samples:
    """One scrape: every sample's value by name and labels, and the metric families declared."""

    def __init__(self, text: str) -> None:
        self.values: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        self.families: set[str] = set()
        for family in text_string_to_metric_families(text):
            self.families.add(family.name)
            for sample in family.samples:
                self.values[sample.name, frozenset(sample.labels.items())] = sample.value

    def get(self, name: str, **labels: str) -> float:
        """The sample's value; 0 when it does not exist (yet)."""
        return self.values.get((name, frozenset(labels.items())), 0.0)

    def names(self) -> set[str]:
        """Every name a query may use: the samples', and each declared family's with suffixes."""
        declared = {family + suffix for family in self.families for suffix in SUFFIXES}
        return {name for name, _ in self.values} | declared


def scrape(service: Service) -> Samples:
    with urllib.request.urlopen(f"{service.admin_url}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return Samples(response.read().decode())


async def wait_in_flight(service: Service, gauge: str, count: int, within: float = 10.0) -> None:
    """Until the in-flight `gauge` (`http_server_requests_in_flight`, `grpc_server_in_flight`)
    shows `count`: the calls have reached their handlers, no sleeping and hoping."""

    async def reached() -> bool:
        return (await asyncio.to_thread(scrape, service)).get(gauge) >= count

    await wait_until(reached, f"{count} in {gauge}", within, service)
