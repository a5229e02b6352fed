"""The root scope: owns the signals, starts the components, runs the shutdown, picks the exit code.

Components never see a signal. They plug in through `Component` and are driven phase by phase
(the names are `phases.Phase`, shared with the `lifecycle_phase` metric):

    signal ─► readiness_off ─► drain_delay ─► close_listeners ─► end_streams
           ─► drain_in_flight ─► stop_tasks ─► close ─► exit

All phases but `close` share the drain deadline (SHUTDOWN_TIMEOUT minus a reserve); `close` gets the
reserve, so pools are closed and logs flushed even when in-flight work overran. Within a phase the
components act concurrently (`close` in reverse start order); a hook a component does not override
does nothing. What each component of the service does in each phase (- : nothing; in
`readiness_off` and `drain_delay` no component acts: the lifecycle turns `Readiness` off, which
`/readyz` and gRPC health follow, and waits while the service keeps serving):

    component    start  close_listeners  end_streams  drain_in_flight  stop_tasks  close
    tracing      -      -                -            -                -           flush (1)
    postgres     spawn  -                -            -                cancel (2)  pool
    redis        spawn  -                -            -                cancel (2)  client
    admin        bind   -                -            -                -           runner
    outbox       spawn  -                -            -                batch, end  -
    item_events  spawn  -                -            -                cancel      -
    consumer     spawn  stop reading     -            messages acked   loop ends   -
    http         bind   refuse new conn  end WS, SSE  requests end     -           sockets
    grpc         bind   stop(grace)      end streams  unary RPCs end   -           server

(1) spans still buffered, within the reserve. (2) a connection attempt still retrying.
Components start in this order (`app.build_components`) and close in reverse.

**The contract.** A component needs two things from the root scope, and both are explicit:
- its deadline: `drain_deadline`, set on every started component when the shutdown begins;
- supervision of its background tasks: it starts them with `spawn`, and whoever runs it is told
  through `supervise` (the `Lifecycle`, before `start`; a test, its own `Supervisor`) when one ends.
  A task that fails, or that ends on its own while the service runs (`until_stopped`), stops the
  service, named in a `component_failed` event; exit code FAILED (START_FAILED before the service
  was ever ready). Unsupervised (a test driving a component by hand), a failure is still logged
  (`background_task_failed`), never swallowed.
The exit code is decided in one place: `exit_code`, from the reasons the run recorded.

SIGUSR1 logs every live task with its await stack (`task_dump`) and changes nothing.
"""

from __future__ import annotations

import asyncio
import enum
import faulthandler
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Collection, Coroutine, Iterable, Sequence
from typing import Any, NoReturn, Protocol

from typing_extensions import override

from . import metrics
from .logs import flush_logs, log
from .phases import Phase
from .readiness import Readiness


class ExitCode(enum.IntEnum):
    """Process exit codes; documented in the README."""

    OK = 0
    """Clean shutdown: every phase finished within its deadline."""
    ERROR = 1
    """A component raised during a shutdown phase, or an unexpected error."""
    CONFIG = 2
    """Invalid configuration; nothing was started, no port was bound."""
    START_FAILED = 3
    """A component could not start (port in use, ...)."""
    DEADLINE = 4
    """SHUTDOWN_TIMEOUT passed; the work still running was cancelled and logged."""
    FORCED = 5
    """A second SIGTERM/SIGINT forced an immediate exit."""
    FAILED = 6
    """A component's background task failed (or ended) while serving; the service shut itself
    down."""


EXIT_PRECEDENCE = (
    ExitCode.FORCED,
    ExitCode.CONFIG,
    ExitCode.START_FAILED,
    ExitCode.FAILED,
    ExitCode.DEADLINE,
    ExitCode.ERROR,
)
"""When several reasons apply, the first of them in this order is the exit code."""

PHASE_OUTCOME_EXIT = {
    "ok": ExitCode.OK,
    "error": ExitCode.ERROR,
    "deadline_exceeded": ExitCode.DEADLINE,
}
"""What a shutdown phase's outcome adds to the reasons for the exit code."""


def exit_code(reasons: Collection[ExitCode]) -> ExitCode:
    """The exit code for everything that happened, the one place it is decided: OK without a
    reason, otherwise the first reason in `EXIT_PRECEDENCE` (a start that failed and then
    overran its shutdown exits START_FAILED, not DEADLINE)."""
    return next((code for code in EXIT_PRECEDENCE if code in reasons), ExitCode.OK)


class Supervisor(Protocol):
    """Told when a component's background task ends (see `Component.supervise`)."""

    def task_ended(
        self, component: Component, task: asyncio.Task[None], *, until_stopped: bool
    ) -> None:
        """`task` is done (cancelled, failed or returned); `until_stopped`: it was meant to run
        until the shutdown stops it, so returning on its own is a failure too."""


class ReportFailures:
    """The supervisor of a component nobody runs (a test driving it by hand): logs a failed
    task, so no error is swallowed; stops nothing."""

    def task_ended(
        self, component: Component, task: asyncio.Task[None], *, until_stopped: bool
    ) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error(
                "background_task_failed",
                component=component.name,
                task=task.get_name(),
                error=str(error) or repr(error),
            )


UNSUPERVISED = ReportFailures()


class Component:
    """One part of the service. Override `start` and the phases the part takes part in; mark each
    override `@override` (mypy's explicit-override makes a missing or misspelled one an error).

    Each phase method is awaited concurrently with the other components' and is cancelled when the
    shutdown deadline passes; `unfinished` names the tasks to report and cancel at that point.
    Background tasks are started with `spawn`, never bare `asyncio.create_task`: see the module's
    "contract".
    """

    name = "component"
    drain_deadline = math.inf
    """Event-loop time by which the drain phases must end: set when the shutdown begins, for
    components that bound their own waits by it (slow HTTP clients)."""

    def supervise(self, supervisor: Supervisor) -> None:
        """Report the ends of this component's background tasks to `supervisor`, before `start`
        (the `Lifecycle` does; a component nobody supervises only logs a failed task)."""
        self.__dict__["_supervisor"] = supervisor  # subclasses need not call Component.__init__

    def spawn(
        self, coroutine: Coroutine[Any, Any, None], name: str, *, until_stopped: bool = True
    ) -> asyncio.Task[None]:
        """Run a background task of this component, supervised: if it fails, or (`until_stopped`,
        the default: a loop meant to run until the shutdown stops it) returns while the service
        runs, the service shuts down. One-shot work (connecting) passes `until_stopped=False`."""
        task = asyncio.create_task(coroutine, name=f"{self.name}.{name}")
        supervisor: Supervisor = self.__dict__.get("_supervisor", UNSUPERVISED)
        task.add_done_callback(
            lambda done: supervisor.task_ended(self, done, until_stopped=until_stopped)
        )
        return task

    async def start(self) -> None:
        """Bind, connect, spawn. Raise to abort start-up (exit code START_FAILED)."""

    async def close_listeners(self) -> None:
        """Stop accepting new connections, RPCs or messages; keep serving the ones in flight."""

    async def end_streams(self) -> None:
        """Tell long-lived streams to end now: they never finish on their own."""

    async def drain(self) -> None:
        """Return once the work in flight has finished."""

    async def stop_tasks(self) -> None:
        """Stop background tasks (consumers); unfinished work must stay recoverable."""

    async def close(self) -> None:
        """Release sockets, pools and clients. Runs last, within the reserved budget."""

    def unfinished(self) -> Iterable[asyncio.Task[Any]]:
        """Tasks still doing work: reported with their stacks and cancelled at the deadline."""
        return ()

    def shutdown_report(self) -> dict[str, int]:
        """What the shutdown found and did (requests drained, messages left pending, ...):
        part of the `shutdown_complete` event."""
        return {}


def close_reserve(shutdown_timeout: float) -> float:
    """The part of SHUTDOWN_TIMEOUT kept for the `close` phase and the log flush."""
    return min(2.0, shutdown_timeout * 0.2)


EXIT_MARGIN = 0.1
"""Seconds kept after the `close` phase to flush the logs and leave the interpreter."""

CANCEL_GRACE = 0.5
"""Seconds a cancelled task gets to unwind before the shutdown moves on without it."""


def await_stack(task: asyncio.Task[Any]) -> list[str]:
    """The chain of awaits a task is suspended in, outermost first.

    `Task.get_stack()` gives a single frame for a suspended coroutine; following `cr_await`
    shows where it really waits (e.g. the handler's `asyncio.sleep`).
    """
    frames: list[str] = []
    awaitable: Any = task.get_coro()
    while awaitable is not None and len(frames) < 50:
        frame = next(
            (
                getattr(awaitable, attr)
                for attr in ("cr_frame", "ag_frame", "gi_frame")
                if getattr(awaitable, attr, None) is not None
            ),
            None,
        )
        if frame is None:
            if isinstance(awaitable, asyncio.Future):
                frames.append(f"awaiting {awaitable!r}"[:200])
            break
        code = frame.f_code
        frames.append(f"{code.co_filename}:{frame.f_lineno} in {code.co_qualname}")
        awaitable = next(
            (
                getattr(awaitable, attr)
                for attr in ("cr_await", "ag_await", "gi_yieldfrom")
                if getattr(awaitable, attr, None) is not None
            ),
            None,
        )
    return frames


MAX_DUMPED_TASKS = 1000
"""A task dump names at most this many tasks (a leak of tasks must not make it unbounded)."""


def live_tasks() -> list[dict[str, Any]]:
    """Every live task of the running loop, by name, with its await stack."""
    tasks = sorted(asyncio.all_tasks(), key=lambda task: task.get_name())[:MAX_DUMPED_TASKS]
    return [{"task": task.get_name(), "stack": await_stack(task)} for task in tasks]


class Lifecycle(Supervisor):
    """Runs components from start to exit, and supervises their background tasks; see the module
    docstring for the phases and the contract."""

    def __init__(
        self,
        components: Sequence[Component],
        readiness: Readiness,
        *,
        drain_delay: float,
        shutdown_timeout: float,
        exit_now: Callable[[int], NoReturn] = os._exit,
    ) -> None:
        self._components = list(components)
        for component in self._components:
            component.supervise(self)
        self._failure: str | None = None
        """The component whose background task failed while the service ran, if one did."""
        self._start_failed = False
        self._readiness = readiness
        self._drain_delay = drain_delay
        self._shutdown_timeout = shutdown_timeout
        self._exit_now = exit_now
        self._started: list[Component] = []
        self._stop_requested = asyncio.Event()
        self._stop_requested_at: float | None = None
        self._exit_deadline = float("inf")
        self._watchdog_disarmed = threading.Event()
        self.phases: list[dict[str, Any]] = []
        """What each shutdown phase did: name, duration_s, outcome (for logs and tests)."""
        self.unfinished: list[dict[str, Any]] = []
        """The tasks cancelled at the deadline: phase, task name, stack."""

    # -- signals ---------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop, signum)
        loop.add_signal_handler(signal.SIGUSR1, self.dump_tasks)

    def remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
            loop.remove_signal_handler(signum)

    def dump_tasks(self) -> None:
        """Log what every task is waiting for; the service carries on."""
        log.info("task_dump", tasks=live_tasks())

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """First call starts the shutdown; a second one exits at once."""
        name = signal.Signals(signum).name
        if self._stop_requested_at is not None:
            log.error("forced_exit", signal=name, exit_code=int(ExitCode.FORCED))
            flush_logs()
            self._exit_now(ExitCode.FORCED)
        log.info("shutdown_requested", signal=name, shutdown_timeout_s=self._shutdown_timeout)
        self._begin_stop()

    @override
    def task_ended(
        self, component: Component, task: asyncio.Task[None], *, until_stopped: bool
    ) -> None:
        """A background task failed, or returned before a shutdown while meant to run until one:
        report it and, unless already stopping, shut down (exit FAILED)."""
        if task.cancelled():
            return
        stopping = self._stop_requested_at is not None
        if (error := task.exception()) is not None:
            reason = str(error) or repr(error)
        elif until_stopped and not stopping:
            reason = "ended while the service was running"
        else:
            return
        log.error("component_failed", component=component.name, task=task.get_name(), error=reason)
        if not stopping:
            self._failure = component.name
            self._begin_stop()

    def _begin_stop(self) -> None:
        self._stop_requested_at = asyncio.get_running_loop().time()
        metrics.shutdown_began(self._shutdown_timeout)
        self._start_watchdog()
        self._stop_requested.set()

    def _start_watchdog(self) -> None:
        """Exit even if the event loop is blocked (a handler calling `time.sleep`, say)."""

        def watch() -> None:
            if self._watchdog_disarmed.wait(self._shutdown_timeout):
                return
            sys.stderr.write("shutdown deadline passed, event loop blocked; thread stacks:\n")
            faulthandler.dump_traceback(all_threads=True)
            flush_logs()
            self._exit_now(ExitCode.DEADLINE)

        threading.Thread(target=watch, name="shutdown-watchdog", daemon=True).start()

    # -- the whole life ---------------------------------------------------------------------------

    async def run(self) -> ExitCode:
        """Start every component, serve until a signal, shut down. Returns the exit code."""
        self.install_signal_handlers()
        metrics.LIFECYCLE_PHASE.state(Phase.STARTING)
        try:
            starting = asyncio.create_task(self._start_all(), name="lifecycle.start")
            stop = asyncio.create_task(self._stop_requested.wait(), name="lifecycle.wait")
            await asyncio.wait({starting, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not starting.done():  # stopped during start-up: never ready, so no drain delay
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
                return await self.shutdown(drain_delay=0.0)
            if error := starting.exception():
                stop.cancel()
                failed = self._components[len(self._started)].name
                log.error("start_failed", component=failed, error=str(error) or repr(error))
                self._start_failed = True
                self._begin_stop()
                return await self.shutdown(drain_delay=0.0)
            log.info("service_started", components=[c.name for c in self._started])
            metrics.LIFECYCLE_PHASE.state(Phase.SERVING)
            await stop
            return await self.shutdown(drain_delay=self._drain_delay)
        finally:
            self._watchdog_disarmed.set()

    async def _start_all(self) -> None:
        for component in self._components:
            await component.start()
            self._started.append(component)
        await self._readiness.mark_started()

    async def shutdown(self, *, drain_delay: float) -> ExitCode:
        """The shutdown sequence, top to bottom. Every phase is logged with its duration."""
        loop = asyncio.get_running_loop()
        begun = self._stop_requested_at if self._stop_requested_at is not None else loop.time()
        exit_deadline = self._exit_deadline = begun + self._shutdown_timeout - EXIT_MARGIN
        drain_deadline = begun + self._shutdown_timeout - close_reserve(self._shutdown_timeout)
        drain_delay = min(drain_delay, max(0.0, drain_deadline - loop.time()))
        parts, until = self._started, drain_deadline
        for component in parts:
            component.drain_deadline = drain_deadline

        readiness_off = [("readiness", self._readiness.shut_down())]
        await self._phase(Phase.READINESS_OFF, readiness_off, until)
        await self._phase(Phase.DRAIN_DELAY, [("sleep", asyncio.sleep(drain_delay))], until)
        listeners = [(c.name, c.close_listeners()) for c in parts]
        await self._phase(Phase.CLOSE_LISTENERS, listeners, until)
        await self._phase(Phase.END_STREAMS, [(c.name, c.end_streams()) for c in parts], until)
        await self._phase(Phase.DRAIN_IN_FLIGHT, [(c.name, c.drain()) for c in parts], until)
        await self._phase(Phase.STOP_TASKS, [(c.name, c.stop_tasks()) for c in parts], until)
        closing = [(c.name, c.close()) for c in reversed(parts)]
        await self._phase(Phase.CLOSE, closing, exit_deadline)

        code = exit_code(self._exit_reasons())
        metrics.LIFECYCLE_PHASE.state(Phase.STOPPED)
        log.info(
            "shutdown_complete",
            exit_code=int(code),
            duration_s=round(loop.time() - begun, 3),
            phases=self.phases,
            drained={c.name: report for c in parts if (report := c.shutdown_report())},
            unfinished=self.unfinished,
        )
        return code

    def _exit_reasons(self) -> set[ExitCode]:
        """Everything that happened that decides the exit code (see `exit_code`)."""
        reasons = {PHASE_OUTCOME_EXIT[phase["outcome"]] for phase in self.phases}
        if self._start_failed:
            reasons.add(ExitCode.START_FAILED)
        if self._failure:  # not ready yet: start-up failed; ready before: failed while serving
            reasons.add(ExitCode.FAILED if self._readiness.was_ready else ExitCode.START_FAILED)
        return reasons

    async def _phase(
        self,
        phase: Phase,
        steps: list[tuple[str, Coroutine[Any, Any, None]]],
        deadline: float,
    ) -> None:
        """Run a phase's steps concurrently; past `deadline`, report and cancel what still runs."""
        name = phase.value
        loop = asyncio.get_running_loop()
        begun = loop.time()
        metrics.LIFECYCLE_PHASE.state(phase)
        tasks = {asyncio.create_task(step, name=f"{name}:{owner}"): owner for owner, step in steps}
        pending: set[asyncio.Task[None]] = set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - begun))
        outcome = "ok"
        if pending:
            outcome = "deadline_exceeded"
            await self._cancel_unfinished(name, pending)
        for task in tasks:
            if task.done() and not task.cancelled() and (error := task.exception()):
                outcome = "error" if outcome == "ok" else outcome
                log.error("shutdown_step_failed", phase=name, step=tasks[task], error=repr(error))
        duration = round(loop.time() - begun, 3)
        self.phases.append({"phase": name, "duration_s": duration, "outcome": outcome})
        metrics.SHUTDOWN_PHASE_DURATION.labels(name).set(duration)
        report = log.info if outcome == "ok" else log.warning
        report("shutdown_phase", phase=name, duration_s=duration, outcome=outcome)

    async def _cancel_unfinished(self, phase: str, steps: set[asyncio.Task[None]]) -> None:
        """Name every task that did not finish, with the stack it hung in, then cancel it."""
        work = [task for c in self._started for task in c.unfinished() if not task.done()]
        hung = [*work, *steps]
        for task in hung:
            entry = {"phase": phase, "task": task.get_name(), "stack": await_stack(task)}
            self.unfinished.append(entry)
            log.error("task_unfinished", **entry)
            task.cancel()
        grace = min(CANCEL_GRACE, self._exit_deadline - asyncio.get_running_loop().time())
        _, still_running = await asyncio.wait(hung, timeout=max(0.05, grace))
        for task in still_running:
            log.error("task_ignored_cancel", phase=phase, task=task.get_name())
