"""The test helpers' own promises."""

from __future__ import annotations

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
    assert find_python(version).is_file()
