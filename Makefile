# The targets people and CI both call. The first run creates .venv and installs everything.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# The machine's own servers, for `make test-servers` (override on the command line).
SERVER_DSN   ?= postgresql://postgres@127.0.0.1:5432/test
SERVER_REDIS ?= redis://127.0.0.1:6379/0

.PHONY: install browser report report-quick test test-repeat test-busy test-servers lint bench clean services-down

# uv installs the same requirements as pip from PyPI in about 10 s where pip takes about 50 s (this
# machine, a cold cache either way); pip is the fallback when uv cannot be had or cannot install.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	{ $(BIN)/pip install -qq uv && $(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'; } || \
	  { $(BIN)/pip install --quiet --upgrade pip && $(BIN)/pip install --quiet -e '.[dev]'; }
	touch $@

# Debian's Chromium for the browser test (tests/test_notebook_browser.py drives it with playwright) and
# wrk, the HTTP load generator of benchmarks/bench_api.py (tests/test_bench_api.py runs it).
# Installed when missing and this is a Debian machine where we are root; the tests say why they skip otherwise.
CHROMIUM ?= /usr/bin/chromium
# Debian's HypoPG for PostgreSQL 15 (what `indexes advise` screens with on the machine's server), when apt knows it.
HYPOPG_PKG ?= postgresql-15-hypopg
browser:
	@if { [ ! -x $(CHROMIUM) ] || ! command -v wrk >/dev/null || \
	      { ! dpkg -s $(HYPOPG_PKG) >/dev/null 2>&1 && apt-cache show $(HYPOPG_PKG) >/dev/null 2>&1; }; } && \
	    [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq chromium wrk \
			$$(apt-cache show $(HYPOPG_PKG) >/dev/null 2>&1 && echo $(HYPOPG_PKG)) >/dev/null; \
	fi

install: $(BIN)/.installed

## The main job: the performance report on the embedded servers (reports/<run-id>/).
report: install
	$(BIN)/psra-bench report $(ARGS)

report-quick: install
	$(BIN)/psra-bench report --quick $(ARGS)

# Tests and the notebooks they run share one embedded server pair in the checkout.
TEST_HOME ?= $(CURDIR)/.psra-bench/test-home
# Two pytest workers (pytest-xdist): most tests wait on servers and child processes, so two share
# the two cores well. A file's tests (a notebook's cells) stay on one worker, and one notebook runs at
# a time (a lock in the root conftest.py). TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

## The test suite (and every notebook, under nbval) on the embedded PostgreSQL 18 + Valkey
## (or on PSRA_DB_DSN / REDIS_URL when set).
test: install browser
	PSRA_BENCH_HOME=$${PSRA_BENCH_HOME:-$(TEST_HOME)} $(PYTEST) $(ARGS)

## The suite REPEAT times in a row (default 3), stopping at the first failure: a flaky test shows here.
REPEAT ?= 3
test-repeat: install
	@for i in $$(seq 1 $(REPEAT)); do \
		echo "== make test: run $$i of $(REPEAT)"; start=$$(date +%s); \
		$(MAKE) --no-print-directory test || { echo "== run $$i of $(REPEAT) failed"; exit 1; }; \
		echo "== run $$i of $(REPEAT) passed in $$(( $$(date +%s) - start )) s"; \
	done

## The suite once while every core is kept busy by a CPU burner: timing must not decide a test.
test-busy: install
	$(BIN)/python tests/cpu_burner.py -- $(MAKE) --no-print-directory test

## The same suite against real servers (PostgreSQL 15 and Redis 7 on this machine by default).
test-servers: install browser
	PSRA_BENCH_HOME=$${PSRA_BENCH_HOME:-$(TEST_HOME)} PSRA_DB_DSN=$(SERVER_DSN) REDIS_URL=$(SERVER_REDIS) \
		$(PYTEST) $(ARGS)

lint: install
	$(BIN)/ruff check conftest.py psra_bench tests benchmarks loadtests
	$(BIN)/ruff format --check conftest.py psra_bench tests benchmarks loadtests
	$(BIN)/mypy

bench: install
	$(BIN)/python benchmarks/bench_queries.py
	$(BIN)/python benchmarks/bench_cache.py
	$(BIN)/python benchmarks/bench_jobs.py
	$(BIN)/python benchmarks/bench_api.py

services-down: install
	$(BIN)/psra-bench services down
	PSRA_BENCH_HOME=$(TEST_HOME) $(BIN)/psra-bench services down

clean:
	rm -rf $(VENV) .venv-arq .pytest_cache .ruff_cache .mypy_cache
