# PETra developer tasks. Every target sets up what it needs, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The one list of packages is pyproject.toml's [tool.setuptools] packages
# (top-level ones: a sub-package is linted with its package)
PACKAGES := $(shell $(PYTHON) -c "import tomllib; print(' '.join(p for p in tomllib.load(open('pyproject.toml', 'rb'))['tool']['setuptools']['packages'] if '.' not in p))")
LINT_PATHS := $(PACKAGES) tests
PYTEST_ARGS ?=

.PHONY: venv system-deps lint check test demo bench clean

venv: $(VENV)/.stamp

# Rebuilt when missing or when pyproject.toml changes.
$(VENV)/.stamp: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

system-deps:
	bash scripts/system-deps.sh

# Style, types and the import contracts of pyproject.toml (the layers of DESIGN.md section 2).
lint: venv
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy $(LINT_PATHS)
	$(BIN)/lint-imports

# The edit-test loop: lint, types and the tests that start no server, on every core.
check: lint
	$(BIN)/python -m pytest -q -n auto --ignore=tests/integration -m "not slow and not postgres" --hypothesis-profile=check $(PYTEST_ARGS)

# Everything, in three parts (tests/conftest.py, --part): the quick tests on every core; the
# ones that start servers and networks of their own on two workers (they mostly wait for
# processes), a file's tests on one worker and every test on the private Tor network on one;
# then the ones that keep pace with a wall clock, one at a time, so that no other test slows
# them. The slowest of the last two parts are named at the end, to keep the suite's time in
# view. Exit status 5 is "no test selected": PYTEST_ARGS may pick tests of some parts only.
test: venv system-deps lint
	$(BIN)/python -m pytest -q -n auto --part=quick $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --durations=15 --part=servers $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(BIN)/python -m pytest --durations=5 --part=clocked $(PYTEST_ARGS) || [ $$? -eq 5 ]

# The main job: a community of ten homes, a simulated day, every node a process on loopback.
demo: venv
	$(BIN)/petra sim run

bench: venv
	$(BIN)/petra bench ledger
	$(BIN)/petra bench dso
	$(BIN)/petra bench bidstore
	$(BIN)/petra bench mixer
	$(BIN)/petra bench monitor
	$(BIN)/petra bench community
	$(BIN)/petra bench sim
	$(BIN)/petra bench meter

clean:
	rm -rf build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
