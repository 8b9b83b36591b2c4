PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/python:
	@scripts/check-python $(PY)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/buoy agent -dev

lint: $(VENV)/.installed
	$(BIN)/ruff check buoy tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: system-deps-test lint
	$(BIN)/pytest -q

bench: system-deps-bench $(VENV)/.installed
	$(BIN)/python -m bench.kv

.PHONY: bench-checks
bench-checks: $(VENV)/.installed
	$(BIN)/python -m bench.checks

.PHONY: bench-dns
bench-dns: system-deps-bench-dns $(VENV)/.installed
	$(BIN)/python -m bench.dns

.PHONY: bench-proxy
bench-proxy: system-deps-bench-proxy $(VENV)/.installed
	$(BIN)/python -m bench.proxy

# The Debian tools a target drives (scripts/system-deps GROUP), installed as root or named otherwise; listed
# first so that a missing one stops the target before the slow venv set-up.
system-deps-%:
	@scripts/system-deps $*

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .grimp_cache
