"""The update path: a service baked with cruft and extended as its README says follows the
template to a new version with `make update` (cruft update), and still passes its own checks.

Version A is this template as it is, committed into a git repository of its own; the service is
baked from it with `cruft create`, given a feature of its own (an HTTP endpoint, an RPC with a new
.proto, a consumer handler, a migration, a test and a README row) and committed. Version B then
changes the platform (the lifecycle, the Dockerfile, a new setting with its README row). `make
update` in the service must merge B without a conflict, keep every line the service wrote, and
leave a project whose `make test` (uv.lock check, ruff, mypy --strict, then a fast pytest subset
with the service's own test) passes.

Slow (two installs of the service from its lock, mypy over the whole project): a few minutes.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.support import REPO_ROOT, check_ok, clean_env, load_hook, run, text_files

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
SERVICE = "shop"
PACKAGE = "shop"
GIT_TIMEOUT = 60
MAKE_TIMEOUT = 900
# Not part of the template: the checkout's own git data, virtualenvs, caches, bakes.
NOT_TEMPLATE = shutil.ignore_patterns(
    ".git", ".venv", ".uv", "build", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"
)
# The fast subset of the service's tests run after the update: its own, then platform unit tests.
PYTEST_SUBSET = (
    "tests/test_tickets.py tests/test_settings.py tests/test_lifecycle.py tests/test_http_api.py"
)
CONFLICT = re.compile(r"^(<{7}|>{7})( |$)", flags=re.MULTILINE)

# -- The service's own feature, written as the generated README's "Extending" says ---------------

FEATURE_FILES: dict[str, str] = {
    f"src/{PACKAGE}/tickets/__init__.py": '''\
"""The tickets feature: the service's own code, added after the bake."""
''',
    f"src/{PACKAGE}/tickets/routes.py": '''\
"""`GET /v1/tickets/{ticket_id}`: the tickets feature's HTTP route."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from ..platform.errors import InvalidArgumentError
from ..platform.http_server import HttpRoutes, Routes
from ..platform.openapi import Doc, parameter


class Ticket(BaseModel):
    id: int
    status: str


TICKET = Doc(
    "One ticket.",
    {200: ("The ticket.", Ticket), 400: ("A bad id, named.", None)},
    parameters=(parameter("ticket_id", "path", {"type": "integer"}, "The ticket's id."),),
)


def ticket_routes() -> HttpRoutes:
    async def get_ticket(request: web.Request) -> web.Response:
        ticket_id = request.match_info["ticket_id"]
        if not (ticket_id.isascii() and ticket_id.isdigit()):
            raise InvalidArgumentError("ticket_id", "must be a number")
        return web.json_response(Ticket(id=int(ticket_id), status="open").model_dump())

    def add(routes: Routes) -> None:
        routes.get("/v1/tickets/{ticket_id}", get_ticket, doc=TICKET)

    return add
''',
    f"proto/{PACKAGE}/v1/tickets.proto": f"""\
// The tickets feature's RPC.
syntax = "proto3";

package {PACKAGE}.v1;

service TicketService {{
  rpc GetTicket(GetTicketRequest) returns (Ticket);
}}

message GetTicketRequest {{
  uint64 id = 1;
}}

message Ticket {{
  uint64 id = 1;
  string status = 2;
}}
""",
    f"src/{PACKAGE}/tickets/rpc.py": '''\
"""`TicketService` (proto/{package}/v1/tickets.proto): the tickets feature over gRPC."""

from __future__ import annotations

import grpc
{override_import}
from ..platform.grpc_server import GrpcService
from ..v1 import tickets_pb2, tickets_pb2_grpc


class TicketService(tickets_pb2_grpc.TicketServiceServicer):
{override}    async def GetTicket(  # noqa: N802 - names come from the proto
        self,
        request: tickets_pb2.GetTicketRequest,
        context: grpc.aio.ServicerContext[tickets_pb2.GetTicketRequest, tickets_pb2.Ticket],
    ) -> tickets_pb2.Ticket:
        return tickets_pb2.Ticket(id=request.id, status="open")


def ticket_service() -> GrpcService:
    def register(server: grpc.aio.Server) -> str:
        tickets_pb2_grpc.add_TicketServiceServicer_to_server(TicketService(), server)
        return str(tickets_pb2.DESCRIPTOR.services_by_name["TicketService"].full_name)

    return register
''',
    f"src/{PACKAGE}/tickets/effects.py": '''\
"""The tickets feature's consumer effect: a `ticket.opened` event records the ticket."""

from __future__ import annotations

from typing import Any

from ..platform.db import Connection

TICKET_OPENED = "ticket.opened"


async def on_ticket_opened(connection: Connection, payload: dict[str, Any]) -> None:
    """Idempotent: a redelivered event finds its row there already."""
    await connection.execute(
        "INSERT INTO tickets (id, status) VALUES ($1, 'open') ON CONFLICT (id) DO NOTHING",
        int(payload["id"]),
    )
''',
    f"src/{PACKAGE}/tickets/feature.py": '''\
"""The tickets feature as app.py lists it: its routes, its RPC and its migrations."""

from __future__ import annotations

from pathlib import Path

from ..platform.assembly import Assembly, Feature
from ..platform.grpc_server import GrpcServices
from .routes import ticket_routes
from .rpc import ticket_service


def _wire(assembly: Assembly) -> None:
    assembly.http_routes.append(ticket_routes())
    assembly[GrpcServices].append(ticket_service())


TICKETS = Feature("tickets", wire=_wire, migrations=(Path(__file__).parent / "migrations",))
''',
    f"src/{PACKAGE}/tickets/migrations/0101_tickets.sql": """\
-- The tickets feature's table.
CREATE TABLE tickets (
    id bigint PRIMARY KEY,
    status text NOT NULL
);
""",
    "tests/test_tickets.py": f'''\
"""The tickets feature: its route in-process, its RPC and effect called, its migration listed."""

from __future__ import annotations

from typing import Any, cast

from aiohttp.test_utils import TestClient, TestServer

from {PACKAGE} import app
from {PACKAGE}.platform.db import Connection
from {PACKAGE}.platform.http_server import create_app
from {PACKAGE}.platform.inflight import InFlight
from {PACKAGE}.platform.migrations import migration_files
from {PACKAGE}.platform.readiness import Readiness
from {PACKAGE}.platform.settings import Settings
from {PACKAGE}.tickets.effects import on_ticket_opened
from {PACKAGE}.tickets.routes import ticket_routes
from {PACKAGE}.tickets.rpc import TicketService
from {PACKAGE}.v1 import tickets_pb2

async def test_get_ticket_over_http() -> None:
    web_app = create_app(Settings(), Readiness(), InFlight(), [ticket_routes()])
    async with TestClient(TestServer(web_app)) as client:
        found = await client.get("/v1/tickets/7")
        assert (found.status, await found.json()) == (200, {{"id": 7, "status": "open"}})
        bad = await client.get("/v1/tickets/seven")
        assert (bad.status, (await bad.json())["field"]) == (400, "ticket_id")
        document = await (await client.get("/openapi.json")).json()
        assert "/v1/tickets/{{ticket_id}}" in document["paths"]


async def test_get_ticket_over_grpc() -> None:
    request = tickets_pb2.GetTicketRequest(id=7)
    reply = await TicketService().GetTicket(request, cast(Any, None))  # unused context
    assert (reply.id, reply.status) == (7, "open")


class RecordingConnection:
    def __init__(self) -> None:
        self.executed: list[tuple[str, tuple[Any, ...]]] = []

    async def execute(self, query: str, *args: Any) -> str:
        self.executed.append((query, args))
        return "INSERT 0 1"


async def test_ticket_opened_inserts_the_ticket() -> None:
    connection = RecordingConnection()
    await on_ticket_opened(cast(Connection, connection), {{"id": 3}})
    ((query, args),) = connection.executed
    assert query.startswith("INSERT INTO tickets")
    assert args == (3,)


def test_the_migration_comes_after_the_platform_and_items() -> None:
    versions = [path.stem for path in migration_files(app.MIGRATIONS)]
    assert versions[0] == "0000_outbox"
    assert versions[-1] == "0101_tickets"
''',
}
README_ROW = "| `GET /v1/tickets/{ticket_id}` | one ticket (the tickets feature) |"

# -- Version B of the template: a platform change -------------------------------------------------

B_LIFECYCLE = '''

def shutdown_summary(phases: list[dict[str, object]]) -> str:
    """One line naming each shutdown phase with its duration (template version B)."""
    return ", ".join(f"{phase['phase']}={phase['duration_s']}s" for phase in phases)
'''
B_SETTING = (
    "    shutdown_summary_log: bool = Field(\n"
    '        default=True, description="Log one line summing up the shutdown (version B)."\n'
    "    )\n"
)
B_README_ROW = "| `SHUTDOWN_SUMMARY_LOG` | `true` | one `shutdown_summary` log line at exit |\n"
B_DOCKERFILE = (
    "\n# Template version B.\n"
    'LABEL org.opencontainers.image.title="{{ cookiecutter.service_name }}"\n'
)


def environment(tmp_path: Path) -> dict[str, str]:
    """The children's environment: git and cookiecutter configured under tmp_path only."""
    config = tmp_path / "cookiecutter.yaml"
    config.write_text(
        f"cookiecutters_dir: {json.dumps(str(tmp_path / 'cc'))}\n"
        f"replay_dir: {json.dumps(str(tmp_path / 'replay'))}\n",
        encoding="utf-8",
    )
    (tmp_path / "gitconfig").write_text("", encoding="utf-8")
    return clean_env(
        COOKIECUTTER_CONFIG=str(config),
        GIT_CONFIG_GLOBAL=str(tmp_path / "gitconfig"),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="Template Test",
        GIT_AUTHOR_EMAIL="template-test@example.invalid",
        GIT_COMMITTER_NAME="Template Test",
        GIT_COMMITTER_EMAIL="template-test@example.invalid",
    )


def git(repo: Path, env: dict[str, str], *args: str) -> str:
    result = run(["git", *args], cwd=repo, env=env, timeout=GIT_TIMEOUT)
    check_ok(result, f"git {' '.join(args)} in {repo.name}")
    return result.stdout


def make(project: Path, env: dict[str, str], *targets: str, **variables: str) -> None:
    """`make TARGET...` in the service, as its README says (it finds its own Python)."""
    cmd = ["make", "--no-print-directory", *targets, *(f"{k}={v}" for k, v in variables.items())]
    check_ok(run(cmd, cwd=project, env=env, timeout=MAKE_TIMEOUT), " ".join(cmd))


def edit(path: Path, change: str, old: str, new: str) -> None:
    """Replace the first match of the regex `old`; a missing anchor names the file."""
    text = path.read_text(encoding="utf-8")
    changed, found = re.subn(old, new, text, count=1, flags=re.MULTILINE)
    assert found == 1, f"{change}: {old!r} not found in {path} (update this test's snippet)"
    path.write_text(changed, encoding="utf-8")


def insert_before_line(path: Path, change: str, marker: str, line: str) -> None:
    """Insert `line` before the first line containing `marker`, at that line's indentation."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    index = next((i for i, text in enumerate(lines) if marker in text), None)
    assert index is not None, f"{change}: no {marker!r} in {path} (update this test's snippet)"
    indent = lines[index][: len(lines[index]) - len(lines[index].lstrip())]
    lines.insert(index, f"{indent}{line}\n")
    path.write_text("".join(lines), encoding="utf-8")


def extend_the_service(project: Path, env: dict[str, str]) -> None:
    """What a user does: a feature module, its .proto, a handler, a migration, a test, a row."""
    echo_rpc = (project / f"src/{PACKAGE}/echo/rpc.py").read_text(encoding="utf-8")
    override_import, override = "", ""
    if "@override" in echo_rpc:  # explicit overrides: servicer methods say so
        found = re.search(r"^from (typing_extensions|typing) import .*\boverride\b", echo_rpc, re.M)
        assert found, "echo/rpc.py uses @override without importing it from typing(_extensions)"
        override_import, override = f"from {found.group(1)} import override\n", "    @override\n"
    for name, text in FEATURE_FILES.items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith("/rpc.py"):
            text = text.format(package=PACKAGE, override_import=override_import, override=override)
        path.write_text(text, encoding="utf-8")

    app_py = project / f"src/{PACKAGE}/app.py"
    imports = (
        "from .tickets.effects import TICKET_OPENED, on_ticket_opened\n"
        "from .tickets.feature import TICKETS\n"
    )
    # Anywhere among the imports: `ruff check --fix` below sorts them in.
    edit(app_py, "imports", r"^(from __future__ import annotations\n)", r"\1" + imports)
    # Last in the list: it adds its RPC to the gRPC server's, listed before it.
    insert_before_line(app_py, "feature", "return features", "features.append(TICKETS)")
    edit(
        app_py,
        "consumer handler",
        r"ITEM_CREATED: on_item_created(?!\w)",
        "ITEM_CREATED: on_item_created, TICKET_OPENED: on_ticket_opened",
    )
    ast.parse(app_py.read_text(encoding="utf-8"))
    edit(
        project / "README.md",
        "README row",
        r"^(\| HTTP \| what it does \|\n\|---\|---\|\n)",
        r"\1" + README_ROW + "\n",
    )
    # Formatted and the imports sorted (`make format`: ruff check --fix, ruff format), with the
    # same pinned ruff as the template's.
    for args in (["format", "."], ["check", "--fix", "."], ["format", "."]):
        check_ok(run([BIN / "ruff", *args], cwd=project, env=env), f"ruff {' '.join(args)}")


def advance_the_template(template: Path) -> None:
    """Version B: the lifecycle, the Dockerfile, a new platform setting and its README row."""
    service = template / "{{cookiecutter.service_name}}"
    platform = service / "src" / "{{cookiecutter.package_name}}" / "platform"
    lifecycle = platform / "lifecycle.py"
    lifecycle.write_text(lifecycle.read_text(encoding="utf-8") + B_LIFECYCLE, encoding="utf-8")
    # Before the first field of `class Settings` (after its docstring and model_config).
    field = r"    [a-z_]\w*: [^=\n]+ = "
    edit(
        platform / "settings.py",
        "setting",
        rf"^(class Settings\(.*\n(?:(?!{field}).*\n)*?)(?={field})",
        r"\1" + B_SETTING,
    )
    edit(
        service / "README.md",
        "README config row",
        r"^(\| variable \| default \| meaning \|\n\|---\|---\|---\|\n)",
        r"\1" + B_README_ROW,
    )
    dockerfile = service / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text(encoding="utf-8") + B_DOCKERFILE, encoding="utf-8")


@pytest.mark.timeout(1800)
def test_a_baked_and_extended_service_takes_a_platform_update(tmp_path: Path) -> None:
    env = environment(tmp_path)

    # Version A: this template, in a git repository of its own.
    template = tmp_path / "template"
    shutil.copytree(REPO_ROOT, template, ignore=NOT_TEMPLATE)
    git(template, env, "init", "-q", "-b", "main")
    git(template, env, "add", "-A")
    git(template, env, "commit", "-q", "-m", "version A")
    version_a = git(template, env, "rev-parse", "HEAD").strip()

    # Baked with cruft, as the template's README says; the service is a git repository.
    out = tmp_path / "out"
    created = run(
        [
            BIN / "cruft",
            "create",
            "--no-input",
            "--output-dir",
            out,
            "--extra-context",
            json.dumps({"service_name": SERVICE}),
            template,
        ],
        env=env,
        timeout=300,
    )
    check_ok(created, "cruft create")
    project = out / SERVICE
    state = json.loads((project / ".cruft.json").read_text(encoding="utf-8"))
    assert (state["template"], state["commit"]) == (str(template), version_a)
    assert state["context"]["cookiecutter"]["service_name"] == SERVICE
    replay = json.loads((project / ".cookiecutter.json").read_text(encoding="utf-8"))
    assert "_commit" not in replay["cookiecutter"]  # the replay file stays the same on updates
    git(project, env, "init", "-q", "-b", "main")
    git(project, env, "add", "-A")
    git(project, env, "commit", "-q", "-m", "baked")

    extend_the_service(project, env)
    git(project, env, "add", "-A")
    git(project, env, "commit", "-q", "-m", "the tickets feature")
    ours = {name: (project / name).read_text(encoding="utf-8") for name in FEATURE_FILES}
    app_py = (project / f"src/{PACKAGE}/app.py").read_text(encoding="utf-8")

    # Version B changes the platform; the service is now behind.
    advance_the_template(template)
    git(template, env, "commit", "-q", "-am", "version B: a platform change")
    version_b = git(template, env, "rev-parse", "HEAD").strip()
    behind = run([BIN / "cruft", "check", "--project-dir", project], env=env, timeout=120)
    assert behind.returncode == 1, behind.stdout + behind.stderr
    assert "out of date" in behind.stdout

    # `make update`: installs from the lock, then cruft merges A..B in.
    make(project, env, "update")

    unmerged = git(project, env, "diff", "--name-only", "--diff-filter=U")
    assert unmerged == "", f"conflicts in {unmerged}"
    files = [p for p in text_files(project) if ".uv" not in p.relative_to(project).parts]
    assert [p for p in project.rglob("*.rej") if ".venv" not in p.parts] == []
    markers = [str(p.relative_to(project)) for p in files if CONFLICT.search(p.read_text("utf-8"))]
    assert markers == [], f"conflict markers in {markers}"

    changed = set(git(project, env, "diff", "--name-only", "HEAD").split())
    assert changed == {
        ".cruft.json",
        "Dockerfile",
        "README.md",
        f"src/{PACKAGE}/platform/lifecycle.py",
        f"src/{PACKAGE}/platform/settings.py",
    }, changed

    # The service's own lines are all still there ...
    assert {name: (project / name).read_text(encoding="utf-8") for name in FEATURE_FILES} == ours
    assert (project / f"src/{PACKAGE}/app.py").read_text(encoding="utf-8") == app_py
    readme = (project / "README.md").read_text(encoding="utf-8")
    assert README_ROW in readme
    # ... and so is the platform's change, rendered.
    assert "def shutdown_summary(" in (project / f"src/{PACKAGE}/platform/lifecycle.py").read_text(
        encoding="utf-8"
    )
    assert "shutdown_summary_log: bool" in (
        project / f"src/{PACKAGE}/platform/settings.py"
    ).read_text(encoding="utf-8")
    assert B_README_ROW in readme
    assert f'LABEL org.opencontainers.image.title="{SERVICE}"' in (
        project / "Dockerfile"
    ).read_text(encoding="utf-8")
    state = json.loads((project / ".cruft.json").read_text(encoding="utf-8"))
    assert state["commit"] == version_b
    up_to_date = run([project / ".venv/bin/cruft", "check"], cwd=project, env=env, timeout=120)
    check_ok(up_to_date, "cruft check after the update")

    # The updated service passes its own checks: the lock, ruff, mypy --strict, its tests.
    git(project, env, "commit", "-q", "-am", "template version B")
    make(project, env, "test", PYTEST_ARGS=f"{PYTEST_SUBSET} -q -p no:cacheprovider")
    probe = run(
        [
            project / ".venv/bin/python",
            "-c",
            f"from {PACKAGE}.platform.lifecycle import shutdown_summary\n"
            f"from {PACKAGE}.platform.settings import Settings\n"
            "assert Settings().shutdown_summary_log is True\n"
            "print(shutdown_summary([{'phase': 'drain', 'duration_s': 0.5}]))",
        ],
        cwd=project,
        env=env,
        timeout=60,
    )
    check_ok(probe, "the new platform code in the updated service")
    assert probe.stdout.strip() == "drain=0.5s"


# -- A plain cookiecutter bake links itself when the template's commit is known -------------------


def test_a_plain_bake_of_a_clean_git_template_gets_its_cruft_file(tmp_path: Path) -> None:
    hook = load_hook("post_gen_project")
    env = clean_env(
        GIT_CONFIG_GLOBAL=str(tmp_path / "gitconfig"),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.invalid",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.invalid",
    )
    (tmp_path / "gitconfig").write_text("", encoding="utf-8")
    repo = tmp_path / "template"
    repo.mkdir()
    (repo / "cookiecutter.json").write_text("{}\n", encoding="utf-8")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "A"]):
        check_ok(run(["git", *args], cwd=repo, env=env), f"git {args[0]}")
    head = run(["git", "rev-parse", "HEAD"], cwd=repo, env=env).stdout.strip()
    answers = {
        "service_name": "orders",
        "_template": str(repo),
        "_repo_dir": str(repo),
        "_output_dir": str(tmp_path),
        "_checkout": None,
    }
    project = tmp_path / "orders"
    project.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        assert hook.link_to_template(project, answers)
        state = json.loads((project / ".cruft.json").read_text(encoding="utf-8"))
        assert (state["template"], state["commit"], state["directory"]) == (str(repo), head, None)
        assert state["context"]["cookiecutter"] == {
            "service_name": "orders",
            "_template": str(repo),
            "_commit": head,
        }
        # A local change: the commit would not be what was baked, so no file (and a note).
        (project / ".cruft.json").unlink()
        (repo / "cookiecutter.json").write_text('{"x": 1}\n', encoding="utf-8")
        assert not hook.link_to_template(project, answers)
        assert not (project / ".cruft.json").exists()
        # Under cruft (`_commit` in the answers), cruft writes it.
        assert not hook.link_to_template(project, {**answers, "_commit": head})
    assert hook.template_url("gh:acme/graceful-svc") == "https://github.com/acme/graceful-svc.git"
    assert hook.template_url("https://example.invalid/t.git") == "https://example.invalid/t.git"
    assert hook.template_url(str(repo / ".." / "template")) == str(repo)
