"""The real service consuming 5,000 events, SIGKILLed mid-way (twice) and restarted until done.

A killed pod leaves its batch pending under its name: another pod takes the entries over with
XAUTOCLAIM once idle, and a pod restarted under the same name re-reads its own pending entries
first. The end state is exact all the same.
"""

from __future__ import annotations

import asyncio
import signal

from .consumer_support import (
    Backends,
    assert_exactly_once,
    backends,
    consumer_env,
    migrated,
    started,
    stop_service,
)
from .service import Service

TOTAL = 5000


async def kill_holding_a_batch(service: Service, b: Backends, consumer: str) -> int:
    """SIGKILL the pod while it holds read, unacknowledged entries: frozen (SIGSTOP) first, and
    let go again for a moment if it is between two batches (a batch's group commits take a few
    milliseconds, so a plain SIGKILL can land between them)."""
    for _ in range(200):
        service.signal(signal.SIGSTOP)
        if (await b.pending_by_consumer()).get(consumer, 0) > 0:
            return await stop_service(service, signal.SIGKILL)
        service.signal(signal.SIGCONT)
        await asyncio.sleep(0.005)
    raise AssertionError(f"{consumer} was never caught holding a batch:\n{service.output()}")


async def test_sigkill_mid_consumption_recovered_by_autoclaim_and_own_pending() -> None:
    env = consumer_env(CONSUMER_NAME="pod-a", CONSUMER_BATCH_SIZE="512")
    with migrated(env):
        async with backends(env) as b:
            published = await b.publish_items(TOTAL)
            event_ids = set(published.message_ids)

            # pod-a dies holding a batch: its entries stay pending under its name.
            with started(env) as service:

                async def progressed() -> bool:
                    return await b.processed() >= 1000

                await b.wait_until(progressed, "1000 processed", 45, service)
                assert await kill_holding_a_batch(service, b, "pod-a") == -signal.SIGKILL
            assert (await b.pending_by_consumer()).get("pod-a", 0) > 0
            assert await b.acked_without_effect() == []
            after_first = await b.processed()
            assert after_first < TOTAL

            # pod-b (pod-a never comes back) takes them over with XAUTOCLAIM once idle, then
            # dies the same way.
            pod_b = {**env, "CONSUMER_NAME": "pod-b"}
            with started(pod_b) as service:

                async def took_over() -> bool:
                    by_consumer = await b.pending_by_consumer()
                    return by_consumer.get("pod-a", 0) == 0 and await b.processed() >= 2500

                await b.wait_until(took_over, "pod-a's entries claimed", 45, service)
                assert await kill_holding_a_batch(service, b, "pod-b") == -signal.SIGKILL
            claimed = service.events("consumer_claimed")
            assert claimed, service.output()
            assert (await b.pending_by_consumer()).get("pod-b", 0) > 0
            assert await b.acked_without_effect() == []
            assert after_first < await b.processed() < TOTAL

            # pod-b restarts (same name): it reads its own pending entries first.
            with started(pod_b) as service:
                await b.wait_until(lambda: b.done(TOTAL), "all 5000 processed", 60, service)
                assert await stop_service(service, signal.SIGTERM) == 0, service.output()
            recovered = service.events("consumer_recovering_pending")
            assert recovered, service.output()
            assert service.events("consumer_claimed") == []  # nothing idle in a dead consumer
            await assert_exactly_once(b, event_ids)
            assert await b.processed_ids() == published.message_ids
