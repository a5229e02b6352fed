"""Project tooling run with the virtualenv's python: `python -m scripts.NAME`."""
