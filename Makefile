# The two commands that do all set-up on a fresh machine:
#   make demo   runs the agent on the embedded default (SQLite, local transport, a demo fleet under ./demo)
#   make test   installs the test servers and Python dependencies, then runs the whole suite, and beside it
#               every server-less test again under libfaketime five years ahead (no test may depend on the date)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint venv

$(BIN)/arrears: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(BIN)/arrears

demo: venv
	$(BIN)/arrears demo demo --replace

test: venv
	bash scripts/install-test-deps.sh
	$(BIN)/ruff check .
	$(BIN)/mypy
	bash scripts/run-suite.sh $(BIN)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy
