PY ?= python3.11
VENV ?= .venv
BIN = $(VENV)/bin
LATEST ?= .venv-latest
LOCK = requirements/lock.txt

.PHONY: setup test lint train lock test-latest
# Installs exactly what CI tested: every package pinned with its hash in $(LOCK).
setup:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q --require-hashes -r $(LOCK)
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements/nodeps.txt
	$(BIN)/pip install -q --no-deps -e .

test:
	$(BIN)/ruff check instaseg tests benchmarks notebooks
	$(BIN)/pytest

train:
	$(BIN)/instaseg train

# Adds what pyproject.toml's ranges newly need to the lock, keeping every existing pin
# (run with PIP_COMPILE_ARGS=-U to move all pins to the newest allowed versions).
lock:
	$(BIN)/pip install -q pip-tools
	$(BIN)/pip-compile -q --extra dev --extra pipeline --extra points --extra video --extra app --generate-hashes --strip-extras --allow-unsafe $(PIP_COMPILE_ARGS) -o $(LOCK) pyproject.toml

# The newest versions the ranges allow, in a separate venv: shows drift without touching main's set-up.
test-latest:
	rm -rf $(LATEST)
	$(PY) -m venv $(LATEST)
	$(LATEST)/bin/pip install -q -U pip
	$(LATEST)/bin/pip install -q -U -e ".[dev,pipeline,points,video,app]"
	$(LATEST)/bin/pip install -q --no-deps panopticapi-lite
	$(LATEST)/bin/ruff check instaseg tests benchmarks notebooks
	$(LATEST)/bin/pytest
