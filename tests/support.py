"""Helpers for the template's tests: baking, interpreters, virtualenvs, subprocesses."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_DIR = REPO_ROOT / "{{cookiecutter.service_name}}"
FIND_PYTHON = TEMPLATE_DIR / "scripts" / "find-python.sh"
COOKIECUTTER_JSON: dict[str, object] = json.loads(
    (REPO_ROOT / "cookiecutter.json").read_text(encoding="utf-8")
)
DEFAULT_PYTHON = "3.12"  # the first python_version choice in cookiecutter.json
SUPPORTED_PYTHONS = ("3.11", "3.12", "3.13")
VOLATILE_KEYS = {"_output_dir", "_repo_dir", "_checkout", "_commit"}

INSTALL_TIMEOUT = 600
TOOL_TIMEOUT = 600


def load_hook(name: str) -> ModuleType:
    """Import a hook unrendered: its answers are only parsed when it runs as a script."""
    path = REPO_ROOT / "hooks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"template_hook_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what would leak pytest or a virtualenv into children."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST_", "COV_")) and key not in {"VIRTUAL_ENV", "PYTHONPATH"}
    }
    env.update(extra)
    return env


def run(
    cmd: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = TOOL_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in cmd],
        cwd=cwd,
        env=dict(env) if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def check_ok(result: subprocess.CompletedProcess[str], what: str) -> None:
    assert result.returncode == 0, (
        f"{what} exited {result.returncode}\n--- stdout (tail) ---\n{tail(result.stdout)}"
        f"\n--- stderr (tail) ---\n{tail(result.stderr)}"
    )


def cookiecutter_cli(
    output_dir: Path,
    answers: Mapping[str, str] | None = None,
    *,
    replay_file: Path | None = None,
    config_dir: Path,
) -> subprocess.CompletedProcess[str]:
    """The cookiecutter CLI as a user runs it, with its replay/cache dirs kept under config_dir."""
    config_dir.mkdir(parents=True, exist_ok=True)
    config = config_dir / "config.yaml"
    config.write_text(
        f"cookiecutters_dir: {json.dumps(str(config_dir / 'cookiecutters'))}\n"
        f"replay_dir: {json.dumps(str(config_dir / 'replay'))}\n",
        encoding="utf-8",
    )
    cli = Path(sys.executable).parent / "cookiecutter"
    cmd: list[str | Path] = [cli, "--config-file", config, "-o", output_dir]
    if replay_file is not None:
        cmd += ["--replay-file", replay_file, REPO_ROOT]
    else:
        cmd += ["--no-input", REPO_ROOT, *(f"{k}={v}" for k, v in (answers or {}).items())]
    return run(cmd, cwd=config_dir, timeout=120)


def find_python(version: str, env: Mapping[str, str] | None = None) -> Path:
    """An interpreter of exactly this X.Y, as the generated Makefile finds it
    (scripts/find-python.sh: PATH, then pyenv's versions; shims that cannot run it skipped)."""
    result = run(["/bin/bash", FIND_PYTHON, version], env=env, timeout=60)
    if result.returncode != 0:
        pytest.fail(
            f"Python {version} is required but none works here: {result.stderr.strip()}",
            pytrace=False,
        )
    return Path(result.stdout.strip())


@dataclass
class Installed:
    """A baked project with its own virtualenv (.venv inside the project)."""

    project: Path
    python_version: str
    answers: dict[str, str] = field(default_factory=dict)

    @property
    def venv(self) -> Path:
        return self.project / ".venv"

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name

    @property
    def package(self) -> str:
        replay = json.loads((self.project / ".cookiecutter.json").read_text(encoding="utf-8"))
        return str(replay["cookiecutter"]["package_name"])


def make(project: Path, *targets: str, timeout: float = TOOL_TIMEOUT, **variables: str) -> None:
    """`make TARGET...` in a baked project, as its README says (it finds its own Python)."""
    cmd = ["make", "--no-print-directory", *targets, *(f"{k}={v}" for k, v in variables.items())]
    check_ok(run(cmd, cwd=project, timeout=timeout), f"{' '.join(cmd)} in {project.name}")


def install(project: Path, python_version: str) -> Installed:
    """The generated README's `make install`: .venv from uv.lock on the Python its Makefile finds
    (the cookiecutter answer's), which must be `python_version`."""
    make(project, "install", timeout=INSTALL_TIMEOUT)
    probe = run([project / ".venv" / "bin" / "python", "-c", "import sys; print(sys.version)"])
    check_ok(probe, "the installed interpreter")
    assert probe.stdout.startswith(f"{python_version}."), probe.stdout
    return Installed(project=project, python_version=python_version)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def text_files(root: Path) -> list[Path]:
    """Every file under root that decodes as UTF-8 (the generated project is all text)."""
    files = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or ".venv" in path.relative_to(root).parts:
            continue
        try:
            path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        files.append(path)
    return files


def tree(root: Path) -> dict[str, bytes]:
    """Relative path -> content of every file under root."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }
