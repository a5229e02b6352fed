"""Every combination of options the pre-gen hook accepts bakes a project that passes ruff check,
ruff format --check and mypy --strict (issue 16: options are modules, none leaves an unused
import, setting or client behind), and whose rendered manifests admit the admin port only from
the monitoring namespace (issue 15).

Fast by sharing: one virtualenv with every optional dependency (the default bake with tracing:
the `traced` project of test_generated, installed once per worker by its own `make install`, so
shared with TestTracedProject where xdist runs both on one worker) is the interpreter mypy checks
every bake against, and one mypy cache serves them all (the third-party modules are analysed
once). The tests are one class, so `--dist loadscope` runs them on one worker, in order, over that
cache.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.conftest import VARIANTS, Projects
from tests.support import (
    COOKIECUTTER_JSON,
    Installed,
    check_ok,
    cookiecutter_cli,
    load_hook,
    run,
)
from tests.test_deploy import MONITORING, check_ingress, render

pre_gen = load_hook("pre_gen_project")

OPTIONS = ("use_grpc", "use_postgres", "use_redis", "use_consumer", "use_tracing", "use_uvloop")


def accepted_combinations() -> list[dict[str, str]]:
    """Every yes/no combination of OPTIONS that the hook's own checks let through."""
    base = {
        key: value[0] if isinstance(value, list) else str(value)
        for key, value in COOKIECUTTER_JSON.items()
        if not key.startswith("_")
    }
    base["package_name"] = base["service_name"].replace("-", "_")
    combinations = []
    for values in itertools.product(("yes", "no"), repeat=len(OPTIONS)):
        answers = {**base, **dict(zip(OPTIONS, values, strict=True))}
        if not pre_gen.problems(answers):
            combinations.append(dict(zip(OPTIONS, values, strict=True)))
    return combinations


COMBINATIONS = accepted_combinations()


def combination_id(combination: dict[str, str]) -> str:
    on = [name.removeprefix("use_") for name in OPTIONS if combination[name] == "yes"]
    return "+".join(on) or "none"


def test_the_hook_refuses_the_nonsense_and_accepts_the_rest() -> None:
    # postgres <-> redis, consumer -> both: 3 data choices x grpc x tracing x uvloop.
    assert len(COMBINATIONS) == 3 * 2 * 2 * 2


def bake(output_dir: Path, answers: Mapping[str, str]) -> Path:
    """The project baked by the cookiecutter CLI (its replay and cache dirs kept aside)."""
    check_ok(
        cookiecutter_cli(output_dir, answers, config_dir=output_dir / ".config"), "cookiecutter"
    )
    [project] = [path for path in output_dir.iterdir() if path.name != ".config"]
    return project


@pytest.fixture(scope="module")
def shared(
    projects: Projects, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Installed, Path]]:
    """The virtualenv with every optional dependency, and the mypy cache all bakes share."""
    root = tmp_path_factory.mktemp("combinations")
    installed = projects.get("traced")
    assert VARIANTS["traced"].answers == {"use_tracing": "yes"}  # every option on
    yield installed, root / "mypy-cache"
    shutil.rmtree(root, ignore_errors=True)


class TestEveryAcceptedCombination:
    """One worker (`--dist loadscope`), one mypy cache, in order."""

    @pytest.mark.parametrize("combination", COMBINATIONS, ids=combination_id)
    def test_lint_format_and_strict_types(
        self,
        combination: dict[str, str],
        shared: tuple[Installed, Path],
        tmp_path: Path,
    ) -> None:
        installed, mypy_cache = shared
        project = bake(tmp_path, combination)
        python = installed.bin("python")
        proto = project / "proto"
        protos = sorted(str(p.relative_to(proto)) for p in proto.rglob("*.proto"))
        if protos:  # the gRPC stubs, generated as the build hook does (they are git-ignored)
            outs = ("python", "grpc_python", "mypy", "mypy_grpc")
            check_ok(
                run(
                    [
                        python,
                        "-m",
                        "grpc_tools.protoc",
                        "--proto_path=proto",
                        f"--plugin=protoc-gen-mypy={installed.bin('protoc-gen-mypy')}",
                        f"--plugin=protoc-gen-mypy_grpc={installed.bin('protoc-gen-mypy_grpc')}",
                        *(f"--{out}_out=src" for out in outs),
                        *protos,
                    ],
                    cwd=project,
                ),
                "protoc",
            )
        what = combination_id(combination)
        ruff = installed.bin("ruff")
        check_ok(run([ruff, "check", "--no-cache", "."], cwd=project), f"ruff check ({what})")
        check_ok(
            run([ruff, "format", "--no-cache", "--check", "."], cwd=project),
            f"ruff format --check ({what})",
        )
        mypy: list[str | Path] = [installed.bin("mypy"), "--python-executable", python]
        mypy += ["--cache-dir", mypy_cache]
        check_ok(run(mypy, cwd=project), f"mypy --strict ({what})")
        for docs in render(project).values():
            check_ingress(docs, combination["use_grpc"] == "yes", MONITORING)
