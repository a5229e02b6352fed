"""Install the uv that uv.lock pins into a virtualenv of its own, checked against the lock's hashes.

    python scripts/bootstrap_uv.py .uv        # in the project; then .uv/bin/uv (what `make` does)

uv is the one tool that cannot come from uv.lock through uv, so it comes from uv.lock through pip:
exactly the version of the `uv` entry of ./uv.lock, every file checked against the hashes recorded
there (`pip install --require-hashes`), from the package index and nowhere else (no curl
installer). Standard library only: it runs before anything is installed. Does nothing when the
directory already holds that version.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

LOCK = Path("uv.lock")  # the project's, in the working directory


def locked_uv(lock_text: str) -> tuple[str, list[str]]:
    """The version and the sha256 hashes of the lock's `uv` package."""
    for block in lock_text.split("\n\n"):
        if block.startswith('[[package]]\nname = "uv"\n'):
            version = re.search(r'^version = "([^"]+)"$', block, flags=re.MULTILINE)
            hashes = re.findall(r'hash = "sha256:([0-9a-f]{64})"', block)
            if version and hashes:
                return version.group(1), hashes
    raise SystemExit(f"bootstrap_uv: {LOCK} has no uv package with hashes")


def installed_version(uv: Path) -> str | None:
    try:
        result = subprocess.run(
            [str(uv), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    found = re.match(r"uv (\S+)", result.stdout)
    return found.group(1) if result.returncode == 0 and found else None


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    target = Path(sys.argv[1])
    uv = target / "bin" / "uv"
    version, hashes = locked_uv(LOCK.read_text(encoding="utf-8"))
    if installed_version(uv) == version:
        uv.touch()  # newer than uv.lock: make does not come back
        return 0
    venv.create(target, clear=True, with_pip=True)
    requirement = f"uv=={version} " + " ".join(f"--hash=sha256:{h}" for h in hashes)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as requirements:
        requirements.write(requirement + "\n")
    command = [str(target / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-input"]
    command += ["--disable-pip-version-check", "--require-hashes", "--no-deps"]
    command += ["--only-binary", ":all:", "--requirement", requirements.name]
    try:
        subprocess.run(command, check=True, timeout=600)
    finally:
        Path(requirements.name).unlink()
    if installed_version(uv) != version:
        raise SystemExit(f"bootstrap_uv: {uv} does not report uv {version}")
    print(f"bootstrap_uv: uv {version} in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
