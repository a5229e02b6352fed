"""Errors a handler raises on purpose, each with its HTTP status and gRPC code.

The HTTP routes (`http_server.Routes`) and the gRPC handler wrapper (`grpc_server.RpcTracker`)
translate them, so handlers never build error responses themselves and bad input never becomes a
500.
"""

from __future__ import annotations

from collections.abc import Mapping

_DEPENDENCY_FAILURES: list[type[BaseException]] = [ConnectionError]
"""What a lost or unreachable dependency raises (a refused or reset connection; the dependency
modules add their drivers' errors): answered 503 / UNAVAILABLE with a generic message, since a
retry can succeed, and logged with the detail."""
DEPENDENCY_FAILED = "a dependency of the service failed, retry later"


def dependency_failures(*errors: type[BaseException]) -> None:
    """Declare what a dependency's driver raises when the dependency is lost or unreachable."""
    _DEPENDENCY_FAILURES.extend(error for error in errors if error not in _DEPENDENCY_FAILURES)


def is_dependency_failure(error: BaseException) -> bool:
    """Whether `error` is a dependency's failure, or was raised while one was being handled
    (asyncpg's `Transaction.__aexit__` raises InterfaceError over a connection lost inside it)."""
    failures = tuple(_DEPENDENCY_FAILURES)
    cause: BaseException | None = error
    for _ in range(8):  # a chain is short; a cycle must not loop
        if cause is None:
            return False
        if isinstance(cause, failures):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


class ServiceError(Exception):
    http_status = 500
    grpc_code = "INTERNAL"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.message = message
        self.field = field


class InvalidArgumentError(ServiceError):
    """Bad input from the caller; `field` names what to fix (`violations`: each field's problem,
    when there are several)."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"

    def __init__(
        self, field: str, problem: str, violations: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(problem, field)
        self.violations = dict(violations) if violations else {field: problem}


class NotFoundError(ServiceError):
    http_status = 404
    grpc_code = "NOT_FOUND"


class UnavailableError(ServiceError):
    """A dependency is not connected yet, or is closing: retry elsewhere or later."""

    http_status = 503
    grpc_code = "UNAVAILABLE"


class UnsupportedMediaTypeError(ServiceError):
    """A body the endpoint does not read (not `application/json` in UTF-8)."""

    http_status = 415
    grpc_code = "INVALID_ARGUMENT"

    def __init__(self, problem: str) -> None:
        super().__init__(problem, "Content-Type")


class OverloadedError(ServiceError):
    """Too much work in flight: refused at once rather than queued; retry later or elsewhere."""

    http_status = 503
    grpc_code = "RESOURCE_EXHAUSTED"
