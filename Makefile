# Two entry points: `make run` (the worker stack on this machine, with a job through it)
# and `make test` (every test). Both install what is missing first.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)

# The locks pin every package, its dependencies included, with their hashes: requirements.lock
# is what the image installs, requirements-dev.lock adds the tools for tests and lint (same
# versions for what both hold). `make lock` regenerates both after requirements*.txt change.
LOCK := uv pip compile --generate-hashes --python-version 3.11 --python-platform linux

.PHONY: install system-deps lock run test lint format bench clean image

install: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.lock
	@echo "[make] installing the locked Python packages into $(VENV) (the first time takes a minute or two)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --require-hashes --no-deps --disable-pip-version-check -r requirements-dev.lock
	$(PY) -m pip check
	touch $@

lock: install
	$(LOCK) requirements.txt -o requirements.lock >/dev/null
	$(LOCK) requirements-dev.txt -c requirements.lock -o requirements-dev.lock >/dev/null

# promtool and prometheus come from Debian's `prometheus` package, the Pushgateway from `prometheus-pushgateway`;
# podman, runc and mmdebstrap build and run the image in the container tests; fuse3, libfuse3-dev, gcc
# and pkg-config build and mount the emulated network volume (bench/netvol/netvol.c).
system-deps:
	@command -v promtool >/dev/null && command -v prometheus-pushgateway >/dev/null \
		&& command -v podman >/dev/null && command -v runc >/dev/null && command -v mmdebstrap >/dev/null \
		&& command -v fusermount3 >/dev/null && command -v gcc >/dev/null \
		&& pkg-config --exists fuse3 2>/dev/null || scripts/install-system-deps

# The worker's image, with podman or docker (whichever is installed): `make image` on the Dockerfile's CUDA
# base, `make image BASE_IMAGE=debian12` on a Debian 12 base made here (for machines that cannot pull it).
BASE_IMAGE ?=
IMAGE_TAG  ?= comfy-worker:dev
image:
	BASE_IMAGE=$(BASE_IMAGE) scripts/image build $(IMAGE_TAG)

# @: the last line `make run` prints is the stack's own (why it stopped).
run: install
	@scripts/run-local

test: install system-deps lint
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/shellcheck services/* bin/* scripts/run-local scripts/install-system-deps scripts/image scripts/podman/oci-runtime .ci/run
	$(VENV)/bin/hadolint Dockerfile

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: install system-deps
	$(PY) bench/run_all.py

clean:
	rm -rf .run .pytest_cache
