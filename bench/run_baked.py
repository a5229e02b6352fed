"""Bake the default service, install it, run its benchmarks, keep the report in the template.

    python -m bench.run_baked [ARGS...]   # what `make bench` runs; ARGS go to `python -m bench`

The benchmarks themselves live in the generated project (`bench/`, `make bench` there), since
they import the service and run it as built. This driver bakes the default answers into
build/bench/, installs it from its uv.lock (`make install` there; uv's cache makes it quick),
runs the benchmarks with its own `make bench` (servers from the runtime dependencies alone, as
the image installs them) and copies the resulting docs/benchmarks.md into the template, so every
generated project ships with the reference figures (and its findings) of the template itself.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEMPLATE_PROJECT = REPO / "{{cookiecutter.service_name}}"
BUILD = REPO / "build" / "bench"
SERVICE = "orders"
REPORT = Path("docs") / "benchmarks.md"
JINJA_MARKERS = ("{{", "{%", "{#")


def run(cmd: Sequence[str | Path], cwd: Path | None = None) -> None:
    print("+", " ".join(str(part) for part in cmd), flush=True)
    subprocess.run([str(part) for part in cmd], cwd=cwd, check=True, timeout=3600)


def bake() -> Path:
    """The default answers, baked afresh and installed by the project's own `make install`."""
    project = BUILD / SERVICE
    if project.exists():
        shutil.rmtree(project)
    cookiecutter = Path(sys.executable).parent / "cookiecutter"
    run([cookiecutter, "--no-input", "-f", REPO, "-o", BUILD])
    run(["make", "--no-print-directory", "install"], project)
    return project


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    project = bake()
    template_report = TEMPLATE_PROJECT / REPORT
    if template_report.exists():  # keep the findings written after the generated results
        (project / REPORT).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template_report, project / REPORT)
    run(["make", "--no-print-directory", "bench", f"ARGS={shlex.join(args)}"], project)
    text = (project / REPORT).read_text()
    if any(marker in text for marker in JINJA_MARKERS):
        raise SystemExit(f"{REPORT} would not render as a template: it contains Jinja markers")
    if "--output" not in " ".join(args):
        template_report.parent.mkdir(parents=True, exist_ok=True)
        template_report.write_text(text)
        print(f"copied to {template_report.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
