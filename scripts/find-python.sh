#!/usr/bin/env bash
# Print the path of a working interpreter for the best of the given versions, in order
# (e.g. `find-python.sh 3.12 3`): pythonX.Y on PATH, else $(pyenv root)/versions/X.Y.*; "3" means
# plain python3. A pyenv shim that exists but cannot run that version does not count.
set -euo pipefail

works() { "$1" -c 'import sys' >/dev/null 2>&1; }

for version in "$@"; do
    if [ "$version" = 3 ]; then
        candidates=(python3)
    else
        candidates=("python$version")
        if command -v pyenv >/dev/null 2>&1; then
            root=$(pyenv root)
            mapfile -t found < <(ls -d "$root"/versions/"$version".*/bin/python 2>/dev/null | sort -V -r)
            candidates+=("${found[@]}")
        fi
    fi
    for candidate in "${candidates[@]}"; do
        if path=$(command -v "$candidate" 2>/dev/null) && works "$path"; then
            echo "$path"
            exit 0
        fi
    done
done
echo "find-python: none of Python $* is available" >&2
exit 1
