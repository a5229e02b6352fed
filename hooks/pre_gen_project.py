"""Refuse bad answers before a single file is written.

This file is a Jinja template: cookiecutter renders it, then runs it. The answers arrive as data,
a JSON document in a raw string (Jinja's `tojson` escapes ' < > &, so no answer can end the
string); no answer is ever pasted into Python source. Unrendered (as the template's own tests
import it) the string is not JSON, so it is only parsed when the hook runs.

Every rule is one row of CHECKS: (field, check). A check takes the field's value and all the
answers and returns None or a problem. A new option adds rows (and, for a port, a PORTS entry);
no other code changes. All problems are reported at once, one line each, naming the field.
"""

from __future__ import annotations

import json
import keyword
import re
import sys
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

ANSWERS_JSON = r'''{{ cookiecutter | tojson }}'''  # fmt: skip

Answers = Mapping[str, Any]
Check = Callable[[Any, Answers], "str | None"]

YES_NO = ("yes", "no")
PYTHON_VERSIONS = ("3.11", "3.12", "3.13")
SERVICE_NAME_MAX = 40  # DNS-1035 allows 63: room for Kubernetes suffixes such as "-migrate"
TEXT_MAX = 200
PORT_MIN, PORT_MAX = 1024, 65535
SHUTDOWN_TIMEOUT_MAX = 3600

# Port answer -> the yes/no option that turns its listener on (None: always on). Ports that
# are on together must differ.
PORTS: dict[str, str | None] = {
    "http_port": None,
    "grpc_port": "use_grpc",
    "metrics_port": None,
}

# Top-level modules the generated service (or its tooling) imports: a package of the same name
# would shadow them.
DEPENDENCY_MODULES = frozenset(
    {
        "aiohttp",
        "asyncpg",
        "bench",
        "google",
        "grpc",
        "grpc_health",
        "grpc_reflection",
        "grpc_status",
        "grpc_tools",
        "hatch_build",
        "hatchling",
        "multidict",
        "mypy",
        "opentelemetry",
        "prometheus_client",
        "pydantic",
        "pydantic_core",
        "pydantic_settings",
        "pytest",
        "pytest_asyncio",
        "pytest_timeout",
        "redis",
        "structlog",
        "tests",
        "yarl",
    }
)
# Standard-library names of the newer Pythons the service supports, in case the hook runs on an
# older one (sys.stdlib_module_names is the running interpreter's).
EXTRA_STDLIB_MODULES = frozenset({"_colorize", "_pyrepl"})
EXTRA_SOFT_KEYWORDS = frozenset({"_", "case", "match", "type"})

DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
PACKAGE = re.compile(r"[a-z_][a-z0-9_]*")
DIGITS = re.compile(r"0|[1-9][0-9]*")


def as_int(value: Any) -> int | None:
    """The answer as an int if it is written as digits only (no sign, point, exponent, bool)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and DIGITS.fullmatch(value):
        return int(value)
    return None


def not_int(value: Any) -> str:
    return f"must be a whole number written as digits only, without leading zeros (got {value!r})"


def service_name(value: Any, _: Answers) -> str | None:
    if not isinstance(value, str) or not DNS_1035.fullmatch(value):
        return (
            f"{value!r} is not a DNS-1035 label: lowercase letters, digits and '-', "
            "starting with a letter and not ending with '-'"
        )
    if len(value) > SERVICE_NAME_MAX:
        return (
            f"{value!r} is {len(value)} characters; at most {SERVICE_NAME_MAX} leaves room for "
            "Kubernetes name suffixes such as '-migrate' within the 63-character limit"
        )
    return None


def package_name(value: Any, _: Answers) -> str | None:
    if not isinstance(value, str) or not PACKAGE.fullmatch(value):
        return (
            f"{value!r} is not a lowercase Python identifier "
            "(letters a-z, digits and '_', not starting with a digit)"
        )
    if keyword.iskeyword(value) or value in set(keyword.softkwlist) | EXTRA_SOFT_KEYWORDS:
        return f"{value!r} is a Python keyword"
    if value in sys.stdlib_module_names or value in EXTRA_STDLIB_MODULES:
        return f"{value!r} would shadow the standard-library module of that name"
    if value in DEPENDENCY_MODULES:
        return f"{value!r} would shadow the dependency module of that name"
    return None


def one_line_text(value: Any, _: Answers) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "must not be empty"
    if any(unicodedata.category(char) in {"Cc", "Cs", "Zl", "Zp"} for char in value):
        return "must be one line without control characters"
    if len(value) > TEXT_MAX:
        return f"is {len(value)} characters; at most {TEXT_MAX}"
    return None


def needs(*options: str) -> Check:
    """A yes/no option that only works with other options also answered "yes"."""

    def check(value: Any, answers: Answers) -> str | None:
        missing = [option for option in options if answers.get(option) != "yes"]
        if value == "yes" and missing:
            return f"'yes' needs {' and '.join(f'{option}=yes' for option in missing)}"
        return None

    return check


def redis_serves_postgres(value: Any, answers: Answers) -> str | None:
    """Redis holds the items' cache and event stream: without PostgreSQL nothing would use it."""
    if value == "yes" and answers.get("use_postgres") != "yes":
        return (
            "'yes' needs use_postgres=yes: Redis serves the item cache and the event stream of "
            "the PostgreSQL items; without them the service would have a Redis client and "
            "settings nothing uses (answer use_redis=no)"
        )
    return None


def one_of(*choices: str) -> Check:
    def check(value: Any, _: Answers) -> str | None:
        if value not in choices:
            return f"must be one of {', '.join(choices)} (got {value!r})"
        return None

    return check


def port(value: Any, _: Answers) -> str | None:
    number = as_int(value)
    if number is None:
        return not_int(value)
    if not PORT_MIN <= number <= PORT_MAX:
        return (
            f"{number} is outside {PORT_MIN}-{PORT_MAX} "
            f"(a non-root container cannot bind ports below {PORT_MIN})"
        )
    return None


def int_between(low: int, high: int | None = None) -> Check:
    def check(value: Any, _: Answers) -> str | None:
        number = as_int(value)
        if number is None:
            return not_int(value)
        if number < low or (high is not None and number > high):
            bound = f"at least {low}" if high is None else f"between {low} and {high}"
            return f"must be {bound} (got {number})"
        return None

    return check


def distinct_port(field: str) -> Check:
    """The port must differ from every port listed before it in PORTS that is also on."""

    def check(value: Any, answers: Answers) -> str | None:
        number = as_int(value)
        if number is None or not _port_on(field, answers):
            return None
        names = list(PORTS)
        for other in names[: names.index(field)]:
            if _port_on(other, answers) and as_int(answers.get(other)) == number:
                return f"{number} is also {other}; each listener needs its own port"
        return None

    return check


def _port_on(name: str, answers: Answers) -> bool:
    option = PORTS[name]
    return option is None or answers.get(option) == "yes"


SHUTDOWN_TIMEOUT = int_between(1, SHUTDOWN_TIMEOUT_MAX)


def drain_below_timeout(value: Any, answers: Answers) -> str | None:
    timeout_value = answers.get("shutdown_timeout_seconds")
    if SHUTDOWN_TIMEOUT(timeout_value, answers) is not None:
        return None  # reported on its own row
    drain, timeout = as_int(value), as_int(timeout_value)
    if drain is None or timeout is None or drain < timeout:
        return None
    return (
        f"drain_delay_seconds ({drain}) must be smaller than shutdown_timeout_seconds "
        f"({timeout}): the drain delay is part of the shutdown"
    )


CHECKS: list[tuple[str, Check]] = [
    ("service_name", service_name),
    ("package_name", package_name),
    ("description", one_line_text),
    ("author", one_line_text),
    ("python_version", one_of(*PYTHON_VERSIONS)),
    ("use_grpc", one_of(*YES_NO)),
    ("use_postgres", one_of(*YES_NO)),
    ("use_postgres", needs("use_redis")),
    ("use_redis", one_of(*YES_NO)),
    ("use_redis", redis_serves_postgres),
    ("use_consumer", one_of(*YES_NO)),
    ("use_consumer", needs("use_postgres", "use_redis")),
    ("use_tracing", one_of(*YES_NO)),
    ("use_uvloop", one_of(*YES_NO)),
    ("http_port", port),
    ("http_port", distinct_port("http_port")),
    ("grpc_port", port),
    ("grpc_port", distinct_port("grpc_port")),
    ("metrics_port", port),
    ("metrics_port", distinct_port("metrics_port")),
    ("drain_delay_seconds", int_between(0)),
    ("shutdown_timeout_seconds", SHUTDOWN_TIMEOUT),
    ("drain_delay_seconds", drain_below_timeout),
]


def problems(answers: Answers) -> list[str]:
    """One line per problem, `field: what is wrong`, in CHECKS order; missing fields once."""
    found: list[str] = []
    missing: set[str] = set()
    for field, check in CHECKS:
        if field not in answers:
            if field not in missing:
                missing.add(field)
                found.append(f"{field}: missing")
            continue
        problem = check(answers[field], answers)
        if problem is not None:
            found.append(f"{field}: {problem}")
    return found


def main() -> int:
    found = problems(json.loads(ANSWERS_JSON))
    for line in found:
        print(f"ERROR: {line}", file=sys.stderr)
    if found:
        print(f"ERROR: {len(found)} invalid answer(s); nothing was generated.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
