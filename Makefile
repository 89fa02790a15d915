# Two entry points: `make run` (the worker stack on this machine, with a job through it)
# and `make test` (every test). Both install what is missing first.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install system-deps run test lint format bench clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# promtool and prometheus come from Debian's `prometheus` package, the Pushgateway from `prometheus-pushgateway`.
system-deps:
	@command -v promtool >/dev/null && command -v prometheus-pushgateway >/dev/null || scripts/install-system-deps

run: install
	scripts/run-local

test: install system-deps lint
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/shellcheck services/* scripts/run-local scripts/install-system-deps .ci/run
	$(VENV)/bin/hadolint Dockerfile

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install system-deps
	$(PY) bench/run_all.py

clean:
	rm -rf .run .pytest_cache
