# The README's two commands: `make dev` (the UI on demo data) and `make test`. Needs only python3 and make.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
BIN := $(VENV)/bin
UV := .bootstrap/bin/uv

# .env (optional, ignored by git) may override any variable below; `dagster dev` reads it too.
-include .env

DAGSTER_HOME := $(CURDIR)/.dagster_home
DBT_PROJECT_DIR ?= $(CURDIR)/dbt_project
DBT_PROFILES_DIR ?= $(DBT_PROJECT_DIR)
LANDING_URL ?= $(CURDIR)/.data/landing
DUCKDB_PATH ?= $(CURDIR)/.data/warehouse.duckdb
CRM_PORT ?= 8765
CRM_URL ?= http://127.0.0.1:$(CRM_PORT)
# The local CRM server checks this bearer token, so development exercises the same auth path as production.
CRM_TOKEN ?= dev-token
WEBHOOK_PORT ?= 8766
WEBHOOK_URL ?= http://127.0.0.1:$(WEBHOOK_PORT)/hooks
# The local receiver verifies signatures with this secret, as a real receiver would.
WEBHOOK_SECRET ?= dev-webhook-secret
DAGSTER_PORT ?= 3000
# Links in alerts, and where `python -m pipeline.replay` finds the webserver.
DAGSTER_UI_BASE_URL ?= http://127.0.0.1:$(DAGSTER_PORT)
DEMO_DAYS ?= 14
DEMO_CUSTOMERS ?= 500
# First daily partition of the raw tables; unset, `make dev` starts them on the demo's first day (see `dev`).
LANDING_START_DATE ?=
# `make dev DBT_ENGINE=cloud`: dbt runs on the local dbt Cloud stand-in (devstack/dbt_cloud, on DBT_CLOUD_PORT), which
# speaks dbt Cloud's API and runs dbt Core behind it; the code location reaches it through dagster-dbt's dbt Cloud
# integration with these settings. For a real dbt Cloud account leave DBT_ENGINE unset and put the DBT_CLOUD_*
# settings in .env (README, "dbt Cloud").
DBT_ENGINE ?= core
# Not passed on to dbt: its own settings take the DBT_ENGINE_ prefix, and it warns about any other variable there.
unexport DBT_ENGINE
DBT_CLOUD_PORT ?= 8767
# Make's own variable, not a setting: the code location refuses DBT_CLOUD_* settings without DBT_CLOUD_ACCOUNT_ID,
# and a variable given on make's command line is exported to the recipes.
unexport DBT_CLOUD_PORT
ifeq ($(DBT_ENGINE),cloud)
DBT_CLOUD_ENV = DBT_CLOUD_ACCOUNT_ID=1 DBT_CLOUD_PROJECT_ID=1 DBT_CLOUD_ENVIRONMENT_ID=1 \
	DBT_CLOUD_URL=http://127.0.0.1:$(DBT_CLOUD_PORT) DBT_CLOUD_TOKEN=dev-dbt-cloud-token DBT_CLOUD_POLL_INTERVAL_SECONDS=2
DBT_CLOUD_ARGS = --dbt-cloud-port $(DBT_CLOUD_PORT)
else ifneq ($(DBT_ENGINE),core)
$(error DBT_ENGINE=$(DBT_ENGINE): expected core (dbt Core, the default) or cloud (the local dbt Cloud stand-in))
endif
# The venv's bin first on PATH: dagster-dbt's prepare_if_dev() runs `dbt parse` through the `dbt` on PATH.
DEV_ENV = PATH=$(CURDIR)/$(BIN):$$PATH DAGSTER_HOME=$(DAGSTER_HOME) DBT_PROJECT_DIR=$(DBT_PROJECT_DIR) DBT_PROFILES_DIR=$(DBT_PROFILES_DIR) \
	LANDING_START_DATE=$(LANDING_START_DATE) \
	LANDING_URL=$(LANDING_URL) DUCKDB_PATH=$(DUCKDB_PATH) CRM_URL=$(CRM_URL) CRM_TOKEN=$(CRM_TOKEN) \
	WEBHOOK_URL=$(WEBHOOK_URL) WEBHOOK_SECRET=$(WEBHOOK_SECRET) DAGSTER_UI_BASE_URL=$(DAGSTER_UI_BASE_URL) \
	$(DBT_CLOUD_ENV)

.PHONY: help install parse demo-data dev test lint fmt bench slim-ci dbt-cloud-import clean

help:
	@echo "make dev    install, parse dbt, generate demo data, start the local CRM and dagster dev on :$(DAGSTER_PORT)"
	@echo "make test   install, parse dbt, run the test suite"
	@echo "make lint   ruff check + format check + import layering     make fmt   ruff fix + format"
	@echo "make bench  the benchmark suite (not part of make test)"
	@echo "make slim-ci  build what this checkout changed against a copy of production, and report the impact"
	@echo "make dev DBT_ENGINE=cloud   the same, with dbt run by the local dbt Cloud stand-in"
	@echo "make dbt-cloud-import   dbt Cloud's scheduled jobs as Dagster schedules (DBT_CLOUD_SCHEDULES_PATH)"

$(UV):
	$(PYTHON) -m venv .bootstrap
	.bootstrap/bin/pip install --quiet uv==$(UV_VERSION)

# --compile-bytecode: uv installs without .pyc files, and where PYTHONDONTWRITEBYTECODE=1 (CI, containers) none are
# ever written, so every process compiles Dagster's and dbt's modules again: ~2.5 s of each run worker's start-up and
# ~1 s of each dbt invocation (bench P2).
$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-groups --all-extras --compile-bytecode --python $(PYTHON)
	touch $@

install: $(VENV)/.installed

# A manifest must exist before the code location loads (prepare_if_dev only parses under `dagster dev`).
parse: install
	$(BIN)/dbt parse --quiet --project-dir $(DBT_PROJECT_DIR) --profiles-dir $(DBT_PROFILES_DIR)

demo-data: install
	$(BIN)/python -m devstack.demo_data --landing $(LANDING_URL) --days $(DEMO_DAYS) --customers $(DEMO_CUSTOMERS) --if-absent

# The local instance's config (devstack/dagster.yaml; not in the root, where `dagster dev` would warn about it).
$(DAGSTER_HOME)/dagster.yaml: devstack/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp devstack/dagster.yaml $@

# The local CRM's database and the webhook receiver's log.
DEV_DATA ?= $(CURDIR)/.data

# Starts the local CRM server, the local webhook receiver and `dagster dev` (devstack/dev.py); one Ctrl-C stops all
# three, runs in progress included.
dev: parse demo-data $(DAGSTER_HOME)/dagster.yaml
	@export $(DEV_ENV); \
	export LANDING_START_DATE=$${LANDING_START_DATE:-$$($(BIN)/python -m devstack.demo_data --landing $(LANDING_URL) --first-day)}; \
	exec $(BIN)/python -m devstack.dev --crm-port $(CRM_PORT) --webhook-port $(WEBHOOK_PORT) \
		--dagster-port $(DAGSTER_PORT) --data $(DEV_DATA) $(DBT_CLOUD_ARGS)

test: parse
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

fmt: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: parse
	$(BIN)/python -m bench $(BENCH_ARGS)

# A pull request's check (pipeline/slim_ci.py): production's manifest from DBT_ARTIFACTS_URL, a copy of production's
# warehouse (SLIM_CI_PRODUCTION_DUCKDB_PATH, default DUCKDB_PATH) in SLIM_CI_DUCKDB_PATH, `dbt build --select
# state:modified+ --defer`, the impact report in .data/ci/report/ (SLIM_CI_ARGS="--report-dir DIR" to move it).
# The settings it reads that .env may set (those set in the environment reach it anyway).
SLIM_CI_SETTINGS := DBT_TARGET DBT_ARTIFACTS_URL LANDING_ENDPOINT_URL LANDING_REGION SLIM_CI_DUCKDB_PATH \
	SLIM_CI_PRODUCTION_DUCKDB_PATH
slim-ci: install
	$(foreach name,$(SLIM_CI_SETTINGS),$(if $($(name)),$(name)='$($(name))')) \
		DBT_PROJECT_DIR=$(DBT_PROJECT_DIR) DBT_PROFILES_DIR=$(DBT_PROFILES_DIR) DUCKDB_PATH=$(DUCKDB_PATH) \
		$(BIN)/python -m pipeline.slim_ci $(SLIM_CI_ARGS)

# dbt Cloud's scheduled jobs as Dagster schedules (pipeline/transformation/cloud_jobs.py), written to
# DBT_CLOUD_SCHEDULES_PATH: the account of the DBT_CLOUD_* settings (.env), or with DBT_ENGINE=cloud the local stand-in
# (start `make dev DBT_ENGINE=cloud` first).
DBT_CLOUD_SETTINGS := DBT_CLOUD_ACCOUNT_ID DBT_CLOUD_PROJECT_ID DBT_CLOUD_ENVIRONMENT_ID DBT_CLOUD_URL DBT_CLOUD_TOKEN \
	DBT_CLOUD_JOB_NAME DBT_CLOUD_SCHEDULES_PATH
dbt-cloud-import: install
	@$(foreach name,$(DBT_CLOUD_SETTINGS),$(if $($(name)),$(name)='$($(name))')) $(DBT_CLOUD_ENV) \
		$(BIN)/python -m pipeline.transformation.cloud_jobs $(IMPORT_ARGS)

clean:
	rm -rf .data .dagster_home $(DBT_PROJECT_DIR)/target $(DBT_PROJECT_DIR)/logs
