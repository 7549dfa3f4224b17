VENV ?= .venv
PY := $(VENV)/bin/python
FLASK := $(VENV)/bin/flask --app wsgi
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint format bench bench-compare

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

# LiteLLM's proxy beside RelayGate (issue 13): LiteLLM goes into its own virtualenv on the first run.
LITELLM_VERSION ?= 1.108.7
LITELLM_VENV := bench/.litellm-venv

$(LITELLM_VENV)/.installed-$(LITELLM_VERSION):
	@mkdir -p bench/results
	@echo "Installing litellm[proxy]==$(LITELLM_VERSION) into $(LITELLM_VENV) (first run only, about a minute)"
	@(python3 -m venv $(LITELLM_VENV) && $(LITELLM_VENV)/bin/pip install -q --upgrade pip \
	  && $(LITELLM_VENV)/bin/pip install -q "litellm[proxy]==$(LITELLM_VERSION)") >bench/results/litellm-install.log 2>&1 \
	  || { echo "bench-compare: pip cannot install litellm[proxy]==$(LITELLM_VERSION) here (bench/results/litellm-install.log)"; exit 1; }
	@touch $@

bench-compare: install $(LITELLM_VENV)/.installed-$(LITELLM_VERSION)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	@command -v taskset >/dev/null || { echo "bench-compare: taskset (util-linux) is needed to pin each target to a core"; exit 1; }
	$(PY) bench/compare.py
