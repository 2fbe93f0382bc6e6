# Cueline developer entry points.  `make run` and `make test` do all the set-up themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The cueapi CLI ships a top-level module named like cueapi-sdk's, so it gets its own venv.
CLI_VENV ?= .venv-cli
CLI_STAMP := $(CLI_VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
WEB_WORKERS ?= 2

export FLASK_APP := wsgi

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test install system-deps bench soak lint clean console-screenshots console-bench

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet -e ./client
	touch $(STAMP)

$(CLI_STAMP):
	test -x $(CLI_VENV)/bin/python || $(PYTHON) -m venv $(CLI_VENV)
	$(CLI_VENV)/bin/python -m pip install --quiet 'cueapi==0.2.0'
	touch $(CLI_STAMP)

install: $(STAMP)

## make run: serve on http://$(HOST):$(PORT) with the SQLite default under instance/, plus the
## background worker (scheduler and deliveries).  Prints one "ready" line with the URLs, writes
## instance/cueline.pid; Ctrl-C (or SIGTERM to that pid) stops both.
run: $(STAMP)
	@mkdir -p instance
	@$(BIN)/flask db upgrade
	@exec env VENV_BIN=$(BIN) bin/run-all --bind $(HOST):$(PORT) --workers $(WEB_WORKERS) \
		wsgi:app

## System packages the suite needs (Debian archive): PostgreSQL server binaries, Redis, nginx,
## and Chromium with its WebDriver for the console's browser tests.  The tests start their own
## throwaway servers on loopback ports; nothing is left running.  nginx and Chromium are
## optional: without root or a network their install is skipped with a warning and the tests
## that need them skip, saying so.
system-deps:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		echo "Installing PostgreSQL server binaries"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q postgresql-15; }
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "Installing redis-server"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q redis-server; }
	@command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || { \
		echo "Installing nginx (the suite checks deploy/nginx/cueline.conf with nginx -t)"; \
		$(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q nginx || \
		echo "nginx could not be installed: the nginx test will be skipped"; }
	@{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || { \
		echo "Installing chromium and chromium-driver (console browser tests)"; \
		{ $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium chromium-driver; } \
		|| echo "WARNING: could not install chromium/chromium-driver; the console browser tests will skip"; }

## make test: the whole suite on SQLite and on a throwaway PostgreSQL cluster, in
## $(TEST_PROCESSES) pytest processes (pytest-xdist; one file stays in one process, and each
## process starts its own PostgreSQL and Redis).  Many tests wait on servers they start, so
## three processes keep two cores busy.  TEST_PROCESSES=0 runs everything in one process.
## Browser screenshots of the console land in .artifacts/console/.
TEST_PROCESSES ?= 3
test: system-deps $(STAMP) $(CLI_STAMP)
	CUELINE_TEST_REQUIRE_POSTGRES=1 CUELINE_TEST_REQUIRE_REDIS=1 \
		CUELINE_CUEAPI_CLI=$(CURDIR)/$(CLI_VENV)/bin/cueapi \
		CUELINE_TEST_ARTIFACTS=$(CURDIR)/.artifacts/console \
		$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

## make soak: the reliability suite at full strength (thousands of fuzzed requests).
soak: system-deps $(STAMP)
	CUELINE_TEST_REQUIRE_POSTGRES=1 CUELINE_TEST_REQUIRE_REDIS=1 CUELINE_FUZZ_EXAMPLES=100 \
		CUELINE_SOAK=1 $(BIN)/python -m pytest tests/reliability $(PYTEST_ARGS)

## make bench: load (the production profile — PostgreSQL, Redis limiter, one sync worker per core,
## JSON request log — then the same with one worker), per-request costs, scheduler, bulk-sync,
## per-layer and import benchmarks on throwaway PostgreSQL and Redis servers (not part of test).
bench: system-deps $(STAMP)
	@command -v wrk >/dev/null 2>&1 || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q wrk; }
	$(BIN)/python bench/http_bench.py --profile production $(BENCH_ARGS)
	$(BIN)/python bench/http_bench.py --profile one-worker $(BENCH_ARGS)
	$(BIN)/python bench/request_costs.py
	$(BIN)/python bench/scheduler_bench.py
	$(BIN)/python bench/bulk_sync_bench.py
	$(BIN)/python bench/layers_bench.py
	$(BIN)/python bench/import_bench.py

## make console-screenshots: remake docs/images/console/*.png from the browser suite (1280x800,
## SQLite, seeded data), then shrink them to 256-colour PNGs.
console-screenshots: system-deps $(STAMP)
	CUELINE_CONSOLE_DOCS=1 CUELINE_TEST_ARTIFACTS=$(CURDIR)/docs/images/console \
		$(BIN)/python -m pytest tests/console/test_browser.py -q -k sqlite
	$(BIN)/python -m pip install --quiet 'pillow>=10,<14'
	$(BIN)/python bin/shrink-png docs/images/console/*.png

## make console-bench: the console's tables on 1,000,000 executions (PostgreSQL; not a test).
console-bench: system-deps $(STAMP)
	$(BIN)/python bench/console_bench.py $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/python -m pip install --quiet ruff
	$(BIN)/ruff check app config.py wsgi.py gunicorn.conf.py tests client examples

clean:
	rm -rf $(VENV) $(CLI_VENV) *.egg-info
