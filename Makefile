# One entry point for every habit: run, test, lint, bench.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint bench soak clean venv

venv: $(STAMP)

# The locked versions first (what the Docker image runs), then the project and its dev tools:
# pip keeps every locked version, since each satisfies pyproject.toml's ranges.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/finrt dev

# The whole suite with coverage; fails under the floor in pyproject.toml (fail_under).
test: $(STAMP)
	$(BIN)/python -m pytest --cov --cov-report=term $(PYTEST_ARGS)

# The pure core only (no server, Redis or database): seconds.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m fast tests/fast tests/domain $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

# The hardening suites' long versions (about 12 minutes); prints and keeps the figures table.
soak: $(STAMP)
	FINRT_SOAK=1 $(BIN)/python -m pytest -m hardening $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* htmlcov
