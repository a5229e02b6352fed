"""Nothing floats: every install in the template and in every bake comes from a lock.

- The template's tooling is uv.lock (`uv sync --locked`), and the tested virtualenv is that lock.
- The generated project's uv.lock is a Jinja template over every answer set
  (scripts/lock_template.py): for each of them, uv accepts the rendered lock unchanged.
- Every install command written anywhere (Makefiles, Dockerfile, workflows, READMEs, docs,
  scripts, pre-commit hooks), and every one a Python file runs as an argument list
  (`[UV, "sync", ...]`), is `--locked`/`--frozen`, hash-checked, or a local wheel without
  dependencies; a build resolves nothing (no build isolation). A test of the scanner itself shows
  it catches the floating forms.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import REPO_ROOT, check_ok, cookiecutter_cli, run, text_files

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import lock_template

UV = Path(sys.executable).parent / "uv"

# An install step, from the verb on: pip (any spelling, wheel and download too), uv's installers,
# builds (an isolated build installs its backend from the index), and the tools that install
# whatever the index serves today.
INSTALL = re.compile(
    r"(?:\buv\s+pip\s+(?:install|sync)|\bpip3?\s+(?:install|wheel|download)"
    r"|-m\s+pip\s+(?:install|wheel|download)|\buv\s+sync|\buv\s+run|\buv\s+add\b"
    r"|\buv\s+build\b|-m\s+build\b|\bpyproject-build\b"
    r"|\buvx\b|\buv\s+tool\s+(?:install|run)|\bpipx\s+(?:install|run)|\bpoetry\s+install)"
    r"[^`\n;&|]*"
)
# Names a Python file gives the tools it runs (`UV`, `uv(...)`, `installed.bin("pip")`).
TOOLS = {"uv", "pip", "pip3", "uvx", "pipx", "poetry"}
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
    if re.search(r"pip3?\s+(install|sync|wheel|download)", command):
        if "--require-hashes" in flags:
            return False
        local_wheel = re.search(r"\s/?[\w./*-]+\.whl\b", command) and "://" not in command
        return not (local_wheel and "--no-deps" in flags)
    if re.match(r"uv\s+build\b", command):
        return "--no-build-isolation" not in flags
    if re.match(r"(-m\s+build|pyproject-build)\b", command):
        return not ({"--no-isolation"} & flags or re.search(r"(?<!\S)-n(?!\S)", command))
    return True  # uvx, uv tool, uv add, pipx, poetry install: resolved at run time


def install_commands(text: str) -> list[str]:
    """Every install command in a text, continuation lines joined; a tool named by a variable
    (make's `$(UV)`, the shell's `${UV}` or `$PIP`) counts as the tool itself."""
    joined = re.sub(r"\\\n\s*", " ", text)
    joined = re.sub(
        r"\$(?:\((UVX?|PIP3?)\)|\{(UVX?|PIP3?)\}|(UVX?|PIP3?)\b)",
        lambda match: next(name for name in match.groups() if name).lower(),
        joined,
        flags=re.IGNORECASE,
    )
    return [match.group(0).strip() for match in INSTALL.finditer(joined)]


def word(node: ast.expr) -> str:
    """The shell word an argument-list element stands for: a string, or the tool a name or a
    path expression names (`UV`, `str(UV)`, `venv / "bin" / "pip"`, `installed.bin("uv")`);
    anything else is `?`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = node.values
        return "".join(word(part) if isinstance(part, ast.Constant) else "?" for part in parts)
    if isinstance(node, ast.Name | ast.Attribute):
        name = (node.id if isinstance(node, ast.Name) else node.attr).lower()
        return name if name in TOOLS else "?"
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return word(node.right)
    if isinstance(node, ast.Call) and len(node.args) == 1:
        return word(node.args[0])
    return "?"


def argument_lists(tree: ast.Module) -> list[list[ast.expr]]:
    """The argument lists in a module: list and tuple literals (one assigned to a name and then
    extended with `+=` counts once, whole), and the arguments of calls to a plain name
    (`uv("sync", "--locked")`)."""
    merged: dict[tuple[int, str], list[ast.expr]] = {}
    extended: set[int] = set()
    for scope in ast.walk(tree):
        body = getattr(scope, "body", None)  # a lambda's is an expression
        for statement in body if isinstance(body, list) else []:
            if not isinstance(statement, ast.Assign | ast.AnnAssign | ast.AugAssign):
                continue
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            value = statement.value
            if len(targets) != 1 or not isinstance(targets[0], ast.Name):
                continue
            if not isinstance(value, ast.List | ast.Tuple):
                continue
            key = (id(scope), targets[0].id)
            earlier = merged.get(key, []) if isinstance(statement, ast.AugAssign) else []
            merged[key] = earlier + list(value.elts)
            extended.add(id(value))
    lists = list(merged.values())
    for node in ast.walk(tree):
        if isinstance(node, ast.List | ast.Tuple) and id(node) not in extended:
            lists.append(list(node.elts))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
            lists.append([node.func, *node.args])
    return lists


def python_install_commands(text: str) -> list[str]:
    """Every install command a Python file runs as an argument list, as the shell words."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    words = (" ".join(word(node) for node in elements) for elements in argument_lists(tree))
    return [command for line in words for command in install_commands(line)]


@pytest.mark.parametrize(
    "command",
    [
        "pip install -e '.[dev]'",
        ".venv/bin/python -m pip install --no-input -q -r requirements-dev.txt",
        "pip install cookiecutter==2.7.1",
        "uv sync",
        "$(UV) sync --python $(PYTHON)",
        "${UV} pip install -r requirements.txt",
        "$PIP install foo",
        "uv sync --no-dev",
        "uv run pytest",
        "uvx ruff check .",
        "uv pip install -r requirements.txt",
        "uv pip install --no-deps https://example.org/x.whl",
        "pipx install cruft",
        "uv tool install pre-commit",
        "uv pip sync requirements.txt",
        "pip wheel --wheel-dir dist .",
        "python -m pip download hatchling",
        "uv add httpx",
        "uv build",
        "uv build --wheel --out-dir dist",
        "python -m build --wheel",
        "pyproject-build",
    ],
)
def test_the_scanner_flags_floating_installs(command: str) -> None:
    (found,) = install_commands(f"run: |\n  {command}\n")
    assert floats(found), found


@pytest.mark.parametrize(
    "source",
    [
        'subprocess.run(["pip", "install", "foo"], check=True)',
        'subprocess.run([str(UV), "sync"], check=True)',
        'run([venv / "bin" / "uv", "pip", "install", "-r", requirements])',
        'command = [sys.executable, "-m", "pip", "install"]\ncommand += ["foo"]\nrun(command)',
        'uv("sync", "--no-dev")',
        'run([installed.bin("uv"), "build"])',
    ],
)
def test_the_scanner_flags_floating_installs_python_runs(source: str) -> None:
    (found,) = python_install_commands(source)
    assert floats(found), found


@pytest.mark.parametrize(
    "command",
    [
        "uv sync --locked --python /usr/bin/python3",
        "$(UV) sync --locked --python $(PYTHON)",
        "UV_PROJECT_ENVIRONMENT=/opt/venv uv sync --locked --no-default-groups \\\n --no-dev",
        "uv run --frozen pytest",
        "pip install --require-hashes --no-deps -r requirements.txt",
        "uv pip install --python /opt/venv/bin/python --no-deps /build/dist/*.whl",
        "uv pip sync --require-hashes requirements.txt",
        "uv build --wheel --no-build-isolation --out-dir dist",
        "python -m build --no-isolation --wheel",
    ],
)
def test_the_scanner_accepts_locked_installs(command: str) -> None:
    (found,) = install_commands(command)
    assert not floats(found), found


@pytest.mark.parametrize(
    "source",
    [
        'run([UV, "sync", "--locked", "--check", "--python", sys.executable])',
        'uv("sync", "--locked", "--check")',
        'command = [python, "-m", "pip", "install", "--quiet"]\n'
        'command += ["--require-hashes", "--no-deps", "-r", path]\nrun(command)',
    ],
)
def test_the_scanner_accepts_locked_installs_python_runs(source: str) -> None:
    (found,) = python_install_commands(source)
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


def commands_in(path: Path) -> list[str]:
    """The install commands a file writes (a Python file: also those it runs)."""
    text = path.read_text(encoding="utf-8")
    commands = install_commands(text)
    if path.suffix == ".py":
        commands += python_install_commands(text)
    return commands


def floating_installs(root: Path) -> list[str]:
    found = []
    for path in scanned_files(root):
        text = path.read_text(encoding="utf-8")
        found += [f"{path.relative_to(root)}: {c}" for c in commands_in(path) if floats(c)]
        # A Python script that runs pip itself must hash-check what it installs.
        runs_pip = path.suffix == ".py" and '"install"' in text and "pip" in text
        if runs_pip and "--require-hashes" not in text:
            found.append(f"{path.relative_to(root)}: runs pip install without hashes")
    return found


def test_no_install_in_the_template_floats() -> None:
    assert floating_installs(REPO_ROOT) == []
    scanned = {str(path.relative_to(REPO_ROOT)) for path in scanned_files(REPO_ROOT)}
    assert {"Makefile", "README.md", ".ci/run", ".github/workflows/ci.yml"} <= scanned
    # The installs are there to be checked: `make venv`'s.
    assert "uv sync --locked --python $(PYTHON)" in commands_in(REPO_ROOT / "Makefile")


@pytest.mark.parametrize("answers", list(SCANNED_ANSWERS))
def test_no_install_in_a_bake_floats(answers: str, tmp_path: Path) -> None:
    check_ok(
        cookiecutter_cli(tmp_path / "out", SCANNED_ANSWERS[answers], config_dir=tmp_path / "c"),
        "cookiecutter",
    )
    (project,) = (tmp_path / "out").iterdir()
    assert floating_installs(project) == []
    # The installs are there to be checked: make's (CI's go through make), the image's, uv's own.
    assert "uv sync --locked --python $(PYTHON)" in commands_in(project / "Makefile")
    assert len([c for c in commands_in(project / "Dockerfile") if "uv sync" in c]) == 2
    assert [c for c in commands_in(project / "Dockerfile") if "uv build" in c]
    bootstrap = commands_in(project / "scripts" / "bootstrap_uv.py")
    assert any(c.startswith("-m pip install") and "--require-hashes" in c for c in bootstrap)


def test_dependabot_updates_the_lock_the_image_and_the_actions_weekly_grouped(
    tmp_path: Path,
) -> None:
    """The bake's dependabot.yml (check-jsonschema's vendor.dependabot schema in test_deploy):
    uv (uv.lock), docker (the base image) and github-actions, weekly, one grouped PR each."""
    check_ok(cookiecutter_cli(tmp_path / "out", {}, config_dir=tmp_path / "c"), "cookiecutter")
    (project,) = (tmp_path / "out").iterdir()
    config = yaml.safe_load((project / ".github" / "dependabot.yml").read_text(encoding="utf-8"))
    assert config["version"] == 2
    updates = {update["package-ecosystem"]: update for update in config["updates"]}
    assert sorted(updates) == ["docker", "github-actions", "uv"]
    for ecosystem, update in updates.items():
        assert update["directory"] == "/", ecosystem
        assert update["schedule"]["interval"] == "weekly", ecosystem
        [group] = update["groups"].values()
        assert group["patterns"] == ["*"], ecosystem


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
