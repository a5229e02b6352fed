# The template's own tasks. The generated service has its own Makefile inside the template.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

VENV := .venv
BIN := $(VENV)/bin
BUILD := build
SERVICE := orders

.PHONY: venv run test lint bench

venv: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --no-input -q -r requirements-dev.txt
	touch $@

# Bake the default service into build/ and run it in the foreground (Ctrl-C stops it).
run: venv
	$(BIN)/cookiecutter --no-input -f . -o $(BUILD)
	cd $(BUILD)/$(SERVICE) \
	  && python=$$(../../scripts/find-python.sh 3.12 3) \
	  && echo "run: $$python ($$($$python --version))" \
	  && { [ -x .venv/bin/python ] || $$python -m venv .venv; } \
	  && .venv/bin/python -m pip install --no-input -q -e . \
	  && .venv/bin/python -m $(SERVICE) migrate \
	  && exec .venv/bin/python -m $(SERVICE)

lint: venv
	$(BIN)/ruff check hooks tests bench
	$(BIN)/ruff format --check hooks tests bench
	$(BIN)/mypy

# Bake the default service into build/bench/ and run its benchmarks (`make bench` there, ~3-5
# minutes; needs wrk, h2load, PostgreSQL and Redis); the report is copied to the template's
# {{cookiecutter.service_name}}/docs/benchmarks.md. ARGS="--only http --rounds 5" narrows it down.
bench: venv
	bash scripts/ensure-services.sh
	$(BIN)/python -m bench.run_baked $(ARGS)

test: venv
	bash scripts/ensure-services.sh
	bash scripts/ensure-tools.sh
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest -n 2 --dist loadscope --durations=10
