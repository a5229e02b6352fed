"""The Dockerfile's build stage, run here as written: the image gets exactly the locked runtime.

No Docker engine is needed: the stage's ENV, WORKDIR, COPY and RUN instructions are carried out in
a temporary directory standing in for the image's root (`/opt/...` and `/build` live under it; the
image's `python` is this virtualenv's base interpreter), so a Dockerfile that cannot install from
uv.lock, build the wheel with the locked build group or start the service fails here, not in CI's
image job. The one liberty taken: uv and pip may use their caches here (the image has none).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
BASE_PYTHON = Path(getattr(sys, "_base_executable", sys.executable))

pytestmark = pytest.mark.slow


def build_stage() -> list[tuple[str, str]]:
    """(instruction, arguments) of the `build` stage, continuation lines joined."""
    text = (PROJECT / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", text)
    stage = text.split(" AS build\n", 1)[1].split("\nFROM ", 1)[0]
    steps = []
    for line in stage.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, arguments = line.strip().partition(" ")
            steps.append((instruction, arguments))
    return steps


def ignored(path: Path) -> bool:
    """What .dockerignore keeps out of the context below the inputs it lets in."""
    patterns = [
        line.strip().removeprefix("**/")
        for line in (PROJECT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("**/")
    ]
    return any(fnmatch.fnmatch(part, pattern) for part in path.parts for pattern in patterns)


def copy(source: str, destination: Path) -> None:
    origin = PROJECT / source
    if origin.is_dir():
        for path in origin.rglob("*"):
            if path.is_file() and not ignored(path.relative_to(PROJECT)):
                target = destination / path.relative_to(origin)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    else:
        destination.mkdir(parents=True, exist_ok=True)
        shutil.copy2(origin, destination / origin.name)


def test_the_build_stage_installs_the_locked_runtime_and_the_service(tmp_path: Path) -> None:
    root = tmp_path / "image"

    def inside(text: str) -> str:
        text = text.replace("/usr/local/bin/python", str(BASE_PYTHON))
        return re.sub(r"(?<![\w.-])/(opt|build)\b", lambda m: f"{root}/{m.group(1)}", text)

    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env["PATH"] = f"{BASE_PYTHON.parent}:{env['PATH']}"
    workdir = root
    for instruction, arguments in build_stage():
        if instruction == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", arguments):
                env[key] = inside(value)
            env.pop("UV_NO_CACHE", None)
            env.pop("PIP_NO_CACHE_DIR", None)
        elif instruction == "WORKDIR":
            workdir = Path(inside(arguments))
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction == "COPY":
            *sources, destination = arguments.split()
            for source in sources:
                copy(source, workdir / destination)
        elif instruction == "RUN":
            command = re.sub(r"(^|&&\s*)python ", rf"\g<1>{BASE_PYTHON} ", inside(arguments))
            result = subprocess.run(
                ["/bin/sh", "-c", command],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            assert result.returncode == 0, f"RUN {arguments}\n{result.stdout}\n{result.stderr}"
        else:
            assert instruction in {"ARG"}, f"unexpected {instruction} in the build stage"

    venv = root / "opt" / "venv"
    listing = subprocess.run(
        [str(venv / "bin" / "python"), "-c", LIST_DISTRIBUTIONS],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    installed = set(listing.stdout.split())
    lock = tomllib.loads((PROJECT / "uv.lock").read_text(encoding="utf-8"))
    versions = {package["name"]: package["version"] for package in lock["package"]}
    service = lock_name(PROJECT)
    for entry in installed:
        name, version = entry.split("==")
        assert versions.get(name) == version, f"{entry} is not what uv.lock pins"
    names = {entry.split("==")[0] for entry in installed}
    assert service in names
    # The runtime only: no test tool, no build tool, not uv.
    assert not names & {"pytest", "mypy", "ruff", "hatchling", "grpcio-tools", "uv"}, names


LIST_DISTRIBUTIONS = (
    "import importlib.metadata as m, re\n"
    "for d in m.distributions():\n"
    "    print(re.sub(r'[-_.]+', '-', d.metadata['Name']).lower() + '==' + d.version)\n"
)


def lock_name(project: Path) -> str:
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    return re.sub(r"[-_.]+", "-", pyproject["project"]["name"]).lower()
