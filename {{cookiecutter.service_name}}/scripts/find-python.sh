#!/usr/bin/env bash
# Print the path of a working interpreter for the first of the given versions that is installed
# (`find-python.sh 3.12 3.13 3.11`): every pythonX.Y on PATH, then $(pyenv root)/versions/X.Y.*,
# newest patch first; it prints the interpreter's own path. A candidate counts only if it runs and is that version: a pyenv shim of an
# installed but inactive version ("pyenv: python3.12: command not found") does not.
set -euo pipefail

# The interpreter itself (a shim's target), if the candidate runs and is that version.
resolve() { # path version
    "$1" -c 'import sys; assert "%d.%d" % sys.version_info[:2] == sys.argv[1]; print(sys.executable)' \
        "$2" 2>/dev/null
}

for version in "$@"; do
    candidates=()
    while IFS= read -r found; do candidates+=("$found"); done < <(type -aP "python$version" || true)
    root=${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")}
    while IFS= read -r found; do candidates+=("$found"); done < <(
        ls -d "$root"/versions/"$version".*/bin/python 2>/dev/null | sort -V -r || true
    )
    for candidate in "${candidates[@]}"; do
        if resolve "$candidate" "$version"; then
            exit 0
        fi
    done
done
echo "find-python: no working Python $* found (looked on PATH and in pyenv's versions)" >&2
exit 1
