# galacto — the two set-up commands are `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: demo test lint typecheck unit bench system-packages clean

$(STAMP): pyproject.toml constraints.txt scripts/make-venv.sh
	scripts/make-venv.sh "$(PYTHON)" "$(VENV)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

## demo: the controller with the simulated equipment; AUTO=1 runs a scripted exam headless.
demo: $(STAMP)
	$(BIN)/galacto demo $(if $(AUTO),--auto) $(DEMO_ARGS)

## system-packages: Debian peers the interop tests talk to (installed when missing, as root).
system-packages:
	scripts/system-packages.sh

## unit: the fast loop — the pure and quick in-process tests (slow and interop left out), < 1 min.
unit: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not slow and not interop" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

## test: lint, type checks and the whole suite (pytest's "no tests" exit 5 fails too).
test: $(STAMP) system-packages lint typecheck
	$(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

bench: $(STAMP) system-packages
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
