# Cueline developer entry points.  `make run` and `make test` do all the set-up themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
WEB_WORKERS ?= 2

export FLASK_APP := wsgi

.PHONY: run test install lint clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## make run: serve on http://$(HOST):$(PORT) with the SQLite default under instance/.
run: $(STAMP)
	mkdir -p instance
	$(BIN)/flask db upgrade
	exec $(BIN)/gunicorn --bind $(HOST):$(PORT) --workers $(WEB_WORKERS) \
		--access-logfile - wsgi:app

## make test: the whole suite on SQLite and on a throwaway PostgreSQL cluster.
test: $(STAMP)
	CUELINE_TEST_REQUIRE_POSTGRES=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/python -m pip install --quiet ruff
	$(BIN)/ruff check app config.py wsgi.py tests

clean:
	rm -rf $(VENV) *.egg-info
