"""The service runs on uvloop unless EVENT_LOOP=asyncio says otherwise (same behaviour on both)."""

from __future__ import annotations

import signal

import pytest

from .service import Service, http_get, running_service


@pytest.mark.parametrize(
    ("setting", "implementation"), [("uvloop", "uvloop"), ("asyncio", "asyncio")]
)
def test_event_loop_is_chosen_by_the_setting(setting: str, implementation: str) -> None:
    with running_service(EVENT_LOOP=setting, DRAIN_DELAY="0") as service:
        assert service.wait_for_event("event_loop")["implementation"] == implementation
        assert http_get(f"{service.url}/v1/echo?msg=loop")[0] == 200
        service.signal(signal.SIGTERM)
        assert service.wait_exit(timeout=15) == 0, service.output()


def test_an_unknown_event_loop_is_a_configuration_error() -> None:
    result = Service(EVENT_LOOP="trio").run_command("serve", timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "EVENT_LOOP" in result.stderr
