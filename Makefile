# Two commands on a fresh machine: `make run` and `make test`. Everything installs from
# Pipfile.lock into ./.venv; Chromium for the browser tests comes from Debian's packages.
export PIPENV_VENV_IN_PROJECT := 1
export PIPENV_IGNORE_VIRTUALENVS := 1
export PIPENV_NOSPIN := 1
export PIPENV_YES := 1
export TF_CPP_MIN_LOG_LEVEL := 3

PYTHON ?= python3
PIPENV := $(PYTHON) -m pipenv
VENV := .venv
BIN := $(VENV)/bin
MODEL ?= model/model.h5
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help install install-dev run serve test test-studies db-upgrade lint format demo-model \
	browser bench clean

help:
	@echo "make run    install, build the demo model if model/model.h5 is missing, serve on :$${PORT:-8000}"
	@echo "make test   install (with dev tools and Chromium), run ruff and every test"
	@echo "make bench  run the benchmarks in bench/"
	@echo "make test-studies  the study-store tests only, on SQLite and a throwaway PostgreSQL"

pipenv:
	@$(PIPENV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet pipenv

$(BIN)/.installed-run: Pipfile.lock | pipenv
	$(PIPENV) sync
	@touch $@

$(BIN)/.installed-dev: Pipfile.lock | pipenv
	$(PIPENV) sync --dev
	@touch $@ $(BIN)/.installed-run

install: $(BIN)/.installed-run
install-dev: $(BIN)/.installed-dev

$(MODEL): | install
	$(BIN)/chestx demo-model --out $(dir $(MODEL))

demo-model: install
	$(BIN)/chestx demo-model --out $(dir $(MODEL))

run: install $(MODEL) serve

serve:
	CHESTX_MODEL=$(MODEL) $(BIN)/gunicorn --config gunicorn.conf.py app:app

browser:
	@[ -x $(CHROMIUM) ] || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# scripts/postgres-test.sh installs Debian's postgresql if missing, starts a throwaway server on
# a Unix socket in a temporary folder, exports CHESTX_TEST_POSTGRES_URL, runs the command and
# stops the server afterwards, even when tests fail. Without PostgreSQL its tests skip loudly.
test: install-dev browser lint
	bash scripts/postgres-test.sh $(BIN)/pytest

# The study store alone, on SQLite and PostgreSQL.
test-studies: install-dev browser
	bash scripts/postgres-test.sh $(BIN)/pytest tests/web/test_web_studies.py \
		tests/web/test_web_studies_server.py

# Migrations also run at every start-up; this applies them without starting the server.
db-upgrade: install
	$(BIN)/python -m chestx.web.db upgrade

bench: install-dev
	@for script in bench/*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf .cache reports test-artifacts .pytest_cache .ruff_cache
