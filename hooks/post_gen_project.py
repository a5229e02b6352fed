"""Trim the generated project to the chosen options and record the answers.

This file is a Jinja template, like pre_gen_project.py: the answers arrive as JSON data in a raw
string and are parsed when the hook runs; none is pasted into Python source. It runs in the
generated project's directory.

OPTIONAL_PATHS is the only place an option's files are named: option -> glob patterns (relative
to the project; `{package_name}` and the other answers may appear), removed when the answer is
"no". A new option adds an entry, not code.

It also links a plain `cookiecutter` bake to its template for `cruft update` (`make update`): cruft
writes `.cruft.json` itself when it bakes (`cruft create`), and its answers then carry `_commit`;
a plain bake gets the same file from here when the template is a git checkout with no local
changes (a clone of a URL, or a clean local repository), whose HEAD is then the commit the project
came from. Otherwise no `.cruft.json` is written (nothing would say which commit it was), and the
hook says so: `cruft link` links the project later (see the generated README, "Updating").
"""

from __future__ import annotations

import json
import shutil
import subprocess
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
        "src/{package_name}/platform/data.py",
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

# Where and how this run happened, not what was answered: left out of the replay file. (`_commit`
# is cruft's: the template commit, recorded in .cruft.json.)
VOLATILE_KEYS = ("_output_dir", "_repo_dir", "_checkout", "_commit")
REPLAY_FILE = ".cookiecutter.json"
CRUFT_FILE = ".cruft.json"
# cookiecutter's built-in abbreviations: git (and so cruft) needs the URL they stand for.
ABBREVIATIONS = {
    "gh": "https://github.com/{}.git",
    "gl": "https://gitlab.com/{}.git",
    "bb": "https://bitbucket.org/{}",
}
GIT_TIMEOUT = 30


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


def template_url(template: str) -> str:
    """Where git can clone the template from: abbreviations expanded, local paths absolute."""
    prefix, colon, rest = template.partition(":")
    if colon and prefix in ABBREVIATIONS:
        return ABBREVIATIONS[prefix].format(rest)
    path = Path(template).expanduser()
    if "://" not in template and path.is_dir():
        return str(path.resolve())
    return template


def _git(repo: Path, *args: str) -> str | None:
    """git's output in `repo`, or None if git is missing or fails."""
    try:
        result = subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def template_commit(repo_dir: Path) -> str | None:
    """The commit the template was rendered from: HEAD of the git checkout at `repo_dir` (its
    top level) when it has no local change, untracked files included; else None."""
    top = _git(repo_dir, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != repo_dir.resolve():
        return None
    if _git(repo_dir, "--no-optional-locks", "status", "--porcelain") != "":
        return None
    return _git(repo_dir, "rev-parse", "--verify", "HEAD")


def cruft_state(answers: Mapping[str, Any], commit: str) -> dict[str, Any]:
    """.cruft.json as `cruft create` writes it: the template, its commit and the answers."""
    url = template_url(str(answers["_template"]))
    context = {k: v for k, v in answers.items() if k not in VOLATILE_KEYS}
    context.update(_template=url, _commit=commit)
    return {
        "template": url,
        "commit": commit,
        "checkout": answers.get("_checkout"),
        "context": {"cookiecutter": context},
        "directory": None,
    }


def link_to_template(project: Path, answers: Mapping[str, Any]) -> bool:
    """Write .cruft.json for a plain cookiecutter bake whose template commit is known."""
    if "_commit" in answers or "_template" not in answers:
        return False  # cruft is baking: it writes (or, updating, keeps) the file itself
    repo_dir = answers.get("_repo_dir")
    commit = template_commit(Path(repo_dir)) if repo_dir else None
    if commit is None:
        print(
            f"note: no {CRUFT_FILE} written: the template at {repo_dir} is not a git checkout "
            "without local changes, so its commit is unknown. To get `make update`, bake with "
            "`cruft create`, or link this project with `cruft link` (README.md, 'Updating').",
            file=sys.stderr,
        )
        return False
    text = json.dumps(cruft_state(answers, commit), ensure_ascii=False, indent=2)
    (project / CRUFT_FILE).write_text(text + "\n", encoding="utf-8")
    return True


def main() -> int:
    answers = json.loads(ANSWERS_JSON)
    project = Path.cwd()
    remove_unused(project, answers)
    write_replay(project, answers)
    link_to_template(project, answers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
