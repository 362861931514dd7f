# The two commands that do all set-up on a fresh machine:
#   make demo   runs the agent on the embedded default (SQLite, local transport, a demo fleet under ./demo)
#   make test   installs the test servers and Python dependencies, then runs the whole suite, and every
#               server-less test again under libfaketime five years ahead (no test may depend on the date)
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
	$(BIN)/pytest -q
	@# No test may depend on today's date: every test that needs no server again, five years ahead
	@# (libfaketime). NO_FAKE_STAT: libfaketime would shift the times some of tar's stat calls see and not
	@# others', so tar --compare of a fresh archive reports "Mod time differs"; file times stay the disk's.
	NO_FAKE_STAT=1 faketime -f +1826d $(BIN)/pytest -q -m "not servers"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy
