PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/python:
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

test: lint
	$(BIN)/pytest -q

bench: $(VENV)/.installed
	$(BIN)/python -m bench.kv

.PHONY: bench-checks
bench-checks: $(VENV)/.installed
	$(BIN)/python -m bench.checks

.PHONY: bench-dns
bench-dns: $(VENV)/.installed
	$(BIN)/python -m bench.dns

.PHONY: bench-proxy
bench-proxy: $(VENV)/.installed
	$(BIN)/python -m bench.proxy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
