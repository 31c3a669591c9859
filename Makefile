# The two commands of the Quick start are `make run` and `make test`; CI runs
# `make test` through .ci/run. Everything installs into .venv.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: install run test lint typecheck unit infra bench faults clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

## Run the demo: a local Bitbucket simulator, the real pipeline, a summary.
run: install
	$(BIN)/bbaudit demo

## Install the test receivers, then lint, type-check and run every test.
test: install infra lint typecheck unit

infra:
	VENV=$(abspath $(VENV)) bash tests/infra/install.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest

## Throughput and memory of the whole pipeline against each sink.
bench: install infra
	PYTHONPATH=. $(BIN)/python -m bench

## The long form of the fault harness.
faults: install infra
	BBAUDIT_FAULTS=long $(BIN)/pytest tests/faults -v

clean:
	rm -rf $(VENV) bbaudit-demo bbaudit-replay .mypy_cache .ruff_cache .pytest_cache
