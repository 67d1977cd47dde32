# The two commands of the README. Each creates .venv when missing and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= config.example.toml

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Migrate the embedded SQLite database, sync the bundled example directory, then serve.
run: $(VENV)/.installed
	$(BIN)/bridge --config $(CONFIG) db upgrade
	$(BIN)/bridge --config $(CONFIG) sync
	$(BIN)/bridge --config $(CONFIG) users list
	@echo "==> the console: open this one-time link to choose the operator's password, then sign in as ops@example.org"
	$(BIN)/bridge --config $(CONFIG) admins invite ops@example.org
	$(BIN)/bridge --config $(CONFIG) serve

test: $(VENV)/.installed-test
	$(BIN)/ruff check bridge tests bench
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q --durations=15

lint: $(VENV)/.installed-test
	$(BIN)/ruff check bridge tests bench
	$(BIN)/lint-imports
	$(BIN)/ruff format --check bridge tests bench

clean:
	rm -rf $(VENV) bridge.db bridge.db-wal bridge.db-shm
