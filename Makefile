# PETra developer tasks. Every target sets up what it needs, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LINT_PATHS := assets ledger petra smartmeter dso mixer bidstore wallet tests
PYTEST_ARGS ?=

.PHONY: venv system-deps lint test demo bench clean

venv: $(VENV)/.stamp

# Rebuilt when missing or when pyproject.toml changes.
$(VENV)/.stamp: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

system-deps:
	bash scripts/system-deps.sh

lint: venv
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy $(LINT_PATHS)

test: venv system-deps lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: venv
	$(BIN)/petra ledger demo

bench: venv
	$(BIN)/petra bench ledger
	$(BIN)/petra bench dso
	$(BIN)/petra bench bidstore
	$(BIN)/petra bench mixer

clean:
	rm -rf build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
