"""The real service consuming 5,000 events, stopped by SIGTERM mid-way and restarted until done.

Real Postgres and Redis on 127.0.0.1; the test has its own schema, streams and group. A SIGTERM
exits 0 while messages are flowing, acks only what committed, and the restarts finish the job:
one effect per event, nothing pending, nothing dead-lettered.
"""

from __future__ import annotations

import signal

from .consumer_support import (
    assert_exactly_once,
    backends,
    consumer_env,
    migrated,
    started,
    stop_service,
)

TOTAL = 5000


async def test_sigterm_mid_consumption_exits_0_and_restarts_finish_exactly_once() -> None:
    # No drain delay: the consumer reads on until the listeners close, and at its pace the rest
    # of the stream would be done within a delay, before the stop this test is about.
    env = consumer_env(DRAIN_DELAY="0")
    with migrated(env):
        async with backends(env) as b:
            # Published the production way: items and outbox rows, the relay XADDs them.
            event_ids = await b.insert_items_with_outbox(TOTAL)
            assert len(event_ids) == TOTAL
            seen = 0
            for threshold in (1000, 2500):  # two pods' lives cut short by SIGTERM
                with started(env) as service:

                    async def progressed(at_least: int = threshold) -> bool:
                        return await b.processed() >= at_least

                    await b.wait_until(progressed, f"{threshold} processed", 45, service)
                    assert await stop_service(service, signal.SIGTERM) == 0, service.output()
                stopped = service.events("consumer_stopped")
                assert len(stopped) == 1, service.output()
                assert stopped[0]["processed"] > 0
                assert stopped[0]["dead_lettered"] == 0
                phases = {p["phase"]: p["outcome"] for p in service.events("shutdown_phase")}
                assert set(phases.values()) == {"ok"}, phases
                # Really mid-consumption, and what was acked was committed first.
                processed = await b.processed()
                assert seen < threshold <= processed < TOTAL
                assert await b.acked_without_effect() == []
                seen = processed

            with started(env) as service:

                async def finished() -> bool:
                    return await b.done(TOTAL) and await b.outbox_rows() == 0

                await b.wait_until(finished, "all 5000 processed", 60, service)
                assert await stop_service(service, signal.SIGTERM) == 0, service.output()
            await assert_exactly_once(b, event_ids)
            # The relay stopped gracefully too: no event was published twice.
            assert sorted((await b.stream_events()).values()) == sorted(event_ids)
