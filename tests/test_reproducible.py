"""Nothing floats: every install in the template and in every bake comes from a lock.

- The template's tooling is uv.lock (`uv sync --locked`), and the tested virtualenv is that lock.
- The generated project's uv.lock is a Jinja template over every answer set
  (scripts/lock_template.py): for each of them, uv accepts the rendered lock unchanged.
- Every install command written anywhere (Makefiles, Dockerfile, workflows, READMEs, docs,
  scripts, pre-commit hooks) is `--locked`/`--frozen`, hash-checked, or a local wheel without
  dependencies. A test of the scanner itself shows it catches the floating forms.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.support import REPO_ROOT, check_ok, cookiecutter_cli, run, text_files

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import lock_template

UV = Path(sys.executable).parent / "uv"

# An install step, from the verb on: pip (any spelling), uv's installers, and the tools that
# install whatever the index serves today.
INSTALL = re.compile(
    r"(?:\buv\s+pip\s+install|\bpip3?\s+install|-m\s+pip\s+install|\buv\s+sync|\buv\s+run"
    r"|\buvx\b|\buv\s+tool\s+(?:install|run)|\bpipx\s+(?:install|run)|\bpoetry\s+install)"
    r"[^`\n;&|]*"
)
# Answer sets whose bakes are scanned: everything on, everything off, a traced one without gRPC.
SCANNED_ANSWERS: dict[str, dict[str, str]] = {
    "default": {"use_tracing": "yes"},
    "minimal": {
        "use_grpc": "no",
        "use_postgres": "no",
        "use_redis": "no",
        "use_consumer": "no",
        "use_uvloop": "no",
    },
    "items-only": {"use_grpc": "no", "use_consumer": "no", "use_uvloop": "no"},
}


def floats(command: str) -> bool:
    """Whether an install command can install something no lock names."""
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", command))
    if re.match(r"uv\s+(sync|run)\b", command):
        return not {"--locked", "--frozen"} & flags
    if re.search(r"pip3?\s+install", command):
        if "--require-hashes" in flags:
            return False
        local_wheel = re.search(r"\s/?[\w./*-]+\.whl\b", command) and "://" not in command
        return not (local_wheel and "--no-deps" in flags)
    return True  # uvx, uv tool, pipx, poetry install: resolved at run time


def install_commands(text: str) -> list[str]:
    """Every install command in a text, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [match.group(0).strip() for match in INSTALL.finditer(joined)]


@pytest.mark.parametrize(
    "command",
    [
        "pip install -e '.[dev]'",
        ".venv/bin/python -m pip install --no-input -q -r requirements-dev.txt",
        "pip install cookiecutter==2.7.1",
        "uv sync",
        "uv sync --no-dev",
        "uv run pytest",
        "uvx ruff check .",
        "uv pip install -r requirements.txt",
        "uv pip install --no-deps https://example.org/x.whl",
        "pipx install cruft",
        "uv tool install pre-commit",
    ],
)
def test_the_scanner_flags_floating_installs(command: str) -> None:
    (found,) = install_commands(f"run: |\n  {command}\n")
    assert floats(found), found


@pytest.mark.parametrize(
    "command",
    [
        "uv sync --locked --python /usr/bin/python3",
        "UV_PROJECT_ENVIRONMENT=/opt/venv uv sync --locked --no-default-groups \\\n --no-dev",
        "uv run --frozen pytest",
        "pip install --require-hashes --no-deps -r requirements.txt",
        "uv pip install --python /opt/venv/bin/python --no-deps /build/dist/*.whl",
    ],
)
def test_the_scanner_accepts_locked_installs(command: str) -> None:
    (found,) = install_commands(command)
    assert not floats(found), found


def scanned_files(root: Path) -> list[Path]:
    skip = {".venv", ".uv", ".git", "build", "{{cookiecutter.service_name}}", "__pycache__"}
    return [
        path
        for path in text_files(root)
        if not skip & set(path.relative_to(root).parts)
        and path.name != "uv.lock"
        and path.resolve() != Path(__file__).resolve()
    ]


def floating_installs(root: Path) -> list[str]:
    found = []
    for path in scanned_files(root):
        text = path.read_text(encoding="utf-8")
        found += [f"{path.relative_to(root)}: {c}" for c in install_commands(text) if floats(c)]
        # A Python script that runs pip itself must hash-check what it installs.
        runs_pip = path.suffix == ".py" and '"install"' in text and "pip" in text
        if runs_pip and "--require-hashes" not in text:
            found.append(f"{path.relative_to(root)}: runs pip install without hashes")
    return found


def test_no_install_in_the_template_floats() -> None:
    assert floating_installs(REPO_ROOT) == []
    scanned = {str(path.relative_to(REPO_ROOT)) for path in scanned_files(REPO_ROOT)}
    assert {"Makefile", "README.md", ".ci/run", ".github/workflows/ci.yml"} <= scanned


@pytest.mark.parametrize("answers", list(SCANNED_ANSWERS))
def test_no_install_in_a_bake_floats(answers: str, tmp_path: Path) -> None:
    check_ok(
        cookiecutter_cli(tmp_path / "out", SCANNED_ANSWERS[answers], config_dir=tmp_path / "c"),
        "cookiecutter",
    )
    (project,) = (tmp_path / "out").iterdir()
    assert floating_installs(project) == []
    commands = [c for p in scanned_files(project) for c in install_commands(p.read_text("utf-8"))]
    # The installs are there to be checked: make's, the image's, CI's (through make).
    assert any(c.startswith("uv sync --locked") for c in commands), commands
    dockerfile = (project / "Dockerfile").read_text(encoding="utf-8")
    assert len([c for c in install_commands(dockerfile) if "uv sync" in c]) == 2


def test_the_template_tooling_is_its_lock() -> None:
    """uv.lock agrees with pyproject.toml, and this very virtualenv is exactly that lock."""
    locked = run([UV, "lock", "--locked", "--python", sys.executable], cwd=REPO_ROOT)
    check_ok(locked, "uv lock --locked (run `make lock` after changing pyproject.toml)")
    synced = run([UV, "sync", "--locked", "--check", "--python", sys.executable], cwd=REPO_ROOT)
    check_ok(synced, "uv sync --locked --check: .venv differs from uv.lock")


def test_every_answer_set_gets_a_lock_uv_accepts(tmp_path: Path) -> None:
    """The generated uv.lock, rendered for each answer set that changes the dependencies, is
    accepted unchanged by `uv lock --locked` (the check `make lint` runs in every bake)."""
    assert len(lock_template.answer_sets()) == 16  # 5 options; PostgreSQL and Redis together
    assert lock_template.check_every_answer_set(tmp_path) == []


def test_the_template_workflow_runs_make_test_and_validates() -> None:
    path = REPO_ROOT / ".github" / "workflows" / "ci.yml"
    bin_dir = Path(sys.executable).parent
    result = run(
        [bin_dir / "check-jsonschema", "--builtin-schema", "vendor.github-workflows", path]
    )
    check_ok(result, "check-jsonschema vendor.github-workflows .github/workflows/ci.yml")
    text = path.read_text(encoding="utf-8")
    assert re.search(r"^\s+run: make test\b", text, flags=re.MULTILINE), text
    assert "postgres:" in text
    assert "redis:" in text
    assert (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8").rstrip().endswith("make test")
