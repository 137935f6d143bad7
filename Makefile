# The two entry points: `make demo` (set up, run the built-in demo) and
# `make test` (set up, lint, run the tests). Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup lint clean bench mutants validate

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

test: lint
	$(BIN)/python -m pytest -q

# Plant each bug of tests/mutants/mutants.toml in a scratch copy and expect its tests to fail
# (a few minutes; not part of `make test`).
mutants: $(STAMP)
	$(BIN)/python tests/mutants/mutants.py

# The aggregate fidelity against page fidelity: 8 seeds of demo, idle-tax, sharing and the
# first 10 minutes of bench-32vm at both fidelities, a table of every metric and its bound;
# rewrites tests/data/aggregate_validation.json (about 40 min; not part of `make test`).
validate: $(STAMP)
	$(BIN)/python -m hvmem.aggregate.validate --regenerate --seeds 8

bench: $(STAMP)
	$(BIN)/hvmem bench translate --json

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
	find src -name __pycache__ -type d -prune -exec rm -rf {} +
