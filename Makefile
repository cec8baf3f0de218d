# prism developer tasks. `make install` then `make test` is all a new machine needs.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTEST_ARGS ?=

.PHONY: install test lint typecheck format bench clean db

# compileall as a wheel install does: with PYTHONDONTWRITEBYTECODE set, every command would otherwise
# compile prism's modules from source (~20 ms CPU per `prism send`). A stale .pyc is ignored.
install: $(PY)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	$(PY) -m prism.buildinfo
	$(PY) -m compileall -q prism

$(PY):
	python3 -m venv $(VENV)

# Types and lint first: they take seconds, and a test run must not hide a type error.
test: typecheck lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint:
	$(VENV)/bin/ruff check prism tests bench
	$(VENV)/bin/ruff format --check prism tests bench

typecheck:
	$(VENV)/bin/mypy

format:
	$(VENV)/bin/ruff format prism tests bench
	$(VENV)/bin/ruff check --fix prism tests bench

# Create the reflector database and user on a local MySQL/MariaDB and load schema.sql
# (settings: see scripts/create-db.sh, e.g. `make db DB_PASSWORD=secret`).
db:
	scripts/create-db.sh

bench:
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
