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
	$(MAKE) --no-print-directory libvirt-binding
	touch $(STAMP)

# libvirt's Python binding, where Debian's python3-libvirt is installed: its two files
# (not the rest of dist-packages) linked into .venv; the PyPI package builds from source
# against libvirt-dev. `hvmem libvirt` says what to install when it is missing.
LIBVIRT_BINDING_DIR ?= /usr/lib/python3/dist-packages
.PHONY: libvirt-binding
libvirt-binding:
	@site=$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	for f in $(LIBVIRT_BINDING_DIR)/libvirt.py $(LIBVIRT_BINDING_DIR)/libvirtmod.cpython-*.so; do \
	  if [ -e "$$f" ]; then ln -sf "$$f" "$$site/"; fi; \
	done

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
# (a few minutes; not part of `make test`). MUTANT_TIMEOUT=SECONDS gives each more time on a busy machine.
MUTANT_TIMEOUT ?= 900
mutants: $(STAMP)
	$(BIN)/python tests/mutants/mutants.py --timeout $(MUTANT_TIMEOUT)

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
