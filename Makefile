VENV ?= .venv
PY := $(VENV)/bin/python
FLASK := $(VENV)/bin/flask --app wsgi
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint format bench

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

# One process: with no REDIS_URL the live state is in-process (embedded mode).
run: install
	$(FLASK) db upgrade
	$(FLASK) quickstart --host $(HOST) --port $(PORT)
	$(VENV)/bin/gunicorn -c gunicorn.conf.py -w 1 -b $(HOST):$(PORT) wsgi:app

test: install
	.ci/services
	$(VENV)/bin/pytest

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format:
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) bench/relay_bench.py
