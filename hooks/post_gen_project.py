"""Trim the generated project to the chosen options and record the answers.

This file is a Jinja template, like pre_gen_project.py: the answers arrive as JSON data in a raw
string and are parsed when the hook runs; none is pasted into Python source. It runs in the
generated project's directory.

OPTIONAL_PATHS is the only place an option's files are named: option -> glob patterns (relative
to the project; `{package_name}` and the other answers may appear), removed when the answer is
"no". A new option adds an entry, not code.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ANSWERS_JSON = r'''{{ cookiecutter | tojson }}'''  # fmt: skip

OPTIONAL_PATHS: dict[str, list[str]] = {
    "use_grpc": [
        "proto",
        "hatch_build.py",
        "src/{package_name}/platform/grpc_server.py",
        "src/{package_name}/*/rpc.py",
        "src/{package_name}/v1",
        "tests/*grpc*",
        "bench/*grpc*",
    ],
    "use_postgres": [
        "src/{package_name}/platform/db.py",
        "src/{package_name}/platform/migrations.py",
        "src/{package_name}/platform/sql",
        "src/{package_name}/platform/outbox.py",
        "src/{package_name}/items",
        "proto/{package_name}/v1/items.proto",
        "tests/*items*",
        "bench/*items*",
    ],
    "use_redis": [
        "src/{package_name}/platform/redis_client.py",
    ],
    "use_consumer": [
        "src/{package_name}/platform/consumer.py",
        "src/{package_name}/platform/group_commit.py",
        "tests/*consumer*",
        "bench/*consumer*",
    ],
    "use_tracing": [
        "src/{package_name}/platform/tracing.py",
        "tests/*tracing*",
    ],
    "use_uvloop": [
        "tests/*event_loop*",
    ],
}

# Where and how this run happened, not what was answered: left out of the replay file.
VOLATILE_KEYS = ("_output_dir", "_repo_dir", "_checkout")
REPLAY_FILE = ".cookiecutter.json"


def remove_unused(project: Path, answers: Mapping[str, Any]) -> list[Path]:
    """Delete the paths of every option answered "no"; returns what was removed."""
    removed: list[Path] = []
    root = project.resolve()
    for option, patterns in OPTIONAL_PATHS.items():
        if answers.get(option) != "no":
            continue
        for pattern in patterns:
            for path in sorted(project.glob(pattern.format(**answers))):
                if root not in path.resolve().parents:
                    raise RuntimeError(f"{option}: {pattern!r} matched {path}, outside {root}")
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path)
    return removed


def replay_context(answers: Mapping[str, Any]) -> dict[str, Any]:
    """The answers in cookiecutter's replay format, for `cookiecutter --replay-file`."""
    return {"cookiecutter": {k: v for k, v in answers.items() if k not in VOLATILE_KEYS}}


def write_replay(project: Path, answers: Mapping[str, Any]) -> None:
    text = json.dumps(replay_context(answers), indent=2, ensure_ascii=False)
    (project / REPLAY_FILE).write_text(text + "\n", encoding="utf-8")


def main() -> int:
    answers = json.loads(ANSWERS_JSON)
    project = Path.cwd()
    remove_unused(project, answers)
    write_replay(project, answers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
