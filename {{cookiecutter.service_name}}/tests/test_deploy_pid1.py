"""The image's exact command as PID 1 of a fresh PID namespace: SIGTERM gives the ordered shutdown.

PID 1 is special: the kernel delivers it only the signals it has a handler for, so a service that
relies on Python's default SIGTERM behaviour would ignore the orchestrator's stop and be killed at
the end of the grace period. The command is the Dockerfile's ENTRYPOINT + CMD, exactly, run with
this virtualenv's python first on PATH (as /opt/venv/bin is in the image) under
`unshare --fork --pid --mount-proc`, with the root filesystem remounted read-only in that mount
namespace (as `readOnlyRootFilesystem` does): the service must need no writable path. That takes
root, or unprivileged user namespaces; without either the test skips (the generated CI workflow
runs it with sudo).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from scripts.rollout_check import dockerfile_command, venv_path_env

from .service import drop_isolated, free_port, http_get, isolated_names

PHASES = [
    "readiness_off",
    "drain_delay",
    "close_listeners",
    "end_streams",
    "drain_in_flight",
    "stop_tasks",
    "close",
]


# Remount / read-only inside the new mount namespace, then exec the command: PID 1 is the command.
READ_ONLY_ROOT = ["sh", "-c", 'mount -o remount,bind,ro / && exec "$@"', "sh"]


def unshare_prefix() -> list[str]:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare (util-linux) is not installed")
    # --kill-child: if unshare is killed, so is the namespace (its PID 1 first).
    prefix = [unshare, "--fork", "--pid", "--mount-proc", "--kill-child"]
    if os.geteuid() != 0:
        prefix = [unshare, "--user", "--map-root-user", *prefix[1:]]
    probe = subprocess.run(
        [*prefix, *READ_ONLY_ROOT, "true"], capture_output=True, timeout=30, check=False
    )
    if probe.returncode != 0:
        pytest.skip(f"needs root or unprivileged user namespaces: {probe.stderr!r}")
    return [*prefix, *READ_ONLY_ROOT]


def root_mount_options(pid: int) -> list[str]:
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            return fields[5].split(",")
    raise AssertionError(f"no root mount for {pid}")


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(child) for child in path.read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def namespace_pids(pid: int) -> list[int]:
    """The process's PID in each PID namespace it is in, outermost first (NSpid)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return [int(part) for part in line.split()[1:]]
    raise AssertionError(f"no NSpid line for {pid}")


def test_entrypoint_is_pid_1_and_sigterm_shuts_down_in_order(tmp_path: Path) -> None:
    prefix = unshare_prefix()
    command = dockerfile_command()
    env = venv_path_env(dict(os.environ))
    env.update(
        HTTP_HOST="127.0.0.1",
        HTTP_PORT=str(free_port()),
        GRPC_HOST="127.0.0.1",
        GRPC_PORT=str(free_port()),
        ADMIN_HOST="127.0.0.1",
        ADMIN_PORT=str(free_port()),  # (port 0 could be given the HTTP port chosen above)
        LOG_FORMAT="json",
        DRAIN_DELAY="0.5",
        SHUTDOWN_TIMEOUT="10",
        **isolated_names(),
    )
    url = f"http://127.0.0.1:{env['HTTP_PORT']}"
{%- if cookiecutter.use_postgres == "yes" %}
    migrated = subprocess.run(
        [*command, "migrate"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
{%- endif %}
    lines: list[str] = []
    process = subprocess.Popen(
        [*prefix, *command],
        env=env,
        cwd=tmp_path,  # no .env file here, as in the image's empty /app
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not (service := children(process.pid)):
            assert process.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "the namespace's first process never started"
            time.sleep(0.02)
        pid = service[0]
        # Wait until unshare's child has exec'd the command, then check what PID 1 is.
        while Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1] != [
            part.encode() for part in command
        ]:
            assert time.monotonic() < deadline, Path(f"/proc/{pid}/cmdline").read_bytes()
            time.sleep(0.02)
        assert namespace_pids(pid)[-1] == 1, "the service is not PID 1 of its namespace"
        assert "ro" in root_mount_options(pid), "the root filesystem is not read-only"

        status = None
        while time.monotonic() < deadline:
            assert process.poll() is None, f"exited {process.returncode}:\n{''.join(lines)}"
            try:
                status = http_get(f"{url}/readyz", timeout=1.0)[0]
            except OSError:
                status = None
            if status == 200:
                break
            time.sleep(0.05)
        assert status == 200, f"not ready within 30 s:\n{''.join(lines[-50:])}"

        os.kill(pid, signal.SIGTERM)  # from outside, as the container runtime does
        code = process.wait(timeout=20)  # unshare exits with its child's status
        reader.join(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()  # unshare; the namespace's processes die with their PID 1
            process.wait(timeout=10)
        drop_isolated(env)
    output = "".join(lines)
    assert code == 0, output
    events: list[dict[str, Any]] = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    assert [e["phase"] for e in events if e.get("event") == "shutdown_phase"] == PHASES, output
    requested = [e for e in events if e.get("event") == "shutdown_requested"]
    assert len(requested) == 1, output
    assert [e["exit_code"] for e in events if e.get("event") == "exit"] == [0], output
