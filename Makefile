# The template's own tasks. The generated service has its own Makefile inside the template.
#
# The tooling (cookiecutter, pytest, ruff, mypy, ...) installs from uv.lock with `uv sync --locked`
# into .venv; uv itself is the version uv.lock pins, bootstrapped into .uv (pip, hash-checked) by
# the same script the generated projects use.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

PROJECT_SCRIPTS := {{cookiecutter.service_name}}/scripts
ifndef PYTHON
PYTHON := $(shell '$(PROJECT_SCRIPTS)/find-python.sh' 3.12 3.13 3.11)
endif
UV := .uv/bin/uv
BIN := .venv/bin
BUILD := build
SERVICE := orders
export UV_PYTHON_DOWNLOADS := never

.PHONY: venv run test lint lock bench python

python:
	@[ -n "$(PYTHON)" ] || { echo "make: no Python 3.11-3.13 found; install one or set PYTHON" >&2; exit 1; }

$(UV): uv.lock | python
	$(PYTHON) '$(PROJECT_SCRIPTS)/bootstrap_uv.py' .uv

venv: $(UV)
	$(UV) sync --locked --python $(PYTHON)

# Bake the default service into build/orders and run it with its own `make run` (which installs
# it from its uv.lock and migrates it); Ctrl-C stops it.
run: venv
	$(BIN)/cookiecutter --no-input -f . -o $(BUILD)
	$(MAKE) --no-print-directory -C $(BUILD)/$(SERVICE) run

lint: venv
	$(UV) lock --locked --python $(PYTHON)
	$(BIN)/ruff check hooks tests bench scripts
	$(BIN)/ruff format --check hooks tests bench scripts
	$(BIN)/mypy

# Re-resolve uv.lock (the template's tooling) and the generated project's uv.lock, a Jinja
# template covering every answer set (scripts/lock_template.py); ARGS=--upgrade moves both to the
# newest versions pyproject.toml allows.
lock: $(UV)
	$(UV) lock --python $(PYTHON) $(ARGS)
	$(UV) sync --locked --python $(PYTHON)
	$(BIN)/python scripts/lock_template.py $(ARGS)

# Bake the default service into build/bench/ and run its benchmarks (`make bench` there, ~3-5
# minutes; needs wrk, h2load, PostgreSQL and Redis); the report is copied to the template's
# {{cookiecutter.service_name}}/docs/benchmarks.md. ARGS="--only http --rounds 5" narrows it down.
bench: venv
	bash scripts/ensure-services.sh
	bash scripts/ensure-tools.sh
	$(BIN)/python -m bench.run_baked $(ARGS)

# Three workers on two cores: the suite mostly waits (drain delays, real processes, timeouts);
# with two, the run kept one core busy on average. The longest classes first (tests/conftest.py:
# LONGEST_FIRST; xdist's own reorder would put them last).
test: venv
	bash scripts/ensure-services.sh
	bash scripts/ensure-tools.sh
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest -n 3 --dist loadscope --no-loadscope-reorder --durations=10
