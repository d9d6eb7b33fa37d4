# Trainyard: `make run` starts the platform, `make test` runs every check.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
DATA_DIR ?= .data

.PHONY: install run test lint typecheck imports pytest browser-deps bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/trainyard up --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

lint: install
	$(BIN)/ruff check app worker tests bench samples

typecheck: install
	$(BIN)/mypy

imports: install
	$(BIN)/lint-imports

browser-deps:
	@command -v chromium >/dev/null 2>&1 || ( \
	  echo "installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	  || echo "chromium could not be installed: browser tests will be skipped" )

pytest: install
	$(BIN)/pytest -q --durations=15

test: install browser-deps lint typecheck imports pytest

bench: install
	$(BIN)/python bench/latency.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
