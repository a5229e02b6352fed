"""Schemathesis against the real service, from the document it serves (`GET /openapi.json`):
for every operation, requests made from the document's schemas, valid and not, each answered
without a 5xx and as the document says (a documented status, its media type, a body matching its
schema, the headers it names). Bounded: a fixed number of examples per operation, each request
with a timeout, delays capped at 20 ms.

Not checked: that schema-valid input is always accepted. The document cannot say everything the
service refuses: a `msg` of 4,096 characters is valid, but not as a query string over the 8,190
bytes a request target may have (414), and `delay_ms` is capped by a setting (400 past it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .service import Service, running_service

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
EXAMPLES = 50
"""Per operation and mode."""
STREAMS = r"/events$"
"""Server-Sent Events never end: left out (the SSE tests cover them)."""


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    with running_service(ECHO_MAX_DELAY_MS="20") as started:
        yield started
    server_errors = [line for line in started.lines if "http_unhandled_error" in line]
    assert not server_errors, "\n".join(server_errors[:5])


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_answer_conforms_to_the_document(service: Service, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json", timeout=5)
    tested = []
    for found in schema.exclude(path_regex=STREAMS).get_all_operations():
        assert isinstance(found, Ok), found  # the document's every operation is usable
        operation = found.ok()
        inputs = (operation.path_parameters, operation.headers, operation.query, operation.body)
        if mode is GenerationMode.NEGATIVE and not any(map(len, inputs)):
            continue  # nothing to get wrong

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def answers_as_documented(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(checks=CHECKS, timeout=5)

        answers_as_documented()
        tested.append(operation.label)
    assert "POST /v1/echo" in tested, tested
