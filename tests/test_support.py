"""The test helpers' own promises, and the interpreter lookup the generated Makefile uses."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import SUPPORTED_PYTHONS, find_python


def test_missing_python_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing interpreter is a failure with a message, never a skip."""
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("PYENV_ROOT", "/nonexistent")
    monkeypatch.setenv("HOME", "/nonexistent")
    with pytest.raises(pytest.fail.Exception, match=r"Python 3\.99 is required"):
        find_python("3.99")


@pytest.mark.parametrize("version", SUPPORTED_PYTHONS)
def test_supported_pythons_are_found(version: str) -> None:
    found = find_python(version)
    probe = subprocess.run(
        [found, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert probe.stdout.strip() == version


@pytest.mark.parametrize("version", SUPPORTED_PYTHONS)
def test_a_shim_that_cannot_run_its_version_is_looked_through(version: str, tmp_path: Path) -> None:
    """What pyenv's shim of an installed but inactive version does: it exists, and fails."""
    shim = tmp_path / f"python{version}"
    shim.write_text(
        f"#!/bin/sh\necho 'pyenv: python{version}: command not found' >&2\nexit 127\n",
        encoding="utf-8",
    )
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    found = find_python(version, env=env)
    assert found != shim
    assert found.is_file()
