"""Property tests against the real service: whatever JSON (or bytes) a client posts, the answer is
a 2xx or a 4xx in the service's JSON error format, never a 5xx. Bounded: a fixed number of
examples, each request with a timeout."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .service import Service, running_service

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)
"""Any JSON, with the integers Python's json writes of any size and NaN/Infinity, which it also
writes (and which are not JSON)."""

FIELDS = st.sampled_from(["msg", "delay_ms", "name", "quantity"]) | st.text(max_size=8)
BODIES = st.dictionaries(FIELDS, JSON_VALUES, max_size=4) | JSON_VALUES
"""Objects with the fields the endpoints read (and others), and any other JSON."""

JSON_ROUTES = ["/v1/echo"{% if cookiecutter.use_postgres == "yes" %}, "/v1/items"{% endif %}]


@pytest.fixture(scope="module")
def service() -> Iterator[Service]:
    with running_service(ECHO_MAX_DELAY_MS="0") as started:  # no example waits
        yield started
    server_errors = [line for line in started.lines if "http_unhandled_error" in line]
    assert not server_errors, "\n".join(server_errors[:5])


def post(service: Service, path: str, body: bytes) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", service.http_port, timeout=5)
    try:
        headers = {"Content-Type": "application/json", "Connection": "close"}
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def assert_answered(status: int, body: Any) -> None:
    assert status < 500, body
    if status >= 400:
        assert body["status"] == status
        assert isinstance(body["error"], str)


@pytest.mark.parametrize("path", JSON_ROUTES)
@settings(max_examples=150, deadline=None)
@given(body=BODIES)
def test_any_json_body_is_answered_without_a_server_error(
    service: Service, path: str, body: Any
) -> None:
    status, answer = post(service, path, json.dumps(body).encode())
    assert_answered(status, answer)
    assert status in (200, 201, 400), answer


@pytest.mark.parametrize("path", JSON_ROUTES)
@settings(max_examples=150, deadline=None)
@given(body=st.binary(max_size=200))
def test_any_bytes_are_answered_without_a_server_error(
    service: Service, path: str, body: bytes
) -> None:
    status, answer = post(service, path, body)
    assert_answered(status, answer)
