"""The service's life in named phases: defined here once, for the lifecycle that runs them and the
`lifecycle_phase` metric that shows where the service is."""

from __future__ import annotations

import enum


class Phase(enum.StrEnum):
    """Where the service is in its life, in order. The shutdown phases are `SHUTDOWN_PHASES`."""

    STARTING = "starting"
    SERVING = "serving"
    READINESS_OFF = "readiness_off"
    DRAIN_DELAY = "drain_delay"
    CLOSE_LISTENERS = "close_listeners"
    END_STREAMS = "end_streams"
    DRAIN_IN_FLIGHT = "drain_in_flight"
    STOP_TASKS = "stop_tasks"
    CLOSE = "close"
    STOPPED = "stopped"


SHUTDOWN_PHASES = tuple(
    phase for phase in Phase if phase not in (Phase.STARTING, Phase.SERVING, Phase.STOPPED)
)
"""The shutdown's phases, in the order the lifecycle runs them."""
