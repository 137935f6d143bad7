# The two entry points: `make demo` (set up, run the built-in demo) and
# `make test` (set up, lint, run the tests). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup lint clean bench mutants

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hvmem demo

lint: $(STAMP)
	$(BIN)/ruff check src tests

# The tests run over every core (pytest-xdist); the modules that share this host (QEMU
# guests, KSM, cgroups) run together in one worker, first (tests/conftest.py says how the
# rest is spread). TEST_WORKERS=0 runs them all in this process.
TEST_WORKERS ?= auto

test: lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Plant each bug of tests/mutants/mutants.toml in a scratch copy and expect its tests to fail
# (a few minutes; not part of `make test`).
mutants: $(STAMP)
	$(BIN)/python tests/mutants/mutants.py

bench: $(STAMP)
	$(BIN)/hvmem bench translate --json

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
	find src -name __pycache__ -type d -prune -exec rm -rf {} +
