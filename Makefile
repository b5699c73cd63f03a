# fedpers: two commands to start, `make run` and `make test`.
# The virtual environment is created on first use; torch is pinned first by exact
# version so that pip takes the CPU build instead of gigabytes of CUDA packages.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fedpers-installed
TORCH  := torch==2.13.0
RUNS   ?= runs
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv run test test-slow lint typecheck bench clean help chromium

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

venv: $(STAMP)  ## create or update .venv with the project and its dev tools

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

RUN_DIR := $(RUNS)/ml100k-eps8-$(shell date +%Y%m%d-%H%M%S)

run: venv  ## fetch ML-100K, run a user-level DP federation (epsilon 8) and audit it
	$(BIN)/fedpers data fetch ml-100k
	$(BIN)/fedpers simulate --dataset ml-100k --dp user --epsilon 8 --out $(RUN_DIR)
	$(BIN)/fedpers audit $(RUN_DIR) --check
	@echo "run directory: $(RUN_DIR)  (open $(RUN_DIR)/report.html)"

lint: venv  ## ruff, mypy and the import contracts
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint  ## lint + the fast test suite (pytest exit 5, "no tests ran", is not a failure)
	$(BIN)/python -m pytest -m "not slow" -q; rc=$$?; if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc

test-slow: venv  ## the slow suites (long federations, kill-and-resume, attacks)
	$(BIN)/python -m pytest -m slow -q; rc=$$?; if [ $$rc -eq 5 ]; then rc=0; fi; exit $$rc

bench: venv  ## every benchmark in benchmarks/; figures go to docs/benchmarks.md by hand
	$(BIN)/python benchmarks/run_all.py

# Headless Chromium from Debian's packages (never a browser download): the audit report's
# render test and the storefront/privacy-center browser test drive /usr/bin/chromium.
chromium:  ## install Debian's chromium when it is missing (root or passwordless sudo)
	@if command -v chromium >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = "0" ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else echo "warning: chromium is missing and apt-get needs root; the browser tests fail under CI" >&2; exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then echo "warning: no apt-get to install chromium" >&2; exit 0; fi; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium >/dev/null \
	  || echo "warning: could not install chromium; the browser tests fail under CI" >&2

clean:  ## remove the virtual environment and caches (keeps runs/ and the data cache)
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
