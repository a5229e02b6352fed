"""Write the generated project's uv.lock: one lock for every answer set, as a Jinja template.

A baked project's dependencies depend on its answers (gRPC, PostgreSQL, Redis, uvloop, tracing),
so its uv.lock does too. This script locks the project with every option on (the union) and then
wraps each package of that lock in the condition under which a bake needs it: a package is kept
when one of the direct dependencies that reach it is, and a direct dependency is kept under the
same answers as its line in pyproject.toml. Every bake thus gets the union's versions, pruned to
what it uses; `--check` then proves, for every answer set, that uv accepts the rendered lock
unchanged (`uv lock --locked`).

    python -m scripts.lock_template            # re-lock (keeps locked versions; `make lock`)
    python -m scripts.lock_template --check    # only verify every answer set (no write)
    python -m scripts.lock_template --upgrade  # re-resolve everything to the newest allowed
"""

from __future__ import annotations

import argparse
import itertools
import re
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from cookiecutter.main import cookiecutter

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_LOCK = REPO_ROOT / "{{cookiecutter.service_name}}" / "uv.lock"
UV = Path(sys.executable).parent / "uv"
# The options that change the dependencies; every other answer leaves them alone.
OPTIONS = ("use_grpc", "use_postgres", "use_redis", "use_uvloop", "use_tracing")
UNION = dict.fromkeys(OPTIONS, "yes")
ROOT_NAME = "orders"  # the default service name, the root package's name in the union's lock
GROUPS = ("dependencies", "build", "dev")

Answers = dict[str, str]


def valid(answers: Mapping[str, str]) -> bool:
    """The pre-generation hook refuses PostgreSQL without Redis and Redis without PostgreSQL (the
    items example needs both; nothing else uses either)."""
    return answers["use_postgres"] == answers["use_redis"]


def answer_sets() -> list[Answers]:
    sets = (
        dict(zip(OPTIONS, values, strict=True))
        for values in itertools.product(*[("yes", "no")] * len(OPTIONS))
    )
    return [answers for answers in sets if valid(answers)]


def bake(answers: Mapping[str, str], into: Path) -> Path:
    context = {**answers, "use_consumer": "no"}  # the consumer needs nothing of its own
    return Path(
        cookiecutter(str(REPO_ROOT), no_input=True, extra_context=context, output_dir=str(into))
    )


def direct_requirements(project: Path) -> dict[str, set[str]]:
    """group -> the normalized names of the direct requirements of a baked project."""
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    groups = {"dependencies": pyproject["project"]["dependencies"]}
    groups.update(pyproject["dependency-groups"])
    return {group: {normalize(text) for text in groups[group]} for group in GROUPS}


def normalize(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


# -- Conditions: a set of answer sets, written as the Jinja test that selects exactly it ---------


def condition_vocabulary(sets: list[Answers]) -> list[tuple[str, frozenset[int]]]:
    """Simple Jinja tests and the answer sets (by index) each selects, simplest first."""

    def selected(test: dict[str, str]) -> frozenset[int]:
        return frozenset(i for i, a in enumerate(sets) if all(a[k] == v for k, v in test.items()))

    def jinja(test: dict[str, str]) -> str:
        return " and ".join(f'cookiecutter.{k} == "{v}"' for k, v in test.items())

    vocabulary = [("", frozenset(range(len(sets))))]
    for option in OPTIONS:
        vocabulary.append((jinja({option: "yes"}), selected({option: "yes"})))
    for first, second in itertools.combinations(OPTIONS, 2):
        vocabulary.append(
            (jinja({first: "yes", second: "yes"}), selected({first: "yes", second: "yes"}))
        )
    return vocabulary


def describe(wanted: frozenset[int], vocabulary: list[tuple[str, frozenset[int]]]) -> str:
    """The shortest `a or b or ...` of vocabulary tests that selects exactly `wanted`."""
    for size in range(1, 4):
        for terms in itertools.combinations(vocabulary, size):
            if frozenset().union(*(chosen for _, chosen in terms)) == wanted:
                texts = [text for text, _ in terms]
                return "" if "" in texts else " or ".join(texts)
    raise SystemExit(f"lock_template: no simple condition selects answer sets {sorted(wanted)}")


# -- The lock ------------------------------------------------------------------------------------


def split_blocks(text: str) -> tuple[str, list[str]]:
    """The lock's header and its `[[package]]` blocks, each without the blank line before it."""
    header, *blocks = text.split("\n\n[[package]]\n")
    return header, ["[[package]]\n" + block for block in blocks]


def block_name(block: str) -> str:
    found = re.search(r'^name = "([^"]+)"$', block, flags=re.MULTILINE)
    assert found, block[:200]
    return found.group(1)


def dependency_names(package: dict[str, Any]) -> Iterator[str]:
    yield from (dependency["name"] for dependency in package.get("dependencies", []))
    for table in ("optional-dependencies", "dev-dependencies"):
        for dependencies in package.get(table, {}).values():
            yield from (dependency["name"] for dependency in dependencies)


def reach(lock: dict[str, Any], roots: Iterable[str]) -> set[str]:
    packages = {package["name"]: package for package in lock["package"]}
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending += dependency_names(packages[name])
    return seen


def wrap(text: str, condition: str) -> str:
    """`text` (without its leading newline) kept only where `condition` holds."""
    if not condition:
        return "\n" + text
    return "\n{%- if " + condition + " %}\n" + text + "\n{%- endif %}"


def template_root_block(block: str, conditions: dict[tuple[str, str], str]) -> str:
    """The project's own block: its name rendered, each direct requirement under its condition."""
    out: list[str] = []
    group = ""
    for line in block.split("\n"):
        if line == f'name = "{ROOT_NAME}"':
            out.append("\n" + 'name = "{{ cookiecutter.service_name }}"')
            continue
        if line in ("dependencies = [", "requires-dist = ["):
            group = "dependencies"
        elif match := re.fullmatch(r"(\w+) = \[", line):
            group = match.group(1)
        entry = re.fullmatch(r'    \{ name = "([^"]+)".*\},', line)
        out.append(wrap(line, conditions[group, entry.group(1)]) if entry else "\n" + line)
    return "".join(out)[1:]


def templated(union_lock: str, sets: list[Answers], roots: list[dict[str, set[str]]]) -> str:
    lock = tomllib.loads(union_lock)
    vocabulary = condition_vocabulary(sets)
    # (group, direct requirement) -> the answer sets whose pyproject.toml has it
    has: dict[tuple[str, str], set[int]] = {}
    for index, groups in enumerate(roots):
        for group, names in groups.items():
            for name in names:
                has.setdefault((group, name), set()).add(index)
    conditions = {key: describe(frozenset(chosen), vocabulary) for key, chosen in has.items()}
    needed: dict[str, set[int]] = {}
    for index, groups in enumerate(roots):
        for name in reach(lock, set().union(*groups.values())):
            needed.setdefault(name, set()).add(index)
    # (The last block loses its newline: `{%- endif %}` would strip it; it is put back at the end.)
    header, blocks = split_blocks(union_lock.rstrip("\n"))
    out = [header]
    for block in blocks:
        name = block_name(block)
        if name == ROOT_NAME:
            out.append("\n\n" + template_root_block(block, conditions))
            continue
        if name not in needed:
            raise SystemExit(f"lock_template: {name} is locked but no answer set needs it")
        out.append(wrap("\n" + block, describe(frozenset(needed[name]), vocabulary)))
    return "".join(out) + "\n"


def run_uv(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    python = Path(sys.executable)
    return subprocess.run(
        [str(UV), *args, "--python", str(python)],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def check_every_answer_set(work: Path) -> list[str]:
    """Bake each answer set; uv must accept its rendered lock as it is. Returns the failures."""
    failures = []
    for index, answers in enumerate(answer_sets()):
        project = bake(answers, work / f"check-{index}")
        result = run_uv("lock", "--locked", cwd=project)
        if result.returncode != 0:
            failures.append(f"{answers}: {result.stderr.strip()[-2000:]}")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify every answer set only")
    parser.add_argument("--upgrade", action="store_true", help="re-resolve to the newest allowed")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lock-template-") as tmp:
        work = Path(tmp)
        if not options.check:
            sets = answer_sets()
            roots = [direct_requirements(bake(a, work / f"roots-{i}")) for i, a in enumerate(sets)]
            union = bake(UNION, work / "union")
            # The union's bake carries the current lock: uv keeps its versions unless upgrading.
            result = run_uv("lock", *(["--upgrade"] if options.upgrade else []), cwd=union)
            if result.returncode != 0:
                print(result.stderr, file=sys.stderr)
                return 1
            text = templated((union / "uv.lock").read_text(encoding="utf-8"), sets, roots)
            TEMPLATE_LOCK.write_text(text, encoding="utf-8")
            print(f"lock_template: wrote {TEMPLATE_LOCK.relative_to(REPO_ROOT)}")
        failures = check_every_answer_set(work)
    for failure in failures:
        print(f"lock_template: uv does not accept the lock of {failure}", file=sys.stderr)
    if not failures:
        print(f"lock_template: uv accepts the lock of all {len(answer_sets())} answer sets")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
